"""Metrics of a completed background: ghosts of the removed object (by colour and by structure), and a
local-feature perceptual error.

Images are channel-last ``[H, W, C]`` NumPy arrays in ``[0, 1]`` (``uint8`` rescaled); alphas
and masks ``[H, W]``. Each metric is for one image; average them over a data set.
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
#: The ghost metrics' footprint margin and high-pass width are the image's short side over this.
GHOST_SCALE = 64


def _ghost_inputs(pred_bg: Any, gt_bg: Any, gt_layer: Any, radius: int | None, name: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked ``(pred, gt, layer, covered, footprint)`` of the ghost metrics; ``footprint`` is ``None`` when empty.

    ``covered``: the layer's alpha ``> GHOST_ALPHA_FLOOR``; ``footprint``: that dilated by ``radius`` px
    (``None``: ``max(2, min(H, W) // GHOST_SCALE)``).
    """
    pred = as_images(pred_bg, "predicted background")[..., :3]
    gt = as_images(gt_bg, "ground-truth background")[..., :3]
    layer = as_images(gt_layer, "ground-truth layer")
    check_same_shape(pred, gt, "predicted background", "ground-truth background")
    if pred.ndim != 3 or layer.shape != (*gt.shape[:2], 4):
        raise LayerError(f"{name}: expected [H, W, 3] backgrounds and an [H, W, 4] layer, got "
                         f"{tuple(pred.shape)} and {tuple(layer.shape)}")
    covered = layer[..., 3] > GHOST_ALPHA_FLOOR
    if not covered.any():
        return pred, gt, layer, covered, None
    radius = max(2, min(gt.shape[:2]) // GHOST_SCALE) if radius is None else int(radius)
    footprint = ndimage.binary_dilation(covered, iterations=radius) if radius > 0 else covered
    return pred, gt, layer, covered, footprint


def ghost_structure(pred_bg: Any, gt_bg: Any, gt_layer: Any, radius: int | None = None,
                    sigma: float | None = None) -> float:
    """How much of the removed object's own picture is left in a predicted background, as an opacity.

    :func:`ghost_opacity` looks at colour, so a smooth fill's error already moves it by ±0.03 to 0.06
    per benchmark (``benchmarks/RESULTS.md``), as much as the ghosts it is meant to find. This one
    looks at structure: the object's outline and texture, which no fill of the background can make
    by chance.

    Definition. ``L = (F, a)`` is the ground-truth layer ``[H, W, 4]`` (straight RGBA), ``B*`` the true
    background with mean ``m`` over the footprint ``D`` (as in :func:`ghost_opacity`), ``B`` the predicted
    one, ``hp(x) = x - gaussian(x, sigma)`` a high-pass (default ``sigma = max(1, min(H, W) / 64)``).

    * The object's picture ``o = hp(a (F - m))``: what the object adds to the image, measured
      from the background's mean so that ``B*``'s own texture is not part of it.
    * The error ``e = hp(B - B*)``.
    * ``ghost = <e, o>_D / <o, o>_D``: the least-squares opacity of the object's picture in the error,
      over ``D`` and the channels.

    ``B = t I + (1 - t) B*`` (a ghost of opacity ``t``; ``I`` the composite) gives about ``t``:
    1 when nothing was removed, 0.3 for a 30 % ghost, a missed part counted by its share of the
    object's structure. An error uncorrelated with the object (a smooth or a wrongly textured fill)
    gives about 0. Effects without structure (a soft shadow) are not measured (``ghost_opacity`` is).

    Args:
        pred_bg, gt_bg: ``[H, W, 3]`` backgrounds in ``[0, 1]``.
        gt_layer: ``[H, W, 4]`` ground-truth foreground layer (straight RGBA).
        radius: dilation of the footprint in pixels (``None``: ``max(2, min(H, W) // 64)``).
        sigma: the high-pass's Gaussian in pixels (``None``: ``max(1, min(H, W) / 64)``).
    Returns:
        The opacity (0 is perfect, 1 is the whole object; not clipped); ``nan`` for a layer without
        structure in its footprint.
    """
    pred, gt, layer, _, footprint = _ghost_inputs(pred_bg, gt_bg, gt_layer, radius, "ghost_structure")
    if footprint is None:
        return float("nan")
    sigma = max(1.0, min(gt.shape[:2]) / GHOST_SCALE) if sigma is None else float(sigma)
    gt64 = gt.astype(np.float64)
    alpha = layer[..., 3:].astype(np.float64)
    mean = gt64[footprint].mean(axis=0)

    def high_pass(x: np.ndarray) -> np.ndarray:
        return x - ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0))

    picture = high_pass(alpha * (layer[..., :3].astype(np.float64) - mean))[footprint]
    error = high_pass(pred.astype(np.float64) - gt64)[footprint]
    energy = float(np.square(picture).sum())
    if energy <= 1e-12 * picture.size:
        return float("nan")
    return float((error * picture).sum() / energy)


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
    pred, gt, layer, covered, footprint = _ghost_inputs(pred_bg, gt_bg, gt_layer, radius, "ghost_opacity")
    if footprint is None:
        return float("nan")
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
