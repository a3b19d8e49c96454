"""Alpha matte errors of the alphamatting.com benchmark (Rhemann et al., CVPR 2009).

SAD, MSE, gradient and connectivity error, computed as in the evaluation code of
Deep Image Matting (Xu et al. 2017, Composition-1k), which later matting papers reuse:

* alphas are in ``[0, 1]`` (the Matlab code divides 8-bit mattes by 255);
* the errors are summed over the evaluated region of one image; SAD, gradient and
  connectivity are customarily reported divided by 1000 (``scale=1e-3``, the default here),
  MSE is a mean and is not scaled;
* the region is the unknown area of a trimap when one is given, the whole image otherwise.

Each function takes ``pred`` and ``gt`` alphas ``[H, W]`` or a batch ``[N, H, W]`` (NumPy,
or torch ``[N, 1, H, W]``) and returns the error of one image, or its mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import LayerError
from ._common import as_maps, broadcast_region, check_same_shape, to_numpy

Region = Any  # trimap or boolean mask, see _region


def _batch(pred: Any, gt: Any, trimap: Region | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``float32`` alphas ``[N, H, W]`` and the bool region ``[N, H, W]`` to evaluate."""
    p, g = as_maps(pred, "predicted alpha"), as_maps(gt, "ground-truth alpha")
    check_same_shape(p, g, "predicted alpha", "ground-truth alpha")
    if p.ndim not in (2, 3):
        raise LayerError(f"alphas must be [H, W] or [N, H, W], got shape {tuple(p.shape)}")
    p, g = p.reshape((-1,) + p.shape[-2:]), g.reshape((-1,) + g.shape[-2:])
    return p, g, _region(trimap, p.shape)


def _region(trimap: Region | None, shape: tuple[int, ...]) -> np.ndarray:
    """Where to evaluate: all pixels, a bool mask as given, or the unknown area of a trimap.

    The unknown area is where the trimap is strictly between 0 and 1 (128 of a ``uint8``
    trimap, 0.5 of a float one).
    """
    if trimap is None:
        return np.ones(shape, bool)
    maps = as_maps(trimap, "trimap")
    region = maps > 0.0 if to_numpy(trimap, "trimap").dtype == np.bool_ else (maps > 0.0) & (maps < 1.0)
    return broadcast_region(region, shape, "trimap")


def _per_image(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float], pred: Any, gt: Any, trimap: Region | None
               ) -> float:
    p, g, region = _batch(pred, gt, trimap)
    return float(np.mean([fn(pi, gi, ri) for pi, gi, ri in zip(p, g, region, strict=True)]))


def sad(pred: Any, gt: Any, trimap: Region | None = None, scale: float = 1e-3) -> float:
    """Sum of absolute differences ``scale * sum |pred - gt|`` over the region (Rhemann et al. 2009).

    The default ``scale=1e-3`` gives the customary "SAD / 1000"; pass ``scale=1`` for the raw sum.
    ``trimap``: evaluate only its unknown area (values strictly between 0 and 1), or a ``bool``
    region mask; ``None`` evaluates the whole image.
    """
    return _per_image(lambda p, g, r: scale * float(np.abs(p - g)[r].sum(dtype=np.float64)), pred, gt, trimap)


def mse(pred: Any, gt: Any, trimap: Region | None = None) -> float:
    """Mean squared error of the alphas over the region (``nan`` for an empty region)."""

    def one(p: np.ndarray, g: np.ndarray, r: np.ndarray) -> float:
        return float(np.square(p - g)[r].mean(dtype=np.float64)) if r.any() else float("nan")

    return _per_image(one, pred, gt, trimap)


def gaussian_gradient_kernels(sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """The x and y first-order Gaussian derivative filters of the matting gradient error.

    As in ``gaussgradient.m`` used by the benchmark code: the kernel ``g(y) g'(x)`` is cut at
    ``ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma 0.01)))`` pixels (4 for sigma 1.4, a 9x9 kernel)
    and scaled to unit L2 norm. Returns ``(hx, hy)`` with ``hy = hx.T``.
    """
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * 1e-2))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * np.sqrt(2.0 * np.pi))
    hx = np.outer(gauss, -u * gauss / sigma**2)
    hx /= np.sqrt(np.square(hx).sum())
    return hx, hx.T


def gradient_error(pred: Any, gt: Any, trimap: Region | None = None, sigma: float = 1.4, scale: float = 1e-3) -> float:
    """Gradient error ``scale * sum (|grad pred| - |grad gt|)^2`` over the region (Rhemann et al. 2009).

    Gradients are convolutions with :func:`gaussian_gradient_kernels` (edge pixels replicated).
    ``scale=1e-3`` is the customary "/ 1000". Unlike the Matlab code, the alphas are not
    min-max rescaled first (``mat2gray``); the two agree for mattes spanning 0 to 1.
    """
    hx, hy = gaussian_gradient_kernels(sigma)

    def magnitude(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return np.hypot(ndimage.convolve(a, hx, mode="nearest"), ndimage.convolve(a, hy, mode="nearest"))

    def one(p: np.ndarray, g: np.ndarray, r: np.ndarray) -> float:
        return scale * float(np.square(magnitude(p) - magnitude(g))[r].sum())

    return _per_image(one, pred, gt, trimap)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (ties: the first in row-major order)."""
    labels, count = ndimage.label(mask)  # the default structure is 4-connectivity in 2-D
    if count == 0:
        return np.zeros_like(mask)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def connectivity_phi(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel connectivity degrees ``(phi_pred, phi_gt)`` of two ``[H, W]`` alphas in ``[0, 1]``.

    For thresholds ``t = step, 2 step, ..., 1``, take the largest 4-connected component of
    ``(pred >= t) & (gt >= t)``; a pixel's level ``l`` is the last threshold at which it was
    still in that component (0 if never, 1 if always). With ``d = alpha - l``,
    ``phi = 1 - d * [d >= 0.15]``. Comparisons run in ``float32``.
    """
    thresholds = np.round(np.arange(0.0, 1.0 + step / 2, step), 12).astype(np.float32)
    level = np.full(pred.shape, -1.0, np.float32)
    for previous, t in zip(thresholds[:-1], thresholds[1:], strict=True):
        lost = (level < 0) & ~_largest_component((pred >= t) & (gt >= t))
        level[lost] = previous
    level[level < 0] = 1.0

    def phi(a: np.ndarray) -> np.ndarray:
        d = a.astype(np.float32) - level
        return 1.0 - d * (d >= np.float32(0.15))

    return phi(pred), phi(gt)


def connectivity_error(
    pred: Any, gt: Any, trimap: Region | None = None, step: float = 0.1, scale: float = 1e-3
) -> float:
    """Connectivity error ``scale * sum |phi_pred - phi_gt|`` over the region (Rhemann et al. 2009).

    See :func:`connectivity_phi` for ``phi``; ``scale=1e-3`` is the customary "/ 1000".
    """
    if not 0.0 < step <= 1.0:
        raise LayerError(f"connectivity step must be in (0, 1], got {step}")

    def one(p: np.ndarray, g: np.ndarray, r: np.ndarray) -> float:
        phi_p, phi_g = connectivity_phi(p, g, step)
        return scale * float(np.abs(phi_p - phi_g)[r].sum(dtype=np.float64))

    return _per_image(one, pred, gt, trimap)
