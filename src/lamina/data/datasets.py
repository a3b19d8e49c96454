"""Torch datasets: procedural scenes on the fly, and loaders for user image folders.

Every dataset returns a dict of channel-first ``float32`` tensors in [0, 1]. The layered
ones (:class:`ProceduralScenes`, :class:`LayeredFolder`) share the keys ``composite``
``[3, H, W]``, ``foreground`` ``[4, H, W]``, ``background`` ``[3, H, W]``,
``object_alpha`` / ``effects_alpha`` ``[1, H, W]``, ``box`` (int64 ``[4]``, x0 y0 x1 y1,
exclusive end), ``caption`` and ``index``; :class:`ImageFolder` gives ``composite`` only
(plus ``path`` and ``index``), so the same training code can read real photos.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import InputFileError
from .config import DEFAULT_CONFIG, SceneConfig
from .scenes import Scene, generate_scene, scene_seed

#: File name suffixes scanned for images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

Size = int | tuple[int, int]


def _wh(size: Size) -> tuple[int, int]:
    """``(width, height)`` of an int or ``(width, height)`` size."""
    w, h = (size, size) if isinstance(size, int) else size
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(w), int(h)


class ProceduralScenes(Dataset):
    """``length`` procedural scenes generated on the fly: item ``i`` is
    ``generate_scene(scene_seed(seed, i), config)`` as tensors (see the module docstring)."""

    def __init__(self, config: SceneConfig = DEFAULT_CONFIG, length: int = 10_000, seed: int = 0) -> None:
        self.config, self.length, self.seed = config, int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        """The :class:`Scene` behind item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        return generate_scene(scene_seed(self.seed, index), self.config)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        return {**scene.to_tensors(), "caption": scene.caption, "index": index}


