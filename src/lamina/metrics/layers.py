"""Metrics of layer decompositions: colour, alpha, background fill-in and recomposition.

Images follow lamina's conventions: NumPy ``[..., H, W, C]``, torch ``[..., C, H, W]``,
values in ``[0, 1]`` (``uint8`` rescaled); alphas and masks are ``[..., H, W]``.
Undefined values are ``nan`` (an empty region, a zero alpha sum); PSNR of identical
images is ``inf``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LayerError
from ..layers import LayeredImage
from . import matting
from ._common import as_images, as_maps, as_region, broadcast_region, check_same_shape
from .masks import mask_metrics


def _rgb(images: np.ndarray, what: str) -> np.ndarray:
    if images.shape[-1] not in (3, 4):
        raise LayerError(f"{what}: expected 3 (RGB) or 4 (RGBA) channels, got shape {tuple(images.shape)}")
    return images[..., :3]


def alpha_weighted_l1(pred_rgb: Any, gt_rgb: Any, gt_alpha: Any) -> float:
    """Foreground colour error ``sum_p a_p e_p / sum_p a_p``, ``e_p`` = mean over RGB of ``|pred - gt|``.

    Colour only matters where the ground-truth layer is visible, so each pixel counts with its
    ground-truth alpha ``a_p`` (the alpha-weighted foreground L1 of layer-decomposition papers).

    Args:
        pred_rgb, gt_rgb: ``[..., H, W, 3]`` (torch ``[..., 3, H, W]``); the alpha of RGBA input is ignored.
        gt_alpha: ``[..., H, W]`` ground-truth alpha.
    Returns:
        The weighted mean absolute error in ``[0, 1]``; ``nan`` when ``gt_alpha`` is all zero.
    """
    p = _rgb(as_images(pred_rgb, "predicted colour"), "predicted colour")
    g = _rgb(as_images(gt_rgb, "ground-truth colour"), "ground-truth colour")
    check_same_shape(p, g, "predicted colour", "ground-truth colour")
    a = broadcast_region(as_maps(gt_alpha, "ground-truth alpha"), p.shape[:-1], "ground-truth alpha")
    total = a.sum(dtype=np.float64)
    if total == 0.0:
        return float("nan")
    return float((a * np.abs(p - g).mean(axis=-1)).sum(dtype=np.float64) / total)


def soft_iou(pred_alpha: Any, gt_alpha: Any) -> float:
    """Soft IoU of two alphas ``sum min(pred, gt) / sum max(pred, gt)``; 1.0 when both are all zero."""
    p, g = as_maps(pred_alpha, "predicted alpha"), as_maps(gt_alpha, "ground-truth alpha")
    check_same_shape(p, g, "predicted alpha", "ground-truth alpha")
    union = np.maximum(p, g).sum(dtype=np.float64)
    return 1.0 if union == 0.0 else float(np.minimum(p, g).sum(dtype=np.float64) / union)


def _psnr(x: np.ndarray, y: np.ndarray, region: np.ndarray | None) -> float:
    """PSNR of channel-last ``[0, 1]`` images over the pixels of ``region`` (all when ``None``)."""
    err = np.square(x.astype(np.float64) - y).mean(axis=-1)
    if region is not None:
        err = err[broadcast_region(region, err.shape, "mask")]
        if err.size == 0:
            return float("nan")
    mse = float(err.mean())
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(1.0 / mse))


def psnr(a: Any, b: Any, mask: Any | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(1 / MSE)`` in dB, for images in ``[0, 1]`` (peak 1).

    Args:
        a, b: images ``[..., H, W, C]`` (torch ``[..., C, H, W]``) or maps ``[H, W]``; the MSE
            runs over every pixel and channel given (a batch gives one dataset-level PSNR).
        mask: optional ``[..., H, W]`` region; only pixels where it is nonzero count.
    Returns:
        dB; ``inf`` for identical images, ``nan`` for an empty mask.
    """
    x, y = as_images(a, "first image"), as_images(b, "second image")
    check_same_shape(x, y, "first image", "second image")
    return _psnr(x, y, None if mask is None else as_region(mask, "mask"))


def background_psnr_occluded(pred_bg: Any, gt_bg: Any, occluder_alpha: Any, threshold: float = 0.0) -> float:
    """PSNR of the background RGB inside the region the foreground covers (``occluder_alpha > threshold``).

    That region is hidden in the composite, so this measures how well a method fills in the
    background behind the objects. ``nan`` when nothing is occluded.
    """
    x = _rgb(as_images(pred_bg, "predicted background"), "predicted background")
    y = _rgb(as_images(gt_bg, "ground-truth background"), "ground-truth background")
    check_same_shape(x, y, "predicted background", "ground-truth background")
    return _psnr(x, y, as_maps(occluder_alpha, "occluder alpha") > threshold)


def _premultiplied_rgb(image: np.ndarray, what: str) -> np.ndarray:
    rgb = _rgb(image, what)
    return rgb * image[..., 3:] if image.shape[-1] == 4 else rgb


