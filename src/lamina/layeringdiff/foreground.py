"""Stage 2 of LayeringDiff: find the foreground, as a soft alpha ``[H, W]``.

LayeringDiff gets its alpha from a matting chain, never from the diffusion model
(box -> mask -> trimap -> alpha; Grounding DINO, SAM and ViTMatte in the paper). This module
is the part of that chain that needs no weights:

* **box** -> GrabCut (OpenCV) -> hard mask -> the learned cut-out refiner (:mod:`.cutout`, a small
  CNN shipped in the package) says where the object is -> GrabCut again from that, for the outline
  (``ForegroundConfig(refiner=None)``: GrabCut's first mask as it is) -> the tight-box prior: a side
  of the box that the mask stays away from is reached along the refiner's most likely path, and
  GrabCut runs once more from it (:func:`reach_box_sides`),
* **mask** (the user's, or GrabCut's) -> trimap by eroding and dilating the mask,
* **trimap** -> alpha by closed-form (``"cf"``, :mod:`lamina.layeringdiff.matting`) or shared
  (``"sm"``, pymatting) matting.

Every function takes ``float32`` images ``[H, W, 3]`` in ``[0, 1]`` and returns
``float32`` alpha in ``[0, 1]``; trimaps use the values 0 (background), 0.5
(unknown) and 1 (foreground).

**Effects.** The paper lists shadows as a limitation: the matte covers the object only, so
its shadow stays in the background. lamina goes further (issue 4). Matting cannot recover
a shadow: its colour-line model explains an unknown pixel as a mix of *nearby* foreground
and background colours, and a shadow is a darkening of the background, not a mix with the
object. So the trimap is left about the object alone, and this stage instead marks an
**effects region** where shadows and reflections of the object may lie: the object grown
by ``effects_around`` object sizes in every direction, and below that down to
``effects_below`` object heights (cast shadows and reflections fall on the ground, towards
the viewer). The disassembly stage (:mod:`lamina.layeringdiff.disassembly`) completes the
background under that region too and moves whatever the region shows on top of the
completed background into the foreground layer. Effects outside the region (a long shadow
cast far behind the object) stay in the background. The defaults are a compromise measured
on procedural scenes at 128 px: a larger region catches more effects but, on textured
backgrounds, also moves more inpainting error into the foreground layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import LaminaError, LayerError
from ..layers import as_float_image, check_box, to_uint8
from ._util import bbox_slices, import_cv2, import_pymatting

MATTING_METHODS = ("cf", "sm")

#: Trimap values (pymatting's convention too).
TRIMAP_BACKGROUND, TRIMAP_UNKNOWN, TRIMAP_FOREGROUND = 0.0, 0.5, 1.0

#: GrabCut started from an object probability fixes the pixels within this of 0 or 1 (:func:`grabcut_mask`).
PRIOR_SURE = 0.005
#: The box's sides, in :func:`reach_box_sides`'s order.
BOX_SIDES = ("left", "top", "right", "bottom")
#: :func:`reach_box_sides` searches its paths on the box scaled to at most this many px on its longer
#: side (the refiner's probability is a 128 px view of a window larger than the box: finer buys nothing).
TIGHT_BOX_WORK_SIDE = 96
#: A path pixel costs ``-log(max(p, TIGHT_BOX_FLOOR)) + TIGHT_BOX_STEP`` per px of length: the most
#: likely route, and of equally likely ones the shorter.
TIGHT_BOX_FLOOR, TIGHT_BOX_STEP = 1e-3, 0.05
#: Half the width of a path fixed as object, as a share of the box's longer side.
TIGHT_BOX_PATH_WIDTH = 0.015


@dataclass(frozen=True)
class ForegroundConfig:
    """Options of the foreground stage. Widths are in pixels; ``None`` scales with the image.

    Attributes:
        erode: how far inside the mask edge the sure foreground starts.
            ``None``: ``max(1, min(H, W) // 80)``.
        dilate: how far outside the mask edge the sure background starts (same default).
        matting: ``"cf"`` (closed-form, Levin et al. 2008) or ``"sm"`` (shared matting).
        grabcut_iterations: GrabCut iterations for a box.
        grabcut_max_side: GrabCut runs on a copy downscaled to at most this side. 256 would be
            2.8 times faster and gave an 11 % lower alpha SAD on eight 512 px validation photo
            composites, but it cut the rocket's nose and the cup's body off the real photographs
            of ``benchmarks/real_photos.py`` (thin parts are lost at that scale), so it stays 512.
        matting_max_side: matting runs on the unknown band's bounding box, downscaled to at
            most this side (known pixels are then restored at full resolution).
        refiner: the cut-out refiner that corrects GrabCut's mask from a box (:mod:`.cutout`):
            ``"builtin"`` (the default), a folder saved by ``lamina layeringdiff train-cutout``, or
            ``None`` (GrabCut's mask as it is). The built-in one was trained on procedural objects and
            on real objects' cut-outs over photographs; with the second GrabCut pass below it lowers the
            alpha SAD on the photo benchmark's validation split by 46 % (procedural objects) and 24 %
            (real objects) at 256², the hidden background level or better (``benchmarks/RESULTS.md``).
        refiner_grabcut: run GrabCut again from the refiner's probability (:func:`grabcut_mask`'s
            ``prior``), pixels within this of 0 or 1 fixed: the refiner says where the object is (at its
            128 px working size), GrabCut's colour models draw its outline at full detail. On real
            objects the refiner's own mask cuts parts off (a djembe's body, ``docs/cutout_real_objects.png``)
            and the second pass gives them back. ``None``: the refiner's probability above
            ``refiner_threshold`` is the mask (the behaviour before 2026-12-07's fifth session).
        refiner_threshold: without ``refiner_grabcut`` (or when its pass finds nothing), the refined mask
            is the refiner's probability above this. Low, because an object pixel the mask misses stays
            in the background layer (a ghost no fill can remove), while a background pixel it takes is
            given back by matting in the unknown band.
        refiner_unknown: pixels whose refiner probability is within this of 0.5 join the trimap's
            unknown band, so matting decides them (edges and thin parts the refiner's working size
            blurs); 0 (the default): the trimap comes from the refined mask alone (with the second
            GrabCut pass the band made real objects half transparent: the djembe's skin).
        refiner_max_hole: a hole that the refiner opens in the object (a region its mask encloses)
            larger than this share of the object's filled area is left to GrabCut. 1 (the default since
            2026-12-07's ninth session): no limit. It was 0.3 while the first refiner, trained on procedural
            scenes only, called a real cup's contents seen from above a hole; today's refiner and its second
            GrabCut pass keep them (``docs/real_photos.png`` and ``docs/cutout_real_objects.png`` are the same
            with either value), and the limit gave ring-shaped objects' real holes back to GrabCut (alpha SAD
            +6 % / +20 % on the photo benchmark's validation split at 256² / 512², ``benchmarks/RESULTS.md``).
        refiner_mirror: average the refiner's probabilities of the window and its mirror image (off: on
            the validation split it changed the alpha SAD by less than the noise, at twice the cost).
        tight_box: the tight-box prior (Lempitsky et al., ICCV 2009: an object touches every side of the
            box drawn around it), with the refiner only. A side of the box that the mask stays farther from
            than this share of the box's width (height) is joined to the mask along the refiner's most likely
            path, and GrabCut runs again with that path fixed as object (:func:`reach_box_sides`), so that
            its colour models learn the colours of the part they missed: parts whose colour the surroundings
            share (a pepper mill on a brown floor, a rooster's dark tail on bark, the rocket's nose in
            ``docs/real_photos.png``). ``None``: off. On the photo benchmark's validation split: +0.16 / +0.25 dB
            hidden background and 8 / 17 % less structure ghost on real objects (256² / 512²), level on
            procedural ones (``benchmarks/RESULTS.md``). Boxes lamina draws itself (automatic mode's, with a
            margin) run without it (:func:`without_tight_box`).
        tight_box_probability: a path is taken only when the refiner's mean probability along it is at
            least this; a loose box whose margin the refiner calls background is left as it is.
        effects: mark the effects region around and below the object.
        effects_below: how far below the object the region reaches, in object heights.
        effects_around: how far around the object the region reaches, in object sizes.
        seed: OpenCV's random seed for GrabCut, so a box always gives the same mask.
    """

    erode: int | None = None
    dilate: int | None = None
    matting: str = "cf"
    grabcut_iterations: int = 5
    grabcut_max_side: int = 512
    matting_max_side: int = 1024
    refiner: str | None = "builtin"
    refiner_grabcut: float | None = PRIOR_SURE
    refiner_threshold: float = 0.05
    refiner_unknown: float = 0.0
    refiner_max_hole: float = 1.0
    refiner_mirror: bool = False
    tight_box: float | None = 0.07
    tight_box_probability: float = 0.05
    effects: bool = True
    effects_below: float = 0.5
    effects_around: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("erode", "dilate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise LaminaError(f"ForegroundConfig.{name} must be a width in pixels >= 0 or None, got {value!r}")
        if self.matting not in MATTING_METHODS:
            raise LaminaError(f"unknown matting method {self.matting!r}; choose from {', '.join(MATTING_METHODS)}")
        for name in ("grabcut_iterations", "grabcut_max_side", "matting_max_side"):
            if getattr(self, name) < 1:
                raise LaminaError(f"ForegroundConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if isinstance(self.refiner, os.PathLike):
            object.__setattr__(self, "refiner", os.fspath(self.refiner))
        if self.refiner is not None and not isinstance(self.refiner, str):
            raise LaminaError(f"ForegroundConfig.refiner must be 'builtin', a folder or None, got {self.refiner!r}")
        if not 0.0 < self.refiner_threshold < 1.0:
            raise LaminaError(f"ForegroundConfig.refiner_threshold must be in (0, 1), got {self.refiner_threshold!r}")
        if not 0.0 <= self.refiner_unknown <= 0.5:
            raise LaminaError(f"ForegroundConfig.refiner_unknown must be in [0, 0.5], got {self.refiner_unknown!r}")
        if self.refiner_grabcut is not None and not 0.0 <= self.refiner_grabcut < 0.5:
            raise LaminaError(f"ForegroundConfig.refiner_grabcut must be in [0, 0.5) or None, "
                              f"got {self.refiner_grabcut!r}")
        if self.tight_box is not None and not 0.0 <= self.tight_box < 0.5:
            raise LaminaError(f"ForegroundConfig.tight_box must be in [0, 0.5) or None, got {self.tight_box!r}")
        if not 0.0 <= self.tight_box_probability <= 1.0:
            raise LaminaError(f"ForegroundConfig.tight_box_probability must be in [0, 1], "
                              f"got {self.tight_box_probability!r}")
        if not 0.0 < self.refiner_max_hole <= 1.0:
            raise LaminaError(f"ForegroundConfig.refiner_max_hole must be in (0, 1], got {self.refiner_max_hole!r}")
        if self.effects_below < 0 or self.effects_around < 0:
            raise LaminaError("ForegroundConfig.effects_below and effects_around must be >= 0")

    def band_widths(self, height: int, width: int) -> tuple[int, int]:
        """``(erode, dilate)`` in pixels for an image of this size."""
        auto = max(1, min(height, width) // 80)
        return (auto if self.erode is None else self.erode, auto if self.dilate is None else self.dilate)


@dataclass(frozen=True)
class ForegroundEstimate:
    """The output of the foreground stage.

    Attributes:
        alpha: ``float32`` ``[H, W]`` in ``[0, 1]``, the object's matte (no effects).
        trimap: ``float32`` ``[H, W]`` with values 0, 0.5, 1.
        mask: ``bool`` ``[H, W]``, the hard mask the trimap was built from.
        effects_region: ``bool`` ``[H, W]`` where the object's shadows and reflections are
            searched for, or ``None`` when effects are off.
    """

    alpha: np.ndarray
    trimap: np.ndarray
    mask: np.ndarray
    effects_region: np.ndarray | None


# ---------------------------------------------------------------------------- inputs
def as_rgb(image: Any, what: str = "image") -> np.ndarray:
    """Validate an RGB image and return ``float32`` ``[H, W, 3]`` (uint8/uint16/float accepted)."""
    return as_float_image(image, what, channels=(3,))


def mask_from_image(image: Any, what: str = "mask") -> np.ndarray:
    """A mask read from a file (``[H, W]``, ``[H, W, 1|3|4]``) as ``float32`` ``[H, W]``.

    Grey and RGB masks use the mean of their colour channels (white marks the object); an
    RGBA mask uses its alpha when that is not fully opaque (a cut-out), its colour otherwise.
    """
    array = as_float_image(image, what, channels=(1, 3, 4))
    if array.shape[2] == 4 and float(array[:, :, 3].min()) < 1.0:
        return np.ascontiguousarray(array[:, :, 3])
    return np.ascontiguousarray(array[:, :, :3].mean(axis=2) if array.shape[2] > 1 else array[:, :, 0])


def check_mask(mask: Any, height: int, width: int, what: str = "mask") -> np.ndarray:
    """Validate a mask for an image of ``width x height``; return it hard (``bool`` ``[H, W]``, > 0.5).

    Raises :class:`LayerError` for a wrong size and :class:`LaminaError` for an empty mask or
    one that covers the whole image (nothing would be left to show the background).
    """
    soft = mask_from_image(mask, what)
    if soft.shape != (height, width):
        raise LayerError(f"{what} is {soft.shape[1]}x{soft.shape[0]} but the image is {width}x{height}")
    hard = soft > 0.5
    if not hard.any():
        raise LaminaError(f"{what} is empty: no pixel above 0.5 marks the object")
    if hard.all():
        raise LaminaError(f"{what} covers the whole image: no background is left to complete the layers from")
    return hard


# ---------------------------------------------------------------------------- trimap
def distance_to_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance ``float32`` ``[H, W]`` of each ``mask`` pixel to the nearest pixel outside it (0 outside).

    OpenCV's exact transform (``DIST_MASK_PRECISE``), ten times faster than SciPy's and the same
    up to float32 rounding; SciPy's where nothing is outside the mask (OpenCV has no answer there).
    """
    if mask.all():
        return ndimage.distance_transform_edt(mask).astype(np.float32)
    cv2 = import_cv2()
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def trimap_from_mask(mask: np.ndarray, erode: int, dilate: int) -> np.ndarray:
    """Trimap of a hard mask: sure foreground ``erode`` px inside its edge, sure background ``dilate`` px outside.

    Distances are Euclidean. When a width would leave no sure pixel of a class (a thin
    object, a mask reaching the borders), the deepest pixels of that class are kept, so
    matting always has both.
    """
    mask = np.asarray(mask, bool)
    inside = distance_to_outside(mask)
    outside = distance_to_outside(~mask)
    trimap = np.full(mask.shape, TRIMAP_UNKNOWN, np.float32)
    trimap[inside > min(float(erode), inside.max() - 1e-3)] = TRIMAP_FOREGROUND
    trimap[outside > min(float(dilate), outside.max() - 1e-3)] = TRIMAP_BACKGROUND
    return trimap


def effects_region(mask: np.ndarray, below: float, around: float) -> np.ndarray:
    """Where the shadows and reflections of the object in ``mask`` are searched for.

    The object grown by ``around`` times its size (the larger side of its bounding box) in
    every direction, plus everything under that grown object down to ``below`` object
    heights beneath it (ground shadows and reflections fall towards the viewer). Object
    pixels themselves are excluded.
    """
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros_like(mask)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    grown = distance_to_outside(~mask) <= around * max(height, width)
    # Rows since the last grown pixel at or above each pixel, per column: the grown object smeared down.
    index = np.arange(mask.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(grown, index, -(10**9)), axis=0)
    return (index - last <= round(below * height)) & ~mask


def large_holes(mask: np.ndarray, max_share: float) -> np.ndarray:
    """Holes of ``mask`` (regions it encloses) larger than ``max_share`` of its filled area: ``bool`` ``[H, W]``."""
    filled = ndimage.binary_fill_holes(mask)
    holes, count = ndimage.label(filled & ~mask)
    if count == 0 or max_share >= 1.0:
        return np.zeros_like(mask)
    sizes = ndimage.sum_labels(np.ones(mask.shape, np.float32), holes, np.arange(1, count + 1))
    big = np.flatnonzero(sizes > max_share * filled.sum()) + 1
    return np.isin(holes, big) if big.size else np.zeros_like(mask)


# ----------------------------------------------------------------------------- alpha
def estimate_alpha(image: np.ndarray, trimap: np.ndarray, method: str = "cf", max_side: int = 1024) -> np.ndarray:
    """Alpha matte ``float32`` ``[H, W]`` of ``image`` ``[H, W, 3]`` for a trimap (0 / 0.5 / 1).

    Matting runs only on the bounding box of the unknown band (plus a margin of known
    pixels), downscaled to at most ``max_side``; sure pixels keep their trimap value.
    """
    if method not in MATTING_METHODS:
        raise LaminaError(f"unknown matting method {method!r}; choose from {', '.join(MATTING_METHODS)}")
    fg, bg = trimap >= 0.9, trimap <= 0.1
    alpha = fg.astype(np.float32)
    unknown = ~(fg | bg)
    if not unknown.any():
        return alpha
    if not fg.any() or not bg.any():
        raise LaminaError("the trimap needs both sure foreground and sure background pixels")
    rows, cols = bbox_slices(unknown, margin=8)
    img, tri = image[rows, cols].astype(np.float64), trimap[rows, cols].astype(np.float64)
    if not (tri >= 0.9).any() or not (tri <= 0.1).any():  # the crop must see both classes
        rows, cols = slice(None), slice(None)
        img, tri = image.astype(np.float64), trimap.astype(np.float64)
    h, w = tri.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        cv2 = import_cv2()
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        tri = cv2.resize(tri, size, interpolation=cv2.INTER_NEAREST)
    if method == "cf":
        from .matting import closed_form_alpha

        matte = closed_form_alpha(img, tri).astype(np.float32)
    else:
        matte = np.clip(import_pymatting().estimate_alpha_sm(img, tri), 0.0, 1.0).astype(np.float32)
    if scale < 1.0:
        matte = import_cv2().resize(matte, (w, h), interpolation=import_cv2().INTER_LINEAR)
    alpha[rows, cols] = np.where(unknown[rows, cols], matte, alpha[rows, cols])
    return alpha


# --------------------------------------------------------------------------- GrabCut
def grabcut_mask(image: np.ndarray, box: Any, iterations: int = 5, max_side: int = 512, seed: int = 0, *,
                 prior: np.ndarray | None = None, sure: float = PRIOR_SURE, allow_empty: bool = False) -> np.ndarray:
    """Hard mask ``bool`` ``[H, W]`` of the object inside ``box`` ``(x0, y0, x1, y1)`` by GrabCut.

    Without ``prior`` GrabCut starts from the box (everything outside it background). With an object
    probability ``prior`` ``[H, W]`` in ``[0, 1]`` (the cut-out refiner's) it starts from that instead:
    pixels in the box above 0.5 are probably object, the others probably background, and those within
    ``sure`` of 0 or 1 are fixed; its colour models then decide the uncertain pixels at full detail.

    Raises :class:`LaminaError` for a box outside the image, one that leaves no background
    around it, or when GrabCut finds no object in it (``allow_empty``: an empty mask is returned then).
    """
    cv2 = import_cv2()
    image = as_rgb(image)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = check_box(box, w, h)
    if (x0, y0, x1, y1) == (0, 0, w, h):
        raise LaminaError(f"box {x0},{y0},{x1},{y1} covers the whole {w}x{h} image: GrabCut needs background "
                          "pixels outside the box (use a tighter box or pass a mask)")
    scale = min(1.0, max_side / max(h, w))
    small = to_uint8(image)
    if scale < 1.0:
        small = cv2.resize(small, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    sx0, sy0 = min(int(x0 * sw / w), sw - 1), min(int(y0 * sh / h), sh - 1)
    sx1, sy1 = max(int(np.ceil(x1 * sw / w)), sx0 + 1), max(int(np.ceil(y1 * sh / h)), sy0 + 1)
    labels = np.zeros((sh, sw), np.uint8)
    mode, rect = cv2.GC_INIT_WITH_RECT, (sx0, sy0, sx1 - sx0, sy1 - sy0)
    if prior is not None:
        p = np.asarray(prior, np.float32)
        p = cv2.resize(p, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1.0 else p
        inner = np.where(p[sy0:sy1, sx0:sx1] > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        inner[p[sy0:sy1, sx0:sx1] > 1.0 - sure] = cv2.GC_FGD
        inner[p[sy0:sy1, sx0:sx1] < sure] = cv2.GC_BGD
        if not (inner % 2).any():  # GC_FGD = 1, GC_PR_FGD = 3: no object pixel to start from
            raise LaminaError(f"the cut-out prior marks no object in box {x0},{y0},{x1},{y1}")
        labels[sy0:sy1, sx0:sx1] = inner
        mode, rect = cv2.GC_INIT_WITH_MASK, None
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(small, labels, rect, np.zeros((1, 65)), np.zeros((1, 65)), iterations, mode)
    except cv2.error as exc:
        raise LaminaError(f"GrabCut failed on box {x0},{y0},{x1},{y1}: {str(exc).strip().splitlines()[-1]}") from None
    fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    if scale < 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = fg[y0:y1, x0:x1] > 0.5
    if not mask.any() and not allow_empty:
        raise LaminaError(f"GrabCut found no object in box {x0},{y0},{x1},{y1}; draw a tighter box or pass a mask")
    return mask


def reach_box_sides(image: np.ndarray, box: Any, mask: np.ndarray, probability: np.ndarray, tolerance: float,
                    min_probability: float, *, iterations: int = 5, max_side: int = 512, seed: int = 0,
                    sure: float = PRIOR_SURE) -> tuple[np.ndarray, tuple[str, ...]]:
    """The tight-box prior: ``mask`` grown to the sides of ``box`` that it does not reach.

    An object touches every side of the box drawn around it (Lempitsky et al., "Image segmentation
    with a bounding box prior", ICCV 2009). A side that ``mask`` (``bool`` ``[H, W]``) stays farther
    from than ``tolerance`` of the box's width (height) is joined to it by the cheapest 8-connected
    path under the object ``probability`` (``[H, W]`` in ``[0, 1]``, the cut-out refiner's; a pixel costs
    ``-log p``), searched at :data:`TIGHT_BOX_WORK_SIDE`. Paths whose mean probability is at least
    ``min_probability`` are fixed as object and GrabCut runs again (:func:`grabcut_mask` with a prior:
    the mask probably object, the rest of the box probably background, the refiner's sure pixels kept),
    so that its colour models learn the colours of the part they missed.

    Returns ``(mask, sides)``: the new mask and the sides reached; ``mask`` itself and ``()`` when no
    side is far, no path is likely enough, or GrabCut then finds nothing.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    cv2 = import_cv2()
    h, w = mask.shape
    x0, y0, x1, y1 = check_box(box, w, h)
    inner = np.asarray(mask, bool)[y0:y1, x0:x1]
    if not inner.any():
        return mask, ()
    bh, bw = inner.shape
    rows, cols = np.flatnonzero(inner.any(axis=1)), np.flatnonzero(inner.any(axis=0))
    gaps = (cols[0] / bw, rows[0] / bh, (bw - 1 - cols[-1]) / bw, (bh - 1 - rows[-1]) / bh)
    far = [side for side, gap in zip(BOX_SIDES, gaps, strict=True) if gap > tolerance]
    if not far:
        return mask, ()
    # The path search, on the box scaled down.
    scale = min(1.0, TIGHT_BOX_WORK_SIDE / max(bh, bw))
    sh, sw = max(2, round(bh * scale)), max(2, round(bw * scale))
    box_probability = np.asarray(probability, np.float32)[y0:y1, x0:x1]
    p = cv2.resize(box_probability, (sw, sh), interpolation=cv2.INTER_AREA)
    start = cv2.resize(inner.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0  # never empty
    cost = (-np.log(np.maximum(p, TIGHT_BOX_FLOOR)) + TIGHT_BOX_STEP).ravel()
    index = np.arange(sh * sw).reshape(sh, sw)
    a, b, weight = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each undirected 8-neighbour edge once
        lo, hi = max(0, -dx), sw - max(0, dx)
        u, v = index[:sh - dy, lo:hi].ravel(), index[dy:, lo + dx:hi + dx].ravel()
        a.append(u)
        b.append(v)
        weight.append((cost[u] + cost[v]) / 2.0 * np.hypot(dy, dx))
    graph = coo_matrix((np.concatenate(weight), (np.concatenate(a), np.concatenate(b))), shape=(sh * sw,) * 2)
    distance, previous, _ = dijkstra(graph.tocsr(), directed=False, indices=np.flatnonzero(start), min_only=True,
                                     return_predecessors=True)
    distance = distance.reshape(sh, sw)  # finite everywhere: the grid is connected
    band_h, band_w = max(1, int(np.ceil(tolerance * sh))), max(1, int(np.ceil(tolerance * sw)))
    bands = {"left": np.s_[:, :band_w], "top": np.s_[:band_h, :], "right": np.s_[:, sw - band_w:],
             "bottom": np.s_[sh - band_h:, :]}
    path, reached = np.zeros(sh * sw, bool), []
    for side in far:
        in_band = np.full((sh, sw), np.inf)
        in_band[bands[side]] = distance[bands[side]]
        node, nodes = int(np.argmin(in_band)), []
        while node >= 0 and not start.flat[node]:
            nodes.append(node)
            node = int(previous[node])
        if nodes and p.flat[nodes].mean() >= min_probability:
            path[nodes] = True
            reached.append(side)
    if not reached:
        return mask, ()
    # The path at full size, wide enough to survive GrabCut's own downscaling; then GrabCut from it.
    fixed = cv2.resize(path.reshape(sh, sw).astype(np.uint8), (bw, bh), interpolation=cv2.INTER_NEAREST)
    radius = max(1, round(TIGHT_BOX_PATH_WIDTH * max(bh, bw)), int(np.ceil(max(h, w) / max_side)))
    fixed = ndimage.binary_dilation(fixed.astype(bool), iterations=radius)
    prior = np.zeros((h, w), np.float32)
    # Fixed: 1; the mask: probably object (>= 0.75, or fixed where the refiner is sure); the rest: probably not.
    prior[y0:y1, x0:x1] = np.where(fixed, 1.0, np.where(inner, np.maximum(box_probability, 0.75),
                                                        np.minimum(box_probability, 0.25)))
    grown = grabcut_mask(image, (x0, y0, x1, y1), iterations, max_side, seed, prior=prior, sure=sure,
                         allow_empty=True)
    return (grown, tuple(reached)) if grown.any() else (mask, ())


def without_tight_box(config: ForegroundConfig) -> ForegroundConfig:
    """``config`` for a box that is not tight: one lamina drew itself (automatic mode's saliency box has a
    margin), or a user's drawn with a wide margin (``lamina decompose --loose-box``).

    On 60 validation scenes the tight-box prior lowered automatic mode's mask IoU (0.78 -> 0.76 on procedural
    backgrounds, 0.61 -> 0.59 on photographs, ``benchmarks/bench_auto.py``).
    """
    return replace(config, tight_box=None)


# ------------------------------------------------------------------------ the stage
def foreground_from_mask(image: Any, mask: Any, config: ForegroundConfig | None = None) -> ForegroundEstimate:
    """Alpha of the object marked by ``mask`` (``[H, W]``, values > 0.5 mark it): trimap, then matting."""
    config = config or ForegroundConfig()
    image = as_rgb(image)
    h, w = image.shape[:2]
    hard = check_mask(mask, h, w)
    return _matte(image, hard, config)


def foreground_from_box(image: Any, box: Any, config: ForegroundConfig | None = None) -> ForegroundEstimate:
    """Alpha of the object inside ``box`` ``(x0, y0, x1, y1)``: GrabCut, the refiner, trimap, then matting.

    Everything outside the box is sure background in the trimap, so the alpha is zero there
    (the effects region is not limited to the box: a shadow may fall outside it).
    """
    config = config or ForegroundConfig()
    image = as_rgb(image)
    # With a refiner, an empty first mask is not the end: the refiner looks at the image itself.
    hard = grabcut_mask(image, box, config.grabcut_iterations, config.grabcut_max_side, config.seed,
                        allow_empty=config.refiner is not None)
    x0, y0, x1, y1 = check_box(box, image.shape[1], image.shape[0])
    uncertain = None
    if config.refiner is not None:
        from .cutout import load_refiner, object_probability

        probability = object_probability(load_refiner(config.refiner), image, (x0, y0, x1, y1), hard,
                                         mirror=config.refiner_mirror)
        refined = probability > config.refiner_threshold
        if config.refiner_grabcut is not None:
            try:
                refined = grabcut_mask(image, box, config.grabcut_iterations, config.grabcut_max_side, config.seed,
                                       prior=probability, sure=config.refiner_grabcut)
            except LaminaError:  # nothing to start from, or nothing found: the refiner's mask stays
                pass
        if refined.any():  # else GrabCut's mask stays
            large = large_holes(probability > 0.5, config.refiner_max_hole)
            hard = np.where(large, hard, refined)
            if config.refiner_unknown > 0:
                uncertain = (np.abs(probability - 0.5) < config.refiner_unknown) & ~large
        if config.tight_box is not None:
            sure = PRIOR_SURE if config.refiner_grabcut is None else config.refiner_grabcut
            hard, _ = reach_box_sides(image, (x0, y0, x1, y1), hard, probability, config.tight_box,
                                      config.tight_box_probability, iterations=config.grabcut_iterations,
                                      max_side=config.grabcut_max_side, seed=config.seed, sure=sure)
        if not hard.any():
            raise LaminaError(f"neither GrabCut nor the cut-out refiner found an object in box {x0},{y0},{x1},{y1}; "
                              "draw a tighter box or pass a mask")
    outside = np.ones(hard.shape, bool)
    outside[y0:y1, x0:x1] = False
    return _matte(image, hard, config, outside, uncertain)


def _matte(image: np.ndarray, hard: np.ndarray, config: ForegroundConfig, outside: np.ndarray | None = None,
           uncertain: np.ndarray | None = None) -> ForegroundEstimate:
    erode, dilate = config.band_widths(*hard.shape)
    trimap = trimap_from_mask(hard, erode, dilate)
    if uncertain is not None and ((trimap == TRIMAP_FOREGROUND) & ~uncertain).any():
        trimap[uncertain] = TRIMAP_UNKNOWN
    if outside is not None:
        trimap[outside] = TRIMAP_BACKGROUND
    alpha = estimate_alpha(image, trimap, config.matting, config.matting_max_side)
    region = effects_region(hard, config.effects_below, config.effects_around) if config.effects else None
    return ForegroundEstimate(alpha=alpha, trimap=trimap, mask=hard, effects_region=region)
