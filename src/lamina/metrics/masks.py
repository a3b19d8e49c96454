"""Binary mask metrics: the columns of FurryGAN's Table 2 (Bae et al., NeurIPS 2022).

IoU (foreground / background), mIoU, precision, recall, F1 and accuracy of a thresholded
predicted mask against a ground-truth mask. FurryGAN ships no evaluation code; its metric
set follows Labels4Free's ``test_customdata.py``, which builds one dataset-level 2x2
confusion matrix (``reduction="dataset"`` here). Per-image averaging is offered too.

Binarisation is strict: a pixel is foreground when its value is ``> threshold``. Labels4Free
counts only pure-white ground-truth pixels (value 255) as foreground; ``gt_threshold=254.5 / 255``
reproduces that.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import LayerError
from ._common import as_maps, check_same_shape

#: Keys of the dict returned by :func:`mask_metrics`.
MASK_KEYS = ("iou_fg", "iou_bg", "miou", "precision", "recall", "f1", "accuracy")


def confusion_counts(pred: Any, gt: Any, threshold: float = 0.5, gt_threshold: float | None = 0.5) -> np.ndarray:
    """Per-image pixel counts ``[N, 4]`` (``int64``): TP, FP, FN, TN of ``pred > threshold``
    against ``gt > gt_threshold`` (``gt_threshold=None``: the same ``threshold``).

    ``pred`` and ``gt`` are masks ``[H, W]`` or ``[N, H, W]`` in ``[0, 1]`` (soft, binary,
    ``bool`` or ``uint8``), NumPy or torch; see :func:`mask_metrics`.
    """
    p, g = as_maps(pred, "predicted mask"), as_maps(gt, "ground-truth mask")
    check_same_shape(p, g, "predicted mask", "ground-truth mask")
    if p.ndim not in (2, 3):
        raise LayerError(f"masks must be [H, W] or [N, H, W], got shape {tuple(p.shape)}")
    n = 1 if p.ndim == 2 else p.shape[0]
    p = p.reshape(n, -1) > threshold
    g = g.reshape(n, -1) > (threshold if gt_threshold is None else gt_threshold)
    tp = np.count_nonzero(p & g, axis=1)
    fp = np.count_nonzero(p & ~g, axis=1)
    fn = np.count_nonzero(~p & g, axis=1)
    tn = p.shape[1] - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def scores_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`MASK_KEYS` scores from TP, FP, FN, TN counts ``[..., 4]`` (one score per row).

    A ratio whose denominator is 0 is 1.0 when prediction and ground truth agree on every
    pixel (``FP + FN == 0``, e.g. both masks empty) and 0.0 otherwise.
    """
    tp, fp, fn, tn = (counts[..., i].astype(np.float64) for i in range(4))
    perfect = (fp + fn == 0).astype(np.float64)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den > 0, num / np.maximum(den, 1.0), perfect)

    iou_fg, iou_bg = ratio(tp, tp + fp + fn), ratio(tn, tn + fp + fn)
    return {
        "iou_fg": iou_fg,
        "iou_bg": iou_bg,
        "miou": (iou_fg + iou_bg) / 2.0,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def mask_metrics(
    pred: Any,
    gt: Any,
    threshold: float = 0.5,
    gt_threshold: float | None = 0.5,
    reduction: Literal["dataset", "image"] = "dataset",
) -> dict[str, float]:
    """FurryGAN Table 2 mask metrics of ``pred > threshold`` against ``gt > gt_threshold``.

    Args:
        pred: predicted masks ``[H, W]`` or ``[N, H, W]`` in ``[0, 1]`` (soft or binary; ``bool``,
            ``uint8``/``uint16`` rescaled; torch ``[N, 1, H, W]`` and NumPy ``[N, H, W, 1]`` too).
        gt: ground-truth masks of the same shape.
        threshold: foreground is ``pred > threshold`` (FurryGAN uses 0.5, Labels4Free 0.9).
        gt_threshold: foreground of the ground truth is ``gt > gt_threshold``, default 0.5
            whatever ``threshold`` is; ``None`` uses ``threshold``.
        reduction: ``"dataset"`` accumulates TP/FP/FN/TN over all pixels of all images and
            computes each score once (Labels4Free's protocol); ``"image"`` computes the scores
            per image and averages them.
    Returns:
        ``{"iou_fg", "iou_bg", "miou", "precision", "recall", "f1", "accuracy"}``, each in
        ``[0, 1]``. IoU is ``TP / (TP + FP + FN)`` (background IoU swaps TP and TN), mIoU is
        the mean of the two IoUs, F1 is ``2 TP / (2 TP + FP + FN)``. An empty denominator
        (e.g. an empty union) gives 1.0 when the masks agree everywhere, 0.0 otherwise.
    """
    counts = confusion_counts(pred, gt, threshold, gt_threshold)
    if reduction == "dataset":
        scores = scores_from_counts(counts.sum(axis=0))
    elif reduction == "image":
        scores = {k: v.mean() for k, v in scores_from_counts(counts).items()}
    else:
        raise LayerError(f"reduction must be 'dataset' or 'image', got {reduction!r}")
    return {k: float(v) for k, v in scores.items()}
