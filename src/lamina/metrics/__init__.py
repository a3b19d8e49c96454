"""Evaluation metrics of the papers lamina implements.

* :mod:`~lamina.metrics.masks`: FurryGAN Table 2 mask metrics (IoU fg/bg, mIoU, precision,
  recall, F1, accuracy).
* :mod:`~lamina.metrics.matting`: alphamatting.com SAD, MSE, gradient and connectivity errors.
* :mod:`~lamina.metrics.layers`: layer-decomposition metrics and :func:`evaluate_layers`.
* :mod:`~lamina.metrics.fid`: FID/KID through torchmetrics with a pluggable feature network
  (:mod:`~lamina.metrics.features`, :mod:`~lamina.metrics.inception`).

Inputs are NumPy arrays (channel-last) or torch tensors (channel-first) in ``[0, 1]``.
"""

from .features import FeatureNetwork, RandomConvFeatures
from .fid import extract_features, fid_kid, fid_kid_from_features
from .inception import WEIGHTS_ENV, FIDInceptionV3, InceptionV3Features
from .layers import (
    alpha_weighted_l1,
    background_psnr_occluded,
    evaluate_layers,
    match_layers,
    psnr,
    recomposition_psnr,
    soft_iou,
)
from .masks import MASK_KEYS, confusion_counts, mask_metrics
from .matting import connectivity_error, gradient_error, mse, sad

__all__ = [
    "FIDInceptionV3",
    "FeatureNetwork",
    "InceptionV3Features",
    "MASK_KEYS",
    "RandomConvFeatures",
    "WEIGHTS_ENV",
    "alpha_weighted_l1",
    "background_psnr_occluded",
    "confusion_counts",
    "connectivity_error",
    "evaluate_layers",
    "extract_features",
    "fid_kid",
    "fid_kid_from_features",
    "gradient_error",
    "mask_metrics",
    "match_layers",
    "mse",
    "psnr",
    "recomposition_psnr",
    "sad",
    "soft_iou",
]
