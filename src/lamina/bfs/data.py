"""BFS training samples: a background, a box, a caption, and the layer (with its effects) drawn there.

A :class:`BFSSample` holds, at the training resolution (float32, channel-last, values in [0, 1]):
the background ``B`` ``[H, W, 3]``; the foreground layer ``F`` ``[H, W, 4]`` in straight RGBA, whose
alpha is the object's over its shadows and reflections, ``a + e (1 - a)``; the composite
``C = F over B``; the region ``box`` (``x0, y0, x1, y1``, exclusive end) and the ``caption``.
Stage-2 samples ("unlayered composites") have ``foreground=None``: only ``C``, ``B``, box and caption.

Sources: procedural scenes (:func:`synth_sample`; in ``multi`` samples instance ``k``'s background
already holds instances ``< k``, back to front), unlayered composites (:func:`composite_sample`),
and a user's JSONL manifest (:class:`Manifest`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LaminaError
from .config import BFSTrainConfig

#: Seeds of the second scene that lends a stage-2 sample its background.
BACKGROUND_SEED_OFFSET = 7_919


@dataclass
class BFSSample:
    """One training sample (see the module docstring for shapes and ranges)."""

    background: np.ndarray  # [H, W, 3]
    composite: np.ndarray  # [H, W, 3]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive end), inside the canvas
    caption: str
    foreground: np.ndarray | None = None  # [H, W, 4] straight RGBA; None for unlayered composites

    @property
    def layered(self) -> bool:
        return self.foreground is not None


def box_mask(box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """``[H, W]`` float32 mask: 1 inside ``box`` (exclusive end), 0 outside."""
    mask = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1.0
    return mask


def grow_box(box: tuple[int, int, int, int], rng: np.random.Generator, grow: tuple[float, float], jitter: float,
             width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown by a random share of its size in ``grow`` and each side moved by up to ``jitter`` of it.

    The result is clipped to the canvas and keeps at least one pixel.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    g = rng.uniform(*grow) * 0.5
    j = rng.uniform(-jitter, jitter, 4)
    x0, x1 = x0 - bw * (g - j[0]), x1 + bw * (g + j[1])
    y0, y1 = y0 - bh * (g - j[2]), y1 + bh * (g + j[3])
    nx0, ny0 = min(max(int(np.floor(x0)), 0), width - 1), min(max(int(np.floor(y0)), 0), height - 1)
    nx1, ny1 = max(min(int(np.ceil(x1)), width), nx0 + 1), max(min(int(np.ceil(y1)), height), ny0 + 1)
    return nx0, ny0, nx1, ny1


def over(foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight RGBA ``[H, W, 4]`` over opaque RGB ``[H, W, 3]``: ``B + a (F - B)`` (float32)."""
    a = foreground[:, :, 3:]
    return (background + a * (foreground[:, :, :3] - background)).astype(np.float32)


def _scene_config(config: BFSTrainConfig, preset: str):
    from ..data import SCENE_PRESETS

    if preset not in SCENE_PRESETS:
        raise LaminaError(f"unknown scene preset {preset!r}; choose from {', '.join(SCENE_PRESETS)}")
    scale = config.object_scale if preset != "multi" else tuple(s * 0.7 for s in config.object_scale)
    return replace(SCENE_PRESETS[preset], size=config.resolution, scale=scale)


def synth_sample(seed: int, config: BFSTrainConfig, *, multi: bool | None = None) -> BFSSample:
    """One layered procedural sample (exact ground truth), fully determined by ``seed``.

    With ``multi`` (default: with probability ``config.p_multi``) the scene holds 2-4 objects and
    one instance ``k`` is the target: its background is the scene's background with instances
    ``< k`` composited on it, so backgrounds already hold objects and their shadows. A single-object
    sample is drawn, with probability ``config.p_photo``, over a crop of a photograph of
    ``config.photos`` instead (the object's shadows and reflections, in its layer, then fall on the photo).
    """
    from ..data import generate_scene

    rng = np.random.default_rng([int(seed), 1])
    if multi is None:
        multi = bool(rng.random() < config.p_multi)
    scene = generate_scene(int(seed), _scene_config(config, "multi" if multi else config.scene_preset))
    size = config.resolution
    k = int(rng.integers(len(scene.instances)))
    background = np.ascontiguousarray(scene.background, dtype=np.float32)
    for inst in scene.instances[:k]:
        background = over(inst.canvas(size, size), background)
    inst = scene.instances[k]
    foreground = inst.canvas(size, size)
    box = grow_box(inst.box, rng, config.box_grow, config.box_jitter, size, size)
    caption = "" if rng.random() < config.p_drop_caption else inst.caption
    if not multi and config.p_photo > 0:  # its own generator: without photos the samples stay as they were
        photo_rng = np.random.default_rng([int(seed), 4])
        if photo_rng.random() < config.p_photo:
            from ..data.photo_scenes import PhotoFolder

            background = PhotoFolder.of(config.photos).crop(photo_rng, size)
    return BFSSample(background, over(foreground, background), box, caption, foreground)


