"""Automatic mode: find the salient object(s) of a photo without any weights.

``lamina decompose photo.jpg --out x.psd`` with no box, mask or prompt: this module proposes
the object's box, and the usual chain (:func:`~lamina.layeringdiff.foreground.foreground_from_box`:
GrabCut -> trimap -> matting, or SAM when the user gives one) does the rest.

The saliency map (:func:`saliency_map`) is classical and parameter-light, computed on a copy
of at most :attr:`SaliencyConfig.work_side` px:

* **spectral residual** (Hou & Zhang, CVPR 2007): the log-amplitude spectrum minus its local
  mean, back to the image plane with the original phase, squared and blurred; it marks what
  does not repeat (an object on a regular or smooth background);
* **colour contrast with a border prior** (in the spirit of Wei et al., ECCV 2012, "geodesic
  saliency using background priors"; here a plain colour distance): photographers rarely cut
  the subject at every edge, so the colours of the image border model the background; a pixel's
  saliency is its CIELAB distance to the nearest of ``border_clusters`` k-means centres of the
  border colours;
* both normalised to ``[0, 1]``, averaged with weights ``(spectral_weight, 1 - spectral_weight)``,
  then multiplied by a wide centre prior (Gaussian, ``centre_sigma`` of the image size).

:func:`salient_boxes` thresholds the map (Otsu), keeps the connected component with the most
saliency mass, and returns its box grown by ``box_margin`` (GrabCut needs some background inside
the box's border). For several objects (``count``), each further box comes from the next
component. How good this is on held-out scenes is measured by ``benchmarks/bench_auto.py``
(README, "Automatic mode"); it is a fallback for when no hint is given, not a segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import LaminaError
from ..layers import as_float_image
from ._util import import_cv2

#: An image whose channels vary less than this (standard deviation) has nothing to find.
FLAT_STD = 1e-3


@dataclass(frozen=True)
class SaliencyConfig:
    """Options of the automatic object finder.

    Attributes:
        work_side: the map is computed on a copy downscaled to at most this side (px).
        spectral_side: side of the square the spectral residual runs at (Hou & Zhang use 64).
        spectral_weight: weight of the spectral residual in the map (the rest: colour contrast).
        border_width: width of the border strip modelling the background, in fractions of the side.
        border_clusters: k-means centres of the border colours.
        centre_sigma: standard deviation of the centre prior, in fractions of the image side.
        box_margin: the box is grown by this fraction of its size on every side (clipped to the image).
        min_area: components smaller than this fraction of the image are ignored.
    """

    work_side: int = 160
    spectral_side: int = 64
    spectral_weight: float = 0.3
    border_width: float = 0.06
    border_clusters: int = 4
    centre_sigma: float = 0.35
    box_margin: float = 0.08
    min_area: float = 0.002

    def __post_init__(self) -> None:
        if self.work_side < 16 or self.spectral_side < 8:
            raise LaminaError(f"SaliencyConfig: work_side >= 16 and spectral_side >= 8, got {self.work_side}, "
                              f"{self.spectral_side}")
        if not 0.0 <= self.spectral_weight <= 1.0 or not 0.0 < self.border_width < 0.5:
            raise LaminaError("SaliencyConfig: spectral_weight in [0, 1] and border_width in (0, 0.5)")
        if self.border_clusters < 1 or self.centre_sigma <= 0 or self.box_margin < 0 or self.min_area < 0:
            raise LaminaError("SaliencyConfig: border_clusters >= 1, centre_sigma > 0, box_margin >= 0, min_area >= 0")


def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x, np.float32) if hi - lo < 1e-12 else ((x - lo) / (hi - lo)).astype(np.float32)


def spectral_residual(grey: np.ndarray, side: int = 64) -> np.ndarray:
    """Hou & Zhang's spectral-residual saliency of a grey image ``[H, W]``, at ``side`` px, back at ``[H, W]``."""
    cv2 = import_cv2()
    h, w = grey.shape
    small = cv2.resize(grey.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, size=3, mode="wrap")
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = ndimage.gaussian_filter(saliency, sigma=side / 32)
    return _normalise(cv2.resize(saliency.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR))