def recomposition_psnr(pred: LayeredImage, reference_composite: Any) -> float:
    """PSNR of ``pred.composite()`` against a reference image (e.g. the input the layers came from).

    ``reference_composite`` is ``[H, W, 3|4]`` (torch ``[3|4, H, W]``) on ``pred``'s canvas, or
    a :class:`LayeredImage` (its composite). Colours are compared premultiplied by alpha, which
    is plain RGB PSNR for the usual opaque composites.
    """
    if isinstance(reference_composite, LayeredImage):
        ref = reference_composite.composite()
    else:
        ref = as_images(reference_composite, "reference composite")
    if ref.ndim != 3 or ref.shape[:2] != (pred.height, pred.width):
        raise LayerError(f"reference composite has shape {tuple(ref.shape)}, "
                         f"but the layered image canvas is {pred.width}x{pred.height}")
    out = pred.composite()
    return _psnr(_premultiplied_rgb(out, "composite"), _premultiplied_rgb(ref, "reference composite"), None)


def match_layers(pred: LayeredImage, gt: LayeredImage) -> list[tuple[str, list[int], list[int]]]:
    """Pair foreground layers of ``pred`` and ``gt`` for per-layer metrics.

    * By name, when every ground-truth layer name is also a predicted layer name; predicted
      layers without a partner are left out of the per-layer metrics.
    * Otherwise by stack order: with ``k = min(len(pred), len(gt))`` the bottom ``k - 1``
      layers pair one to one, and the remaining top layers of each side are merged into one
      group (so extra layers are compared as part of the top-most pair).

    Returns ``(name, pred_indices, gt_indices)`` per pair; a merged ground-truth group is
    named by joining its layer names with ``+``. Empty when either side has no foreground.
    """
    pred_names, gt_names = [layer.name for layer in pred.layers], [layer.name for layer in gt.layers]
    if not pred_names or not gt_names:
        return []
    if set(gt_names) <= set(pred_names):
        return [(name, [pred.index(name)], [gt.index(name)]) for name in gt_names]
    k = min(len(pred_names), len(gt_names))
    pairs = [(gt_names[i], [i], [i]) for i in range(k - 1)]
    pairs.append(("+".join(gt_names[k - 1:]), list(range(k - 1, len(pred_names))), list(range(k - 1, len(gt_names)))))
    return pairs


def evaluate_layers(pred: LayeredImage, gt: LayeredImage, threshold: float = 0.5) -> dict[str, float]:
    """Compare a predicted layered image with a ground-truth one on the same canvas.

    Whole foreground (all visible foreground layers flattened, ``composite(background=False)``):

    * ``alpha_sad``, ``alpha_gradient``, ``alpha_connectivity``: matting errors, / 1000
      (:mod:`lamina.metrics.matting`); ``alpha_mse``; ``alpha_soft_iou``;
    * ``fg_l1``: :func:`alpha_weighted_l1` of the foreground colour, weighted by ground-truth alpha;
    * ``mask_iou_fg``, ``mask_iou_bg``, ``mask_miou``, ``mask_precision``, ``mask_recall``,
      ``mask_f1``, ``mask_accuracy``: :func:`~lamina.metrics.masks.mask_metrics` of both
      alphas thresholded at ``threshold``;
    * ``bg_psnr_occluded``: background PSNR where the ground-truth foreground alpha is > 0;
    * ``recomposition_psnr``: predicted composite against ground-truth composite.

    Per layer pair (see :func:`match_layers`), ``layer/<gt name>/alpha_sad``,
    ``layer/<gt name>/alpha_soft_iou`` and ``layer/<gt name>/fg_l1`` on each layer's own
    (unoccluded) alpha and colour. Hidden layers count as empty. Raises :class:`LayerError`
    when the canvases differ in size.
    """
    for what, image in (("prediction", pred), ("ground truth", gt)):
        if not isinstance(image, LayeredImage):
            raise LayerError(f"evaluate_layers: {what} must be a LayeredImage, got {type(image).__name__}")
    if pred.size != gt.size:
        raise LayerError(f"predicted canvas is {pred.width}x{pred.height} but ground-truth canvas is "
                         f"{gt.width}x{gt.height}")
    p, g = pred.composite(background=False), gt.composite(background=False)
    pa, ga = p[..., 3], g[..., 3]
    out = {
        "alpha_sad": matting.sad(pa, ga),
        "alpha_mse": matting.mse(pa, ga),
        "alpha_gradient": matting.gradient_error(pa, ga),
        "alpha_connectivity": matting.connectivity_error(pa, ga),
        "alpha_soft_iou": soft_iou(pa, ga),
        "fg_l1": alpha_weighted_l1(p, g, ga),
        **{f"mask_{k}": v for k, v in mask_metrics(pa, ga, threshold, threshold).items()},
        "bg_psnr_occluded": background_psnr_occluded(pred.canvas(), gt.canvas(), ga),
        "recomposition_psnr": recomposition_psnr(pred, gt),
    }
    for name, pred_idx, gt_idx in match_layers(pred, gt):
        pl, gl = pred.composite(pred_idx, background=False), gt.composite(gt_idx, background=False)
        out[f"layer/{name}/alpha_sad"] = matting.sad(pl[..., 3], gl[..., 3])
        out[f"layer/{name}/alpha_soft_iou"] = soft_iou(pl[..., 3], gl[..., 3])
        out[f"layer/{name}/fg_l1"] = alpha_weighted_l1(pl, gl, gl[..., 3])
    return out
