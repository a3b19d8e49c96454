"""Layered scenes on real photographs, with exact ground truth.

A scene (:func:`photo_scene`) is a random square crop of one photograph (the background) under
a procedural object of the ``default`` scene preset (soft and furry edges, glassy parts, cast
and drop shadows, reflections: exact alpha) whose colour is a crop of *another* photograph
(real texture inside an exact shape), in a share of the scenes with a thin anti-aliased handle
(a ring, :func:`handle_alpha`) on its side. The object is given as its box grown by ``pad`` of
its size on each side (a user's loose box).

An object scene (:func:`object_scene`) puts a *real* object instead: a cut-out with its true alpha
(an RGBA image of :class:`ObjectFolder`, e.g. the photographic stamps of Debian's
``tuxpaint-stamps-default``), scaled and placed at random, in a share of the scenes over a cast
shadow made from its own silhouette (:func:`silhouette_shadow`), which belongs to its layer.

``benchmarks/bench_photos.py`` scores decomposers on these scenes over held-out photographs;
the cut-out refiner (:mod:`lamina.layeringdiff.cutout`) is trained on them over *other*
photographs, read by :class:`PhotoFolder`. All arrays are ``float32`` in ``[0, 1]``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .effects import SHADOW_FADE

#: Share of the background photograph's short side that a scene's background crop covers.
BACKGROUND_SHARE = (0.35, 0.8)
#: Share of the texture photograph's short side that the object's texture crop covers.
TEXTURE_SHARE = (0.2, 0.6)
#: A handle's radius as a share of the object's height, and its thickness in px at 256 px.
HANDLE_RADIUS = (0.18, 0.3)
HANDLE_THICKNESS_256 = (1.5, 3.0)
#: A real object's larger side as a share of the scene's side, and its chance of being mirrored (:func:`object_scene`).
OBJECT_SHARE = (0.3, 0.7)
P_OBJECT_MIRROR = 0.5
#: Cast shadow of a real object (:func:`silhouette_shadow`): probability, peak alpha, length (its height's
#: share), lean (px sideways per px of height), penumbra (share of the object's height) and colour range.
P_OBJECT_SHADOW = 0.5
SHADOW_STRENGTH = (0.35, 0.75)
SHADOW_LENGTH = (0.12, 0.45)
SHADOW_LEAN = (-1.0, 1.0)
SHADOW_BLUR = (0.01, 0.05)
SHADOW_COLOUR = (0.0, 0.12)


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


def object_share(object_alpha: np.ndarray, total: np.ndarray) -> np.ndarray:
    """The object's share ``[H, W, 1]`` of a layer's opacity ``total`` ``[H, W]`` (0 where the layer is clear).

    The part of the layer's colour that is the object's rather than its effects' (the layer's alpha is
    ``object_alpha`` over the effects' alpha): what a recolouring of the object changes.
    """
    return np.where(total > 0, object_alpha / np.maximum(total, 1e-6), 0.0)[:, :, None]


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
    share = object_share(a_obj, total)
    layer[:, :, :3] = (1.0 - share) * layer[:, :, :3] + share * patch
    layer[:, :, 3] = total
    truth = LayeredImage.from_foreground(background, layer)
    margin = max(2, round(pad * max(y1 - y0, x1 - x0)))
    box = (max(0, x0 - margin), max(0, y0 - margin), min(size, x1 + margin), min(size, y1 + margin))
    return {"truth": truth, "composite": truth.composite()[:, :, :3], "box": box, "object_alpha": a_obj,
            "layer": layer, "background": background}


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgba`` ``[h, w, 4]`` (straight alpha) resized to ``[height, width, 4]``, straight alpha.

    The colour is resampled premultiplied, so an edge does not pick up the colour under alpha 0.
    """
    import cv2

    premultiplied = np.ascontiguousarray(np.dstack([rgba[:, :, :3] * rgba[:, :, 3:], rgba[:, :, 3]]))
    shrink = width < rgba.shape[1] or height < rgba.shape[0]
    small = cv2.resize(premultiplied, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.dstack([small[:, :, :3] / np.maximum(small[:, :, 3:], 1e-6), small[:, :, 3]]).astype(np.float32)


def silhouette_shadow(object_alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cast shadow ``[H, W]`` in ``[0, 1]`` of a silhouette ``[H, W]`` on the ground through its lowest row.

    A point at height ``h`` above the lowest row lands ``h * lean`` to the side and ``h * length`` up the
    image (the light behind the viewer, the shadow behind the object), blurred by a penumbra and faded
    towards its far end, as :func:`lamina.data.effects.cast_shadow` does for procedural shapes.
    """
    import cv2

    rows = np.nonzero((object_alpha > 0.5).any(axis=1))[0]
    if rows.size == 0:
        return np.zeros_like(object_alpha)
    top, base = float(rows.min()), float(rows.max()) + 1.0
    length, lean = rng.uniform(*SHADOW_LENGTH), rng.uniform(*SHADOW_LEAN)
    # x' = x + lean * (base - y), y' = base - length * (base - y)
    warp = np.float32([[1.0, -lean, lean * base], [0.0, length, base * (1.0 - length)]])
    h, w = object_alpha.shape
    shadow = cv2.warpAffine(object_alpha.astype(np.float32), warp, (w, h), flags=cv2.INTER_LINEAR)
    sigma = max(0.5, rng.uniform(*SHADOW_BLUR) * (base - top))
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigma)
    far = np.clip((base - np.arange(h, dtype=np.float32)) / max(length * (base - top), 1.0), 0.0, 1.0)
    return (shadow * rng.uniform(*SHADOW_STRENGTH) * (1.0 - SHADOW_FADE * far)[:, None]).astype(np.float32)


def object_scene(seed: int, size: int, photos: list[np.ndarray], objects: list[np.ndarray], *, pad: float = 0.04,
                 p_shadow: float = P_OBJECT_SHADOW) -> dict[str, Any]:
    """One composite of a real object (true alpha) over a real photograph, with exact ground truth.

    Args:
        seed: the scene's seed (the object, its size and place, the crop, the shadow).
        size: the scene's side in px.
        photos: photographs ``[H, W, 3]`` in ``[0, 1]`` (backgrounds).
        objects: cut-outs ``[h, w, 4]`` (straight alpha, cropped to the object: :attr:`ObjectFolder.objects`).
        pad: the box is the object's box grown by this share of its larger side on each side.
        p_shadow: probability of a cast shadow (:func:`silhouette_shadow`) in the object's layer.

    Returns:
        the keys of :func:`photo_scene`.
    """
    from ..layers import LayeredImage

    rng = np.random.default_rng([seed, 23])
    background = square_crop(rng, photos[int(rng.integers(len(photos)))], size, BACKGROUND_SHARE)
    cutout = objects[int(rng.integers(len(objects)))]
    if rng.random() < P_OBJECT_MIRROR:
        cutout = cutout[:, ::-1]
    scale = size * rng.uniform(*OBJECT_SHARE) / max(cutout.shape[:2])
    ow, oh = max(2, round(cutout.shape[1] * scale)), max(2, round(cutout.shape[0] * scale))
    small = resize_rgba(cutout, ow, oh)
    y, x = int(rng.integers(0, size - oh + 1)), int(rng.integers(0, size - ow + 1))
    a_obj = np.zeros((size, size), np.float32)
    colour = np.zeros((size, size, 3), np.float32)
    a_obj[y:y + oh, x:x + ow] = np.clip(small[:, :, 3], 0.0, 1.0)
    colour[y:y + oh, x:x + ow] = small[:, :, :3]
    effects = silhouette_shadow(a_obj, rng) if rng.random() < p_shadow else np.zeros_like(a_obj)
    shade = rng.uniform(*SHADOW_COLOUR, 3).astype(np.float32)
    total = a_obj + effects * (1.0 - a_obj)
    share = object_share(a_obj, total)
    layer = np.dstack([np.clip(share * colour + (1.0 - share) * shade, 0.0, 1.0), total]).astype(np.float32)
    truth = LayeredImage.from_foreground(background, layer)
    rows, cols = np.nonzero(a_obj > 0.5)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    margin = max(2, round(pad * max(y1 - y0, x1 - x0)))
    box = (max(0, x0 - margin), max(0, y0 - margin), min(size, x1 + margin), min(size, y1 + margin))
    return {"truth": truth, "composite": truth.composite()[:, :, :3], "box": box, "object_alpha": a_obj,
            "layer": layer, "background": background}


class ObjectFolder:
    """Cut-outs of real objects with their true alpha: the RGBA images under a folder (recursively).

    Each is cropped to its alpha's box and decoded once at a larger side of at most :attr:`MAX_SIDE`.
    Images without an alpha channel, with almost no transparent or almost no opaque pixels, or of
    one colour (a glyph) are skipped. ``split`` keeps a fixed share of the files by a hash of their
    name (:meth:`split_of`): ``"train"``, ``"validation"`` or ``"test"`` (``None``: all), so that
    a model and a benchmark can use the same folder without sharing an object.
    """

    MAX_SIDE = 384
    #: ``crc32(name) % 20`` ranges of each split.
    SPLITS = {"test": range(0, 3), "validation": range(3, 6), "train": range(6, 20)}
    #: Skipped: objects with fewer than this share of opaque pixels in their box, or fewer transparent
    #: pixels in the image, and objects whose colour varies less than this (standard deviation).
    MIN_OPAQUE, MIN_TRANSPARENT, MIN_COLOUR_STD = 0.15, 0.02, 0.04
    _cache: dict[tuple[str, str | None], ObjectFolder] = {}

    def __init__(self, folder: str | Path, split: str | None = None) -> None:
        from PIL import Image

        if split is not None and split not in self.SPLITS:
            raise ConfigError(f"object split must be one of {', '.join(self.SPLITS)}, got {split!r}")
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"{str(folder)!r}: not a folder of object cut-outs")
        self.objects: list[np.ndarray] = []
        self.names: list[str] = []
        files = sorted(Path(top) / name for top, _, names in os.walk(root, followlinks=True) for name in names)
        for path in files:
            if path.suffix.lower() not in (".png", ".webp", ".tif", ".tiff") or (
                    split is not None and self.split_of(path.name) != split):
                continue
            try:
                with Image.open(path) as image:
                    if "A" not in image.getbands() and "transparency" not in image.info:
                        continue
                    rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
            except OSError:
                continue
            cutout = self._prepare(rgba)
            if cutout is not None:
                self.objects.append(cutout)
                self.names.append(str(path.relative_to(root)))
        if not self.objects:
            raise ConfigError(f"{str(folder)!r}: no usable RGBA object cut-outs in it"
                              + (f" (split {split!r})" if split else ""))

    @classmethod
    def split_of(cls, name: str) -> str:
        """The split of a file name (stable across machines and folders)."""
        bucket = zlib.crc32(name.encode()) % 20
        return next(split for split, buckets in cls.SPLITS.items() if bucket in buckets)

    def _prepare(self, rgba: np.ndarray) -> np.ndarray | None:
        alpha = rgba[:, :, 3]
        if (alpha < 0.5).mean() < self.MIN_TRANSPARENT:
            return None
        rows, cols = np.nonzero((alpha > 0.5).any(axis=1))[0], np.nonzero((alpha > 0.5).any(axis=0))[0]
        if rows.size < 8 or cols.size < 8:
            return None
        box = rgba[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        opaque = box[:, :, 3] > 0.5
        if opaque.mean() < self.MIN_OPAQUE or box[opaque, :3].std(axis=0).mean() < self.MIN_COLOUR_STD:
            return None
        # Grow by one pixel so that the soft edge around the opaque box is kept.
        y0, y1 = max(0, rows.min() - 1), min(rgba.shape[0], rows.max() + 2)
        x0, x1 = max(0, cols.min() - 1), min(rgba.shape[1], cols.max() + 2)
        box = rgba[y0:y1, x0:x1]
        scale = self.MAX_SIDE / max(box.shape[:2])
        if scale < 1.0:
            box = resize_rgba(box, max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
        return np.ascontiguousarray(np.clip(box, 0.0, 1.0), dtype=np.float32)

    @classmethod
    def of(cls, folder: str | Path, split: str | None = None) -> ObjectFolder:
        """The (cached) cut-outs of ``folder`` in ``split``."""
        key = (str(Path(folder).expanduser().resolve()), split)
        if key not in cls._cache:
            cls._cache[key] = cls(key[0], split)
        return cls._cache[key]


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
        photo = self.photos[int(rng.integers(len(self.photos)))]
        out = np.clip(square_crop(rng, photo, size, self.CROP_SHARE), 0.0, 1.0)
        return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out, dtype=np.float32)
