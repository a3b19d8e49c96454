"""FID and KID through torchmetrics, with a pluggable feature network.

FID (Heusel et al., NeurIPS 2017) is the Frechet distance between Gaussians fitted to the
features of real and generated images; KID (Binkowski et al., ICLR 2018) is the unbiased
squared MMD with the cubic polynomial kernel ``(x.y / D + 1)^3``, averaged over random
subsets. Each image set runs through the feature network once; torchmetrics'
``FrechetInceptionDistance`` and ``KernelInceptionDistance`` then compute the scores from
those features, in float64.

Images: a torch tensor ``[N, 3, H, W]`` or NumPy array ``[N, H, W, 3]`` (one image without
the ``N`` axis), ``uint8`` or float in ``[0, 1]`` (rounded to ``uint8`` as when saved to PNG);
a :class:`~lamina.layers.LayeredImage` (its RGB composite); or an iterable of any of these,
e.g. a list of images or a loader of batches. Scores are in feature units: only compare
numbers computed with the same feature network.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LayerError
from ..layers import LayeredImage, to_uint8
from ._common import as_unit
from .inception import InceptionV3Features

Images = Any  # see the module docstring


def _uint8_batch(item: Any) -> torch.Tensor:
    """One item of an image set -> ``uint8`` ``[B, 3, H, W]``."""
    if isinstance(item, LayeredImage):
        item = item.composite()[None, :, :, :3]
    if isinstance(item, torch.Tensor):
        batch = item[None] if item.ndim == 3 else item
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise LayerError(f"expected RGB image tensors [N, 3, H, W], got shape {tuple(item.shape)}")
        if batch.dtype == torch.uint8:
            return batch.cpu()
        return torch.from_numpy(to_uint8(as_unit(batch, "image batch")))
    if isinstance(item, np.ndarray):
        batch = item[None] if item.ndim == 3 else item
        if batch.ndim != 4 or batch.shape[3] != 3:
            raise LayerError(f"expected RGB image arrays [N, H, W, 3], got shape {tuple(item.shape)}")
        if batch.dtype != np.uint8:
            batch = to_uint8(as_unit(batch, "image batch"))
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    raise LayerError(f"expected images as a tensor, array or LayeredImage, got {type(item).__name__}")


def iter_image_batches(images: Images, batch_size: int = 50) -> Iterator[torch.Tensor]:
    """Yield ``uint8`` ``[B, 3, H, W]`` batches of at most ``batch_size`` same-size images."""
    if batch_size < 1:
        raise LayerError(f"batch_size must be at least 1, got {batch_size}")
    items: Iterable[Any] = [images] if isinstance(images, (torch.Tensor, np.ndarray, LayeredImage)) else images
    pending: list[torch.Tensor] = []
    count = 0
    for item in items:
        batch = _uint8_batch(item)
        if pending and batch.shape[1:] != pending[0].shape[1:]:
            yield torch.cat(pending)
            pending, count = [], 0
        pending.append(batch)
        count += len(batch)
        if count >= batch_size:
            merged, full = torch.cat(pending), count - count % batch_size
            yield from merged[:full].split(batch_size)
            pending, count = [merged[full:]] if full < count else [], count - full
    if pending:
        yield torch.cat(pending)


def extract_features(images: Images, network: nn.Module, batch_size: int = 50,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """Features ``float64`` ``[N, D]`` of an image set (see the module docstring for ``images``).

    ``network`` maps ``uint8`` ``[B, 3, H, W]`` to ``[B, D]``; it runs in eval mode without
    gradients (its previous mode is restored), moved to ``device`` when one is given (default:
    it stays where its parameters are).
    """
    if device is None:
        device = next(network.parameters(), torch.empty(0)).device
    else:
        network.to(device)
    was_training = network.training
    network.eval()
    features = []
    try:
        with torch.no_grad():
            for batch in iter_image_batches(images, batch_size):
                out = network(batch.to(device))
                if out.ndim != 2 or out.shape[0] != batch.shape[0]:
                    raise LayerError(f"feature network returned shape {tuple(out.shape)} for {batch.shape[0]} "
                                     "images; expected [N, D]")
                features.append(out.detach().to("cpu", torch.float64))
    finally:
        network.train(was_training)
    if not features:
        raise LayerError("the image set is empty")
    return torch.cat(features)


class _Precomputed(nn.Module):
    """Identity 'feature network' so torchmetrics works on features computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid_from_features(real: torch.Tensor, fake: torch.Tensor, kid_subset_size: int | None = None,
                          kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """FID and KID of two feature sets ``[N_real, D]`` and ``[N_fake, D]`` (see :func:`fid_kid`)."""
    from ..extras import require

    FrechetInceptionDistance = require("torchmetrics.image.fid", "eval").FrechetInceptionDistance
    KernelInceptionDistance = require("torchmetrics.image.kid", "eval").KernelInceptionDistance

    real, fake = real.to(torch.float64), fake.to(torch.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise LayerError(f"feature sets must be [N, D] with one D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    n = min(len(real), len(fake))
    subset = min(1000, n) if kid_subset_size is None else int(kid_subset_size)
    if n < 2 or not 2 <= subset <= n:
        raise LayerError(f"FID/KID need at least 2 images per set and 2 <= kid_subset_size <= {n}; got "
                         f"{len(real)} real, {len(fake)} fake, kid_subset_size={kid_subset_size}")
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Precomputed(dim))
    with warnings.catch_warnings():  # "KID will save all extracted features": it gets features, not images
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def _feature_network(feature: nn.Module | str | os.PathLike[str] | None) -> nn.Module:
    if isinstance(feature, nn.Module):
        return feature
    if feature is None or isinstance(feature, (str, os.PathLike)):
        return InceptionV3Features(feature)
    raise LayerError(f"feature must be an nn.Module, a weights path or None, got {type(feature).__name__}")


def fid_kid(
    real: Images,
    fake: Images,
    feature: nn.Module | str | os.PathLike[str] | None = None,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between a real and a generated image set.

    Args:
        real, fake: image sets (tensors, arrays, LayeredImages or iterables; module docstring).
        feature: the feature network (``uint8`` ``[B, 3, H, W]`` -> ``[B, D]``, e.g.
            :class:`~lamina.metrics.features.RandomConvFeatures` offline); a path to pytorch-fid's
            InceptionV3 weights; or ``None`` for :class:`InceptionV3Features` with the path in
            ``$LAMINA_INCEPTION_WEIGHTS``. Standard FID needs the Inception weights.
        kid_subset_size: images per KID subset; default ``min(1000, N_real, N_fake)``.
        kid_subsets: number of KID subsets (100, as torch-fidelity and torchmetrics).
        batch_size: images per forward pass of the feature network.
        device: where the network runs (it is moved there); default where its parameters are.
        seed: seeds the KID subset draws, so results are reproducible.
    Returns:
        ``{"fid", "kid_mean", "kid_std"}``; FID needs at least 2 images per set and is only
        meaningful with many more (thousands for Inception, more than ``D``).
    """
    network = _feature_network(feature)
    real_features = extract_features(real, network, batch_size, device)
    fake_features = extract_features(fake, network, batch_size, device)
    return fid_kid_from_features(real_features, fake_features, kid_subset_size, kid_subsets, seed)
