"""Self-similar completion of the hidden background's high frequencies (parameter-free; **our addition**).

Under an opaque object no pixel of the composite shows the background, so FBDD's completion
there is only as sharp as its working size allows, and a 64 px UNet blurs the edges of a
checker, tile or stripe pattern it must continue under the object (``benchmarks/RESULTS.md``:
most of the remaining background error is such mid-frequency structure). A regular texture
shows the same structure elsewhere in the image, one period away. Following the statistics of
patch offsets for image completion (He & Sun, ECCV 2012), in a simple form:

1. ``h``, the high-pass of the visible background: ``I - G_s * (V I) / G_s * V`` on the visible
   pixels ``V`` (outside the layer, grown by a pixel), a Gaussian of ``s`` =
   ``sigma`` times the window side (4 px at 64 px).
2. For every offset ``d`` (between ``min_offset`` and ``max_offset`` of the window side per
   axis), the mismatch of the texture with itself moved by ``d``, over the pixels visible at
   both ends: ``r(d) = sum |h(p) - h(p + d)|^2 / (sum (|h(p)|^2 + |h(p + d)|^2) / 2)``, all offsets
   at once by FFT correlation. ``r`` is 0 for a texture that repeats exactly with period ``d``,
   about 1 for unrelated content.
3. Hidden pixels (layer alpha at least ``opaque``) take ``h`` from ``p + k d`` (``k`` = 1, -1,
   2, -2, 3, -3) for the ``top_k`` best offsets with ``r < max_mismatch``, best first, wherever that
   source is visible; the background there becomes ``G_s * B + h`` (FBDD's low frequencies, the
   image's own high ones). A background with no offset below ``max_mismatch`` (no repeating
   pattern) is left as it is.

A window larger than ``max_side`` px is completed on a copy resized to it, and the change
upsampled: the FFTs cost about a second at 512 px on one CPU core and grow with the square of
the side (a large object in a 4,000 px photo would otherwise take a minute).

:class:`~lamina.layeringdiff.fbdd.FBDDDecomposer` applies it in the window the UNet saw, after
the layers are attached and projected, then projects again, so the layers still recompose the
image exactly. The defaults were chosen on validation scenes (seeds 8e8), not on the benchmark's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage

from ..errors import LaminaError
from ..tensors import resize_array

#: Offset multiples tried per offset, in this order.
MULTIPLES = (1, -1, 2, -2, 3, -3)


@dataclass(frozen=True)
class SelfSimilarConfig:
    """Parameters of :func:`complete_high_frequencies`; lengths are fractions of the window side."""

    sigma: float = 1.0 / 16.0  # Gaussian of the high-pass (4 px at 64 px)
    min_offset: float = 1.0 / 32.0  # offsets shorter than this on both axes are not periods
    max_offset: float = 3.0 / 8.0  # largest offset per axis
    min_overlap: float = 0.15  # least share of the window visible at both ends of an offset
    max_mismatch: float = 0.3  # r(d) above this: not a repeat
    top_k: int = 16  # offsets used, best first
    visible_below: float = 0.02  # layer alpha under this (and a pixel away from more) is visible
    opaque: float = 0.98  # layer alpha from which the background is hidden and completed
    max_side: int = 512  # px: a larger window is completed at this size (FFT cost) and the change upsampled

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and 0 < self.min_offset <= self.max_offset and 0 <= self.min_overlap <= 1
                and self.max_mismatch >= 0 and self.top_k >= 1 and 0 <= self.visible_below < self.opaque <= 1
                and self.max_side >= 8):
            raise LaminaError(f"invalid SelfSimilarConfig {self}: needs sigma > 0, 0 < min_offset <= max_offset, "
                              "min_overlap in [0, 1], max_mismatch >= 0, top_k >= 1, "
                              "0 <= visible_below < opaque <= 1, max_side >= 8")


#: The defaults, chosen on validation scenes (``FBDDDecomposer``'s default).
DEFAULT_SELF_SIMILAR = SelfSimilarConfig()


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``C[H - 1 + dy, W - 1 + dx] = sum_p a(p) b(p + d)`` for ``a``, ``b`` ``[H, W]``: ``[2H - 1, 2W - 1]``.

    The same operations as ``scipy.signal.fftconvolve(b, a[::-1, ::-1], mode="full")`` (bit-identical, tested),
    without importing ``scipy.signal`` (about 1 CPU s, most of it ``scipy.stats``)."""
    shape = [b.shape[i] + a.shape[i] - 1 for i in range(2)]
    padded = [fft.next_fast_len(n, True) for n in shape]
    spectrum = fft.rfftn(b, padded) * fft.rfftn(a[::-1, ::-1], padded)
    return fft.irfftn(spectrum, padded)[: shape[0], : shape[1]]


def high_pass(image: np.ndarray, visible: np.ndarray, sigma_px: float) -> np.ndarray:
    """``[H, W, 3]`` high frequencies of ``image`` over the ``visible`` ``[H, W]`` pixels (zero elsewhere)."""
    weight = visible.astype(np.float32)
    low = ndimage.gaussian_filter(image * weight[:, :, None], (sigma_px, sigma_px, 0), mode="nearest")
    norm = ndimage.gaussian_filter(weight, sigma_px, mode="nearest")
    return (image - low / np.maximum(norm, 1e-3)[:, :, None]) * weight[:, :, None]


