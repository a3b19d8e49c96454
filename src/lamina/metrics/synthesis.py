"""Metrics of layered synthesis (BFS): a generated layer for a box and caption against the procedural ground truth.

Generation is stochastic, so these are loose geometric checks, not pixel errors:

* **regions**: the total layer (``alpha > TOTAL_T``), the object and the effects
  (shadows/reflections). Ground truth comes from the exact maps of :class:`lamina.data.Scene`; a
  predicted layer has only alpha and colour, so its object is where ``alpha >= OBJECT_T`` except
  dark soft pixels, and its effects are its *dark, partially transparent* pixels
  (``EFFECT_LO < alpha < EFFECT_HI``, luminance below ``DARK``) more than ``EDGE_PX`` from the
  object (so a dark object's anti-aliased rim is not a shadow) -- this measures shadows;
  reflections mostly count as object.
* **IoU** of each region, **alpha SAD** (in thousands, as alphamatting.com), **background change**
  where the layer's alpha is 0 (must be exactly 0: BFS never regenerates the background),
  whether a "with a shadow" caption got a shadow region that touches the object
  (:func:`shadow_touches_object`), and whether the object has the caption's colour
  (:func:`caption_colour_hit`).

Inputs are channel-last NumPy arrays in ``[0, 1]``: layers straight RGBA ``[H, W, 4]``, maps ``[H, W]``.
"""

from __future__ import annotations

import numpy as np

from ..data.captions import COLORS

#: A pixel belongs to the layer where alpha exceeds this.
TOTAL_T = 0.05
#: ... to the object where alpha is at least this (and it is not an effect).
OBJECT_T = 0.5
#: Predicted effects: alpha in (EFFECT_LO, EFFECT_HI) and luminance below DARK.
EFFECT_LO, EFFECT_HI, DARK = 0.05, 0.9, 0.25
#: Predicted effects lie more than this many pixels from the predicted object (its soft rim is not an effect).
EDGE_PX = 1
#: Ground-truth effects: effects alpha above EFFECT_LO where the object's alpha is below OBJECT_T.
#: A shadow "touches" the object when it lies within this many pixels of it.
TOUCH_PX = 2
#: Fewest pixels of a predicted effect region that count as a shadow.
MIN_EFFECT_PIXELS = 3
#: Rec. 601 luma weights.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty (undefined: left out of means)."""
    union = np.logical_or(pred, gt).sum()
    return float("nan") if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def predicted_regions(layer: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``total``, ``object`` and ``effects`` masks ``[H, W]`` of a straight RGBA layer ``[H, W, 4]``."""
    alpha = layer[:, :, 3]
    soft_dark = (alpha > EFFECT_LO) & (alpha < EFFECT_HI) & (layer[:, :, :3] @ LUMA < DARK)
    obj = (alpha >= OBJECT_T) & ~soft_dark
    return {"total": alpha > TOTAL_T, "object": obj, "effects": soft_dark & ~dilate(obj, EDGE_PX)}


def true_regions(object_alpha: np.ndarray, effects_alpha: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``total``, ``object`` and ``effects`` masks from a scene's exact object/effects alphas."""
    total = object_alpha + effects_alpha * (1.0 - object_alpha)
    obj = object_alpha >= OBJECT_T
    return {"total": total > TOTAL_T, "object": obj, "effects": (effects_alpha > EFFECT_LO) & ~obj}


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation of ``mask`` by a ``(2 p + 1)`` square."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
            xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
            out[yd, xd] |= mask[ys, xs]
    return out


def shadow_touches_object(layer: np.ndarray) -> bool:
    """Whether the layer has a shadow region (at least ``MIN_EFFECT_PIXELS`` dark soft pixels) within
    ``TOUCH_PX`` pixels of its object region."""
    regions = predicted_regions(layer)
    near = dilate(regions["object"], TOUCH_PX) & regions["effects"]
    return bool(regions["effects"].sum() >= MIN_EFFECT_PIXELS and near.any())


def caption_colour_hit(layer: np.ndarray, caption: str, top: int = 1) -> float:
    """1.0 when the colour the caption names is among the ``top`` named colours (:data:`lamina.data.captions.COLORS`)
    nearest in RGB to the median colour of the layer's object region, 0.0 when not or when the layer has no object;
    NaN when the caption names no colour. Shading, stripes and speckles pull the median away from the named colour
    (a shaded yellow reads as brown), so even exact layers miss sometimes: compare methods with the exact layers'
    score. Chance is ``top / 12``."""
    named = [word for word in caption.replace(",", " ").split() if word in COLORS]
    if not named:
        return float("nan")
    obj = predicted_regions(layer)["object"]
    if not obj.any():
        return 0.0
    median = np.median(layer[:, :, :3][obj], axis=0)
    names = list(COLORS)
    order = np.argsort([np.sum((median - np.asarray(COLORS[n])) ** 2) for n in names], kind="stable")
    return float(named[0] in [names[int(i)] for i in order[:top]])


def background_change(composite: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> float:
    """Largest ``|composite - background|`` where ``alpha == 0`` (0.0 when the background is untouched there)."""
    region = alpha == 0
    if not region.any():
        return 0.0
    return float(np.abs(composite[:, :, :3] - background[:, :, :3])[region].max())


def layer_metrics(layer: np.ndarray, object_alpha: np.ndarray, effects_alpha: np.ndarray) -> dict[str, float]:
    """IoU of the total layer, the object and the effects, and alpha SAD (thousands) against ground truth."""
    pred, gt = predicted_regions(layer), true_regions(object_alpha, effects_alpha)
    true_alpha = object_alpha + effects_alpha * (1.0 - object_alpha)
    return {
        "total_iou": iou(pred["total"], gt["total"]),
        "object_iou": iou(pred["object"], gt["object"]),
        "effects_iou": iou(pred["effects"], gt["effects"]),
        "alpha_sad": float(np.abs(layer[:, :, 3] - true_alpha).sum() * 1e-3),
    }
