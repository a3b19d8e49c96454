"""Layered scenes on real photographs, with exact ground truth.

A scene (:func:`photo_scene`) is a random square crop of one photograph (the background) under
a procedural object of the ``default`` scene preset (soft and furry edges, glassy parts, cast
and drop shadows, reflections: exact alpha) whose colour is a crop of *another* photograph
(real texture inside an exact shape), in a share of the scenes with a thin anti-aliased handle
(a ring, :func:`handle_alpha`) on its side. The object is given as its box grown by ``pad`` of
its size on each side (a user's loose box).

``benchmarks/bench_photos.py`` scores decomposers on these scenes over held-out photographs;
the cut-out refiner (:mod:`lamina.layeringdiff.cutout`) is trained on them over *other*
photographs, read by :class:`PhotoFolder`. All arrays are ``float32`` in ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Share of the background photograph's short side that a scene's background crop covers.
BACKGROUND_SHARE = (0.35, 0.8)
#: Share of the texture photograph's short side that the object's texture crop covers.
TEXTURE_SHARE = (0.2, 0.6)
#: A handle's radius as a share of the object's height, and its thickness in px at 256 px.
HANDLE_RADIUS = (0.18, 0.3)
HANDLE_THICKNESS_256 = (1.5, 3.0)


def square_crop(rng: np.random.Generator, photo: np.ndarray, size: int | tuple[int, int],
                share: tuple[float, float]) -> np.ndarray:
    """A random square crop (``share`` of the short side) of ``photo`` ``[H, W, 3]`` resized to ``size``.

    ``size`` is ``(h, w)`` or one side; the result is ``float32`` ``[h, w, 3]``.
    """
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    side = max(8, int(min(photo.shape[:2]) * rng.uniform(*share)))
    y, x = rng.integers(photo.shape[0] - side + 1), rng.integers(photo.shape[1] - side + 1)
    crop = photo[y:y + side, x:x + side]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if side > max(h, w) else cv2.INTER_LINEAR)


def handle_alpha(object_alpha: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """An anti-aliased ring ``[H, W]`` in ``[0, 1]`` (a cup's handle) on the left or right side of the object."""
    rows, cols = np.nonzero(object_alpha > 0.5)
    y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
    height = y1 - y0 + 1
    radius = max(3.0, height * rng.uniform(*HANDLE_RADIUS))
    thickness = size / 256.0 * rng.uniform(*HANDLE_THICKNESS_256)
    cy = y0 + height * rng.uniform(0.35, 0.6)
    right = bool(rng.integers(2))
    row = object_alpha[int(cy)] > 0.5
    edge = (np.nonzero(row)[0].max() if right else np.nonzero(row)[0].min()) if row.any() else (x1 if right else x0)
    cx = edge + (0.6 * radius if right else -0.6 * radius)
    yy, xx = np.mgrid[0:object_alpha.shape[0], 0:object_alpha.shape[1]]
    distance = np.abs(np.hypot(yy - cy, xx - cx) - radius)
    return np.clip(thickness / 2.0 + 0.5 - distance, 0.0, 1.0).astype(np.float32)


def photo_scene(seed: int, size: int, photos: list[np.ndarray], *, pad: float = 0.04,
                p_handle: float = 0.5) -> dict[str, Any]:
    """One composite over a real photograph with exact ground truth.

    Args:
        seed: the scene's seed (the object, the crops, the handle).
        size: the scene's side in px.
        photos: at least two photographs ``[H, W, 3]`` in ``[0, 1]`` (background and texture differ).
        pad: the box is the object's box grown by this share of its larger side on each side.
        p_handle: probability of a handle.

    Returns:
        ``{"truth": LayeredImage, "composite": [S, S, 3], "box": (x0, y0, x1, y1), "object_alpha": [S, S],
        "layer": [S, S, 4] (the object over its effects, straight alpha), "background": [S, S, 3]}``.
    """
    from ..layers import LayeredImage
    from .config import SCENE_PRESETS
    from .scenes import generate_scene

    rng = np.random.default_rng([seed, 21])
    scene = generate_scene(seed, SCENE_PRESETS["default"].with_size(size))
    back, texture = rng.choice(len(photos), size=2, replace=False)
    background = square_crop(rng, photos[back], size, BACKGROUND_SHARE)
    layer = scene.foreground.copy()
    a_obj, total = scene.object_alpha.copy(), layer[:, :, 3].copy()
    if rng.uniform() < p_handle:
        ring = handle_alpha(a_obj, rng, size)
        a_obj = np.maximum(a_obj, ring)
        total = a_obj + scene.effects_alpha * (1.0 - a_obj)
    rows, cols = np.nonzero(a_obj > 0)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    patch = np.zeros_like(layer[:, :, :3])
    patch[y0:y1, x0:x1] = square_crop(rng, photos[texture], (y1 - y0, x1 - x0), TEXTURE_SHARE)
    # The object's share of the layer's opacity takes the photo's colour; effects keep theirs.
    share = np.where(total > 0, a_obj / np.maximum(total, 1e-6), 0.0)[:, :, None]
    layer[:, :, :3] = (1.0 - share) * layer[:, :, :3] + share * patch
    layer[:, :, 3] = total
    truth = LayeredImage.from_foreground(background, layer)
    margin = max(2, round(pad * max(y1 - y0, x1 - x0)))
    box = (max(0, x0 - margin), max(0, y0 - margin), min(size, x1 + margin), min(size, y1 + margin))
    return {"truth": truth, "composite": truth.composite()[:, :, :3], "box": box, "object_alpha": a_obj,
            "layer": layer, "background": background}


class PhotoFolder:
    """Photographs of a folder, decoded once (short side at most :attr:`MAX_SIDE`), as random square crops.

    FBDD's real backgrounds (``real_backgrounds``) and the cut-out refiner's scenes (``photos``) read
    their photographs with it. :meth:`of` keeps one instance per folder per process. Files that are
    not images are skipped; a folder without any raises :class:`~lamina.errors.ConfigError`.
    """

    #: Photographs are decoded (JPEG draft mode) and kept at about this short side.
    MAX_SIDE = 512
    #: A crop's side, as a share of the photograph's short side (then resized to the training resolution).
    CROP_SHARE = (0.2, 0.8)
    _cache: dict[str, PhotoFolder] = {}

    def __init__(self, folder: str | Path) -> None:
        from PIL import Image

        from .datasets import IMAGE_EXTENSIONS

        self.photos: list[np.ndarray] = []
        for path in sorted(Path(folder).expanduser().iterdir()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                with Image.open(path) as image:
                    image.draft("RGB", (self.MAX_SIDE, self.MAX_SIDE))
                    image = image.convert("RGB")
                    scale = self.MAX_SIDE / min(image.size)
                    if scale < 1.0:
                        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                             Image.LANCZOS)
                    self.photos.append(np.asarray(image, np.float32) / 255.0)
            except OSError:
                continue
        if not self.photos:
            raise ConfigError(f"{str(folder)!r}: no readable photographs in it")

    @classmethod
    def of(cls, folder: str | Path) -> PhotoFolder:
        """The (cached) photographs of ``folder``."""
        key = str(Path(folder).expanduser().resolve())
        if key not in cls._cache:
            cls._cache[key] = cls(key)
        return cls._cache[key]

    def crop(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random square crop of a random photograph: ``[size, size, 3]`` ``float32``, mirrored at random."""
        import torch
        import torch.nn.functional as nnf

        photo = self.photos[int(rng.integers(len(self.photos)))]
        side = max(2, int(min(photo.shape[:2]) * rng.uniform(*self.CROP_SHARE)))
        y, x = int(rng.integers(photo.shape[0] - side + 1)), int(rng.integers(photo.shape[1] - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(photo[y:y + side, x:x + side])).permute(2, 0, 1)[None]
        crop = nnf.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = crop[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy()
        return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out, dtype=np.float32)
