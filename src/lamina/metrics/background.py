"""Metrics of a completed background: ghosts of the removed object, and a local-feature perceptual error.

Images are channel-last ``[H, W, C]`` NumPy arrays in ``[0, 1]`` (``uint8`` rescaled); alphas
and masks ``[H, W]``. Both metrics are for one image; average them over a data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import LayerError
from ._common import as_images, as_maps, check_same_shape
from .features import RandomConvFeatures

#: Object and background colours closer than this (RGB Euclidean distance) do not tell a ghost from a fill error.
GHOST_MIN_CONTRAST = 0.15
#: Layer alpha above this belongs to the object (or its effects) when finding its footprint and colours.
GHOST_ALPHA_FLOOR = 0.01


def ghost_opacity(pred_bg: Any, gt_bg: Any, gt_layer: Any, radius: int | None = None,
                  min_contrast: float = GHOST_MIN_CONTRAST) -> float:
    """How much of the removed object is still visible in a predicted background: its mean leftover opacity.

    Definition. ``L`` is the ground-truth foreground layer ``[H, W, 4]`` (straight RGBA, the
    object over its effects), ``B*`` the true background, ``B`` the predicted one.

    * Footprint ``D``: the pixels with ``L``'s alpha ``> 0.01``, dilated by ``radius`` px
      (default ``max(2, min(H, W) // 64)``): everything the object, its soft edge and its effects
      touched, plus a margin.
    * Object colour ``c(p)``: ``L``'s colour at ``p``, or, where ``L`` is transparent (the margin),
      at the nearest pixel with alpha ``> 0.01``; ``m``: the mean of ``B*`` over ``D``.
    * Per pixel, the background error ``e = B(p) - B*(p)`` is projected on the direction from the
      background's mean colour to the object's colour, ``d = c(p) - m``:
      ``g(p) = clip(<e, d> / |d|^2, -1, 1)``. A ghost of opacity ``t``, ``B = t c + (1 - t) B*``,
      gives ``g`` about ``t`` (exactly ``t`` where ``B* = m``): 1 where ``B`` shows the object's
      colour outright, 0.3 for a 30 % ghost; an error unrelated to the object averages to 0.
    * ``ghost = mean of g over the pixels of D with |d| >= min_contrast`` (where the object's colour
      differs enough from the background to be seen).

    The mean is signed, so the random error of a fill (projections of either sign) averages
    out, while a ghost (``B`` pulled towards the object's colour) does not. ``d`` is taken from
    the mean ``m``, not from ``B*(p)``: otherwise the true background's own variation would
    appear in both ``e`` and ``d`` and make any smooth fill look like a ghost. It is
    "object-coloured energy" measured as opacity: ``ghost = 0.1`` is as if a tenth of the
    object were left in ``B``.

    Args:
        pred_bg, gt_bg: ``[H, W, 3]`` backgrounds in ``[0, 1]``.
        gt_layer: ``[H, W, 4]`` ground-truth foreground layer (straight RGBA).
        radius: dilation of the footprint in pixels (``None``: ``max(2, min(H, W) // 64)``).
        min_contrast: least ``|d|`` (RGB Euclidean) for a pixel to count.
    Returns:
        The mean leftover opacity in ``[-1, 1]`` (0 is perfect); ``nan`` when no pixel counts.
    """
    pred = as_images(pred_bg, "predicted background")[..., :3]
    gt = as_images(gt_bg, "ground-truth background")[..., :3]
    layer = as_images(gt_layer, "ground-truth layer")
    check_same_shape(pred, gt, "predicted background", "ground-truth background")
    if pred.ndim != 3 or layer.shape != (*gt.shape[:2], 4):
        raise LayerError(f"ghost_opacity: expected [H, W, 3] backgrounds and an [H, W, 4] layer, got "
                         f"{tuple(pred.shape)} and {tuple(layer.shape)}")
    covered = layer[..., 3] > GHOST_ALPHA_FLOOR
    if not covered.any():
        return float("nan")
    radius = max(2, min(gt.shape[:2]) // 64) if radius is None else int(radius)
    footprint = ndimage.binary_dilation(covered, iterations=radius) if radius > 0 else covered
    # Colour of the nearest covered pixel, for every pixel (the covered ones are their own nearest).
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    colour = layer[iy, ix, :3].astype(np.float64)
    d = colour - gt[footprint].mean(axis=0)
    e = pred.astype(np.float64) - gt
    norm2 = np.square(d).sum(axis=-1)
    counted = footprint & (norm2 >= min_contrast**2)
    if not counted.any():
        return float("nan")
    g = np.clip((e * d).sum(axis=-1)[counted] / norm2[counted], -1.0, 1.0)
    return float(g.mean())


class LocalFeatureDistance:
    """An LPIPS-like perceptual error from fixed random convolutional features, per pixel region.

    LPIPS (Zhang et al. 2018) compares unit-normalised deep features location by location. No
    trained network can be downloaded here, so the features are those of
    :class:`~lamina.metrics.features.RandomConvFeatures` (two fixed random 3x3 convolutions,
    stride 2 each) **without** its global pooling, on the image and on a half-size copy:
    at each feature location the channel vector is scaled to unit length, and the distance is
    the squared difference summed over channels (``[0, 4]``), averaged over the locations the
    region touches, then over the four maps (two layers, two scales). It responds to local
    texture and edges (a smear of a textured background scores high, a shift of flat colour
    low) but is not calibrated against human judgements like LPIPS: compare methods with it,
    not with published LPIPS values.
    """

    def __init__(self, seed: int = 0, dim: int = 64, hidden: int = 32) -> None:
        self.net = RandomConvFeatures(dim=dim, seed=seed, hidden=hidden)

    def _maps(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = image * 2.0 - 1.0
        first = F.relu(self.net.conv1(x))
        return [first, self.net.conv2(first)]

    @torch.no_grad()
    def __call__(self, a: Any, b: Any, mask: Any | None = None) -> float:
        """Distance of two images ``[H, W, 3]`` in ``[0, 1]`` over ``mask`` ``[H, W]`` (all pixels when ``None``).

        Returns ``nan`` for an empty mask.
        """
        x, y = as_images(a, "first image")[..., :3], as_images(b, "second image")[..., :3]
        check_same_shape(x, y, "first image", "second image")
        if x.ndim != 3:
            raise LayerError(f"LocalFeatureDistance: expected [H, W, 3] images, got {tuple(x.shape)}")
        region = np.ones(x.shape[:2], bool) if mask is None else as_maps(mask, "mask") > 0
        if region.shape != x.shape[:2]:
            raise LayerError(f"mask is {region.shape[1]}x{region.shape[0]} but the images are "
                             f"{x.shape[1]}x{x.shape[0]}")
        if not region.any():
            return float("nan")
        tx = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]
        ty = torch.from_numpy(np.ascontiguousarray(y, np.float32)).permute(2, 0, 1)[None]
        tm = torch.from_numpy(region.astype(np.float32))[None, None]
        scores = []
        for scale in (1, 2):
            if scale > 1:
                tx, ty = (F.avg_pool2d(t, scale) for t in (tx, ty))
                tm = F.max_pool2d(tm, scale)
            for fx, fy in zip(self._maps(tx), self._maps(ty), strict=True):
                fx = fx / fx.norm(dim=1, keepdim=True).clamp_min(1e-6)
                fy = fy / fy.norm(dim=1, keepdim=True).clamp_min(1e-6)
                where = F.adaptive_max_pool2d(tm, fx.shape[-2:]) > 0
                scores.append(float((fx - fy).square().sum(dim=1, keepdim=True)[where].mean()))
        return float(np.mean(scores))