# ---------------------------------------------------------------------- user files
class _ImageFiles:
    """Image files found under ``root``, validated up front; unreadable ones are skipped,
    reported with a warning naming the file and listed in ``skipped``."""

    def __init__(self, root: str | os.PathLike[str], extensions: Sequence[str], validate: bool, what: str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputFileError(f"{self.root}: no such folder ({what})")
        suffixes = {e.lower() for e in extensions}
        found = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        self.skipped: list[tuple[Path, str]] = []
        self._bad: set[Path] = set()
        self.files = [p for p in found if not validate or self._valid(p)]
        if not self.files:
            raise InputFileError(f"{self.root}: no readable images ({what}; looked for {', '.join(sorted(suffixes))})")

    def _valid(self, path: Path) -> bool:
        """Cheap check (header and chunk structure, no decoding); full decoding errors are caught on access."""
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for broken files
            self.skip(path, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        self._bad.add(path)
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)

    def read(self, index: int, reader: Callable[[Path], np.ndarray]) -> tuple[Path, np.ndarray]:
        """Read file ``index``; an unreadable one is skipped for the next readable file."""
        for k in range(len(self.files)):
            path = self.files[(index + k) % len(self.files)]
            if path in self._bad:
                continue
            try:
                return path, reader(path)
            except InputFileError as exc:
                self.skip(path, str(exc))
        raise InputFileError(f"{self.root}: no readable images left")


def _read_rgb(path: Path) -> np.ndarray:
    from ..io import read_rgb  # lamina.io (and psd-tools) load only when files are read

    return read_rgb(path)


def _read_rgba(path: Path) -> np.ndarray:
    from ..io import read_rgba

    return read_rgba(path)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _resize(chw: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Antialiased bicubic resize of ``[C, H, W]`` to ``[C, h, w]``, clamped to [0, 1]."""
    if chw.shape[1:] == (h, w):
        return chw
    out = F.interpolate(chw[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def resize_crop(chw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale ``[C, H, W]`` to cover ``width x height`` and centre-crop to exactly that."""
    _, h, w = chw.shape
    scale = max(width / w, height / h)
    rw, rh = max(width, round(w * scale)), max(height, round(h * scale))
    chw = _resize(chw, rw, rh)
    x0, y0 = (rw - width) // 2, (rh - height) // 2
    return chw[:, y0:y0 + height, x0:x0 + width].contiguous()


class ImageFolder(Dataset):
    """Unlabelled images under ``root`` (recursively), resized to cover ``size`` and centre-cropped.

    Item: ``composite`` ``[3, H, W]`` in [0, 1], ``path`` and ``index``. With ``flip``, each
    item is mirrored horizontally or not, at random but fixed by ``(seed, index)``.
    Unreadable files (not images, truncated, corrupt) are skipped with a warning that
    names them and are listed in :attr:`skipped` as ``(path, reason)``; an item whose file
    fails to decode is replaced by the next readable file.

    Args:
        validate: check every file's header when scanning (cheap); otherwise bad files are
            only found when read.
    """

    def __init__(self, root: str | os.PathLike[str], size: Size, *, flip: bool = False, seed: int = 0,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, validate: bool = True) -> None:
        self.width, self.height = _wh(size)
        self.flip, self.seed = flip, int(seed)
        self._files = _ImageFiles(root, extensions, validate, "images")

    @property
    def files(self) -> list[Path]:
        return self._files.files

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self._files.skipped

    def __len__(self) -> int:
        return len(self._files.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, image = self._files.read(index, _read_rgb)
        out = resize_crop(_to_chw(image), self.width, self.height)
        if self.flip and np.random.default_rng([self.seed, index]).random() < 0.5:
            out = out.flip(-1)
        return {"composite": out, "path": str(path), "index": index}


class LayeredFolder(Dataset):
    """Foregrounds (RGBA images in ``root/foregrounds``) composited over backgrounds (any
    images in ``root/backgrounds``) at a random scale and place, fixed by ``(seed, index)``.

    Item ``i`` uses foreground ``i % len(foregrounds)`` (trimmed to its visible pixels and
    scaled so its longer side spans ``scale`` of the canvas's) and a random background
    (resized to cover the canvas, centre-cropped, mirrored at random). Keys as for
    :class:`ProceduralScenes`; ``effects_alpha`` is zero and ``caption`` is the foreground's
    file name with ``_``/``-`` read as spaces.

    Args:
        length: number of items (default: one per foreground).
    """

    def __init__(self, root: str | os.PathLike[str], size: Size, *, seed: int = 0, length: int | None = None,
                 scale: tuple[float, float] = (0.3, 0.8), extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 validate: bool = True) -> None:
        root = Path(root)
        self.width, self.height = _wh(size)
        self.seed, self.scale = int(seed), scale
        self.foregrounds = _ImageFiles(root / "foregrounds", extensions, validate, "foreground RGBA images")
        self.backgrounds = _ImageFiles(root / "backgrounds", extensions, validate, "background images")
        self.length = len(self.foregrounds.files) if length is None else int(length)

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self.foregrounds.skipped + self.backgrounds.skipped

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        w, h = self.width, self.height
        rng = np.random.default_rng([self.seed, index])
        _, bg = self.backgrounds.read(int(rng.integers(len(self.backgrounds.files))), _read_rgb)
        background = resize_crop(_to_chw(bg), w, h)
        if rng.random() < 0.5:
            background = background.flip(-1).contiguous()
        path, fg = self.foregrounds.read(index % len(self.foregrounds.files), _read_rgba)
        layer = _trim(_to_chw(fg))
        fh, fw = layer.shape[1:]
        s = rng.uniform(*self.scale) * min(w / fw, h / fh)
        lw, lh = max(1, min(w, round(fw * s))), max(1, min(h, round(fh * s)))
        layer = _resize_rgba(layer, lw, lh)
        x0, y0 = int(rng.integers(w - lw + 1)), int(rng.integers(h - lh + 1))
        foreground = torch.zeros(4, h, w)
        foreground[:, y0:y0 + lh, x0:x0 + lw] = layer
        composite = background.clone().lerp_(foreground[:3], foreground[3:])  # as LayeredImage.composite
        alpha = foreground[3:]
        ys, xs = torch.nonzero(alpha[0] > 0, as_tuple=True)
        box = (torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) if len(xs)
               else torch.tensor([x0, y0, x0 + 1, y0 + 1]))
        return {"composite": composite, "foreground": foreground, "background": background,
                "object_alpha": alpha.clone(), "effects_alpha": torch.zeros_like(alpha), "box": box.long(),
                "caption": path.stem.replace("_", " ").replace("-", " "), "index": index}


def _trim(rgba: torch.Tensor) -> torch.Tensor:
    """Crop ``[4, H, W]`` to the box of its visible (alpha > 0) pixels."""
    ys, xs = torch.nonzero(rgba[3] > 0, as_tuple=True)
    if len(xs) == 0:
        return rgba
    return rgba[:, int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1]


def _resize_rgba(rgba: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Resize straight RGBA through premultiplied colour (no dark fringes from transparent pixels)."""
    premultiplied = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])
    out = _resize(premultiplied, w, h)
    a = out[3:]
    rgb = torch.where(a > 0, out[:3] / a.clamp_min(1e-8), torch.zeros_like(out[:3])).clamp_(0.0, 1.0)
    return torch.cat([rgb, a])