def offset_mismatch(h: np.ndarray, visible: np.ndarray, min_overlap_px: float) -> np.ndarray:
    """``r(d)`` of ``h`` ``[H, W, 3]``: ``[2H - 1, 2W - 1]``, offset ``d`` at ``[H - 1 + dy, W - 1 + dx]``.

    ``inf`` where fewer than ``min_overlap_px`` pixels are visible at both ends, or ``h`` is zero there.
    """
    v = visible.astype(np.float64)
    energy = (h.astype(np.float64) ** 2).sum(axis=2)
    overlap = np.rint(_correlate(v, v))  # pixel counts (FFT rounding aside)
    s1, s2 = _correlate(energy, v), _correlate(v, energy)
    h64 = h.astype(np.float64)
    cross = sum(_correlate(h64[:, :, c], h64[:, :, c]) for c in range(h.shape[2]))
    power = 0.5 * (s1 + s2)
    ok = (overlap >= min_overlap_px) & (power > 1e-9 * max(float(energy.sum()), 1e-12))
    return np.where(ok, (s1 + s2 - 2.0 * cross) / np.where(ok, power, 1.0), np.inf)


def best_offsets(mismatch: np.ndarray, min_px: int, max_px: int, max_mismatch: float,
                 top_k: int) -> list[tuple[int, int]]:
    """The ``top_k`` offsets ``(dy, dx)`` of lowest mismatch below ``max_mismatch``, best first."""
    cy, cx = (mismatch.shape[0] - 1) // 2, (mismatch.shape[1] - 1) // 2
    dy, dx = np.meshgrid(np.arange(-cy, cy + 1), np.arange(-cx, cx + 1), indexing="ij")
    r = np.where((np.maximum(abs(dy), abs(dx)) >= min_px) & (abs(dy) <= max_px) & (abs(dx) <= max_px),
                 mismatch, np.inf)
    flat = r.ravel()
    order = np.argsort(flat, kind="stable")[:top_k]
    return [(int(dy.flat[i]), int(dx.flat[i])) for i in order if flat[i] < max_mismatch]


def complete_high_frequencies(image: np.ndarray, background: np.ndarray, alpha: np.ndarray,
                              config: SelfSimilarConfig = DEFAULT_SELF_SIMILAR) -> tuple[np.ndarray, int]:
    """The background with its hidden high frequencies copied from where the image repeats itself.

    Args:
        image: ``[H, W, 3]`` the composite in ``[0, 1]``.
        background: ``[H, W, 3]`` the completed background in ``[0, 1]``.
        alpha: ``[H, W]`` the foreground layer's alpha (object and effects) in ``[0, 1]``.

    Returns:
        The new background ``[H, W, 3]`` (``float32`` in ``[0, 1]``; only pixels with ``alpha >=
        config.opaque`` change) and the number of offsets used (0: no repeating pattern found,
        the background is returned unchanged).
    """
    h_px, w_px = alpha.shape
    side = max(h_px, w_px)
    if side > config.max_side:  # a large window: complete a smaller copy, add its upsampled change
        return _complete_downscaled(image, background, alpha, config)
    hidden = alpha >= config.opaque
    visible = ~ndimage.binary_dilation(alpha > config.visible_below)
    if not hidden.any() or not visible.any():
        return background, 0
    sigma_px = config.sigma * side
    h = high_pass(image.astype(np.float32), visible, sigma_px)
    mismatch = offset_mismatch(h, visible, config.min_overlap * h_px * w_px)
    offsets = best_offsets(mismatch, max(1, round(config.min_offset * side)), round(config.max_offset * side),
                           config.max_mismatch, config.top_k)
    if not offsets:
        return background, 0
    ys, xs = np.nonzero(hidden)
    filled = np.zeros(ys.shape, bool)
    detail = np.zeros((ys.size, 3), np.float32)
    for dy, dx in offsets:
        for k in MULTIPLES:
            sy, sx = ys + k * dy, xs + k * dx
            take = ~filled & (sy >= 0) & (sy < h_px) & (sx >= 0) & (sx < w_px)
            take[take] &= visible[sy[take], sx[take]]
            detail[take] = h[sy[take], sx[take]]
            filled |= take
    low = ndimage.gaussian_filter(background, (sigma_px, sigma_px, 0), mode="nearest")
    out = background.astype(np.float32, copy=True)
    ys, xs = ys[filled], xs[filled]
    out[ys, xs] = np.clip(low[ys, xs] + detail[filled], 0.0, 1.0)
    return out, len(offsets)


def _complete_downscaled(image: np.ndarray, background: np.ndarray, alpha: np.ndarray,
                         config: SelfSimilarConfig) -> tuple[np.ndarray, int]:
    """:func:`complete_high_frequencies` at ``config.max_side``, its change upsampled onto the hidden pixels."""
    h_px, w_px = alpha.shape
    scale = config.max_side / max(h_px, w_px)
    size = (max(1, round(h_px * scale)), max(1, round(w_px * scale)))
    small_background = resize_array(background, size)
    small, used = complete_high_frequencies(resize_array(image, size), small_background, resize_array(alpha, size),
                                            config)
    if not used:
        return background, 0
    change = resize_array(small - small_background, (h_px, w_px))
    out = background.astype(np.float32, copy=True)
    hidden = alpha >= config.opaque
    out[hidden] = np.clip(out[hidden] + change[hidden], 0.0, 1.0)
    return out, used
