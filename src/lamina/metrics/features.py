"""Pluggable feature networks for FID/KID (:func:`lamina.metrics.fid_kid`).

A feature network is any ``torch.nn.Module`` that maps a batch of RGB images ``uint8``
``[N, 3, H, W]`` to features ``[N, D]``, with an integer attribute ``num_features = D``. That
is the protocol of torchmetrics' ``FrechetInceptionDistance(feature=module)`` and
``KernelInceptionDistance(feature=module)`` too (without ``num_features`` torchmetrics
probes the module with a random 299x299 image), so these modules plug in there as well.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayerError


class FeatureNetwork(nn.Module):
    """Base class: a frozen feature extractor that never leaves evaluation mode.

    Subclasses set ``num_features`` and implement :meth:`features` on float images in ``[0, 1]``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def train(self, mode: bool = True) -> FeatureNetwork:  # always eval: keeps BatchNorm statistics fixed
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` ``[N, 3, H, W]`` (or float in ``[0, 1]``) -> ``float32`` ``[N, num_features]``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise LayerError(f"feature network: expected RGB images [N, 3, H, W], got shape {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.features(x)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RandomConvFeatures(FeatureNetwork):
    """Two fixed random 3x3 convolutions and a global average pool: ``dim`` features.

    Deterministic for a given ``seed`` and cheap at any image size; for tests and offline sanity
    checks only. Its FID/KID values are not comparable with Inception-based numbers.
    """

    def __init__(self, dim: int = 64, seed: int = 0, hidden: int = 32) -> None:
        super().__init__(dim)
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, hidden, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, dim, 3, stride=2, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(images * 2.0 - 1.0))
        return self.conv2(x).mean(dim=(2, 3))