def border_contrast(rgb: np.ndarray, width: float = 0.06, clusters: int = 4) -> np.ndarray:
    """Each pixel's CIELAB distance to the nearest k-means centre of the border's colours, ``[H, W]`` in [0, 1]."""
    cv2 = import_cv2()
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2LAB)
    bh, bw = max(1, round(h * width)), max(1, round(w * width))
    border = np.concatenate([lab[:bh].reshape(-1, 3), lab[-bh:].reshape(-1, 3),
                             lab[:, :bw].reshape(-1, 3), lab[:, -bw:].reshape(-1, 3)])
    k = min(clusters, len(border))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(border.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    distance = np.min(np.linalg.norm(lab[:, :, None, :] - centres[None, None], axis=3), axis=2)
    return _normalise(ndimage.gaussian_filter(distance, sigma=max(h, w) / 100))


def saliency_map(image: Any, config: SaliencyConfig | None = None) -> np.ndarray:
    """Saliency ``float32`` ``[h, w]`` in ``[0, 1]`` of an RGB image, at the working size (module docstring)."""
    cv2 = import_cv2()
    c = config or SaliencyConfig()
    rgb = as_float_image(image, "image", channels=(3,))
    h, w = rgb.shape[:2]
    scale = min(1.0, c.work_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = rgb.shape[:2]
    grey = rgb.mean(axis=2)
    combined = (c.spectral_weight * spectral_residual(grey, c.spectral_side)
                + (1.0 - c.spectral_weight) * border_contrast(rgb, c.border_width, c.border_clusters))
    yy, xx = np.mgrid[0:sh, 0:sw]
    centre = np.exp(-(((yy - (sh - 1) / 2) / (c.centre_sigma * sh)) ** 2
                      + ((xx - (sw - 1) / 2) / (c.centre_sigma * sw)) ** 2) / 2)
    return _normalise(combined * centre)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in ``[0, 1]`` (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega, mu = np.cumsum(p), np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1.0 - omega), 1e-12)
    return float(edges[int(np.argmax(between)) + 1])


def salient_boxes(image: Any, count: int = 1, config: SaliencyConfig | None = None) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` (exclusive end, full-resolution pixels) of the ``count`` most salient objects.

    Ordered by saliency mass, largest first. Fewer boxes come back when the map has fewer
    components; at least one (the map's thresholded bounding box) unless the map is flat,
    which raises :class:`LaminaError` (nothing stands out: give a --box, --mask or --prompt).
    """
    c = config or SaliencyConfig()
    rgb = as_float_image(image, "image", channels=(3,))
    h, w = rgb.shape[:2]
    if float(rgb.std(axis=(0, 1)).max()) < FLAT_STD:
        raise LaminaError("automatic mode found nothing that stands out in the image (it is flat); give a --box, "
                          "--mask or --prompt")
    saliency = saliency_map(rgb, c)
    sh, sw = saliency.shape
    if float(saliency.max()) <= 0.0:
        raise LaminaError("automatic mode found nothing that stands out in the image; give a --box, --mask or "
                          "--prompt")
    found = saliency > _otsu(saliency)
    found = ndimage.binary_opening(found, iterations=1) if found.sum() > 16 else found
    labels, n = ndimage.label(found)
    if n == 0:
        labels, n = ndimage.label(saliency >= saliency.max() * 0.5)
    mass = ndimage.sum(saliency, labels, index=np.arange(1, n + 1))
    sizes = ndimage.sum(np.ones_like(saliency), labels, index=np.arange(1, n + 1))
    order = [i + 1 for i in np.argsort(-mass) if sizes[i] >= c.min_area * sh * sw] or [int(np.argmax(mass)) + 1]
    boxes = []
    for label in order[:count]:
        rows, cols = np.nonzero(labels == label)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        my, mx = c.box_margin * (y1 - y0), c.box_margin * (x1 - x0)
        box = (int(np.floor(max(0.0, (x0 - mx) * w / sw))), int(np.floor(max(0.0, (y0 - my) * h / sh))),
               int(np.ceil(min(float(w), (x1 + mx) * w / sw))), int(np.ceil(min(float(h), (y1 + my) * h / sh))))
        if box == (0, 0, w, h):  # GrabCut needs background outside the box
            box = (max(1, w // 50), max(1, h // 50), w - max(1, w // 50), h - max(1, h // 50))
        boxes.append(box)
    return boxes