def _photo_backgrounds() -> list[np.ndarray]:
    """scikit-image's sample photos (RGB float32 in [0, 1]) when scikit-image is installed, else ``[]``."""
    try:
        from skimage import data as skdata
    except ImportError:
        return []
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception:  # noqa: BLE001 - a missing optional sample file: use the others
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            photos.append(image[:, :, :3].astype(np.float32) / 255.0)
    return photos


def _random_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of ``photo`` (at least half its short side) resized to ``size``."""
    import torch
    import torch.nn.functional as nnf

    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(photo[y:y + side, x:x + side].transpose(2, 0, 1)))[None]
    out = nnf.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return np.ascontiguousarray(out.clamp(0, 1).permute(1, 2, 0).numpy())


def composite_sample(seed: int, config: BFSTrainConfig, photos: list[np.ndarray] | None = None) -> BFSSample:
    """One stage-2 sample: an unlayered composite (no foreground), its background, box and caption.

    Stands in for the paper's "high-quality unlayered composite images": here a procedural object
    (with its effects) over a scikit-image photo crop when ``photos`` are given, else over another
    procedural scene's composite (more varied than the stage-1 backgrounds). Only the composite
    supervises training; the layer is dropped.
    """
    from ..data import generate_scene

    rng = np.random.default_rng([int(seed), 2])
    layered = synth_sample(seed, config, multi=False)
    size = config.resolution
    if photos:
        background = _random_crop(photos[int(rng.integers(len(photos)))], rng, size)
    else:
        background = np.ascontiguousarray(
            generate_scene(int(seed) + BACKGROUND_SEED_OFFSET, _scene_config(config, "multi")).composite)
    return BFSSample(background, over(layered.foreground, background), layered.box, layered.caption, None)


# ------------------------------------------------------------------------------- manifest
#: Keys of a manifest line: stage 1 (layered) and stage 2 (unlayered composites).
LAYERED_KEYS = ("background", "foreground_rgba", "box", "caption")
COMPOSITE_KEYS = ("composite", "background", "box", "caption")


class Manifest:
    """A user's JSONL manifest: one JSON object per line, image paths relative to the manifest's folder.

    Layered lines (stage ``layered``): ``{"background", "foreground_rgba", "box", "caption"}``; unlayered
    lines (stage ``composite``): ``{"composite", "background", "box", "caption"}``. ``box`` is
    ``[x0, y0, x1, y1]`` in the images' pixels (exclusive end). Images of one line must share a size;
    they are resized (aspect not kept) to ``resolution`` with the box scaled alike.
    """

    def __init__(self, path: str | Path, resolution: int, layered: bool) -> None:
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / "manifest.jsonl"
        if not path.is_file():
            raise LaminaError(f"{path}: no such manifest (a folder needs a manifest.jsonl)")
        self.path, self.root, self.resolution, self.layered = path, path.parent, int(resolution), layered
        keys = LAYERED_KEYS if layered else COMPOSITE_KEYS
        self.items: list[dict[str, Any]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LaminaError(f"{path}:{number}: not JSON ({exc.msg})") from None
            missing = [k for k in keys if not isinstance(item, dict) or k not in item]
            if missing:
                kind = "layered" if layered else "composite"
                raise LaminaError(f"{path}:{number}: missing key(s) {', '.join(missing)} for the {kind} stage "
                                  f"(a line needs {', '.join(keys)})")
            box = item["box"]
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                    and box[0] < box[2] and box[1] < box[3]):
                raise LaminaError(f"{path}:{number}: box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, "
                                  f"got {box!r}")
            item["_line"] = number
            self.items.append(item)
        if not self.items:
            raise LaminaError(f"{path}: the manifest has no samples")

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, item: dict[str, Any], key: str, channels: int) -> np.ndarray:
        from ..io import read_image

        file = self.root / str(item[key])
        if not file.is_file():
            raise LaminaError(f"{self.path}:{item['_line']}: {key} {file}: no such file")
        image = np.asarray(read_image(file), dtype=np.float32)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        if channels == 4 and image.shape[2] != 4:
            raise LaminaError(f"{self.path}:{item['_line']}: foreground_rgba {file} has no alpha channel")
        if channels == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        return image

    def sample(self, index: int, rng: np.random.Generator, config: BFSTrainConfig) -> BFSSample:
        """Item ``index`` (modulo the length) at the training resolution, box jittered, caption maybe dropped."""
        import torch
        import torch.nn.functional as nnf

        item = self.items[index % len(self.items)]
        background = self._read(item, "background", 3)
        other = self._read(item, "foreground_rgba" if self.layered else "composite", 4 if self.layered else 3)
        if other.shape[:2] != background.shape[:2]:
            key = "foreground_rgba" if self.layered else "composite"
            raise LaminaError(f"{self.path}:{item['_line']}: {key} is {other.shape[1]}x{other.shape[0]} but the "
                              f"background is {background.shape[1]}x{background.shape[0]}")
        h, w = background.shape[:2]
        size = self.resolution

        def resize(image: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
            if t.shape[1] == 4:  # premultiplied resize, back to straight colour
                t = torch.cat([t[:, :3] * t[:, 3:], t[:, 3:]], 1)
            t = nnf.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            t = t.clamp(0, 1)
            if t.shape[1] == 4:
                t = torch.cat([(t[:, :3] / t[:, 3:].clamp_min(1e-6)).clamp(0, 1) * (t[:, 3:] > 0), t[:, 3:]], 1)
            return np.ascontiguousarray(t[0].permute(1, 2, 0).numpy())

        bx = item["box"]
        scaled = (bx[0] * size / w, bx[1] * size / h, bx[2] * size / w, bx[3] * size / h)
        box = grow_box(scaled, rng, (0.0, 0.0), config.box_jitter, size, size)
        caption = "" if rng.random() < config.p_drop_caption else str(item["caption"])
        bg = resize(background)
        if self.layered:
            fg = resize(other)
            return BFSSample(bg, over(fg, bg), box, caption, fg)
        return BFSSample(bg, resize(other), box, caption, None)


def make_source(config: BFSTrainConfig) -> Callable[[int], BFSSample]:
    """``seed -> BFSSample`` for ``config.data`` and ``config.stage`` (the vae stage uses layered samples)."""
    layered = config.stage != "composite"
    if config.data == "synth":
        if layered:
            if config.p_photo > 0:
                from ..data.photo_scenes import PhotoFolder

                PhotoFolder.of(config.photos)  # an unreadable folder fails here, before the run starts
            return lambda seed: synth_sample(seed, config)
        photos = _photo_backgrounds() if config.composite_backgrounds == "auto" else []
        return lambda seed: composite_sample(seed, config, photos)
    manifest = Manifest(config.data, config.resolution, layered)
    return lambda seed: manifest.sample(seed, np.random.default_rng([int(seed), 3]), config)


def collate(samples: list[BFSSample]) -> dict[str, Any]:
    """Stack samples into channel-first torch tensors in [0, 1]: ``background``/``composite`` ``[N, 3, H, W]``,
    ``mask`` ``[N, 1, H, W]`` (1 inside the box), ``foreground`` ``[N, 4, H, W]`` (when every sample is
    layered), ``box`` int64 ``[N, 4]`` and ``caption`` (a list of str)."""
    import torch

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays])).float()

    h, w = samples[0].background.shape[:2]
    out: dict[str, Any] = {
        "background": stack([s.background for s in samples]),
        "composite": stack([s.composite for s in samples]),
        "mask": stack([box_mask(s.box, h, w)[:, :, None] for s in samples]),
        "box": torch.tensor([s.box for s in samples], dtype=torch.int64),
        "caption": [s.caption for s in samples],
    }
    if all(s.layered for s in samples):
        out["foreground"] = stack([s.foreground for s in samples])
    return out
