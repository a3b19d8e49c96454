"""FurryGAN (Bae, Kwon, Uh, ECCV 2022): foreground-aware image synthesis with coarse and fine masks.

A GAN whose generator draws a foreground, a background and an alpha mask, trained from
unlabelled images only; each sample converts to a two-layer :class:`lamina.LayeredImage`::

    from lamina.furrygan import FurryGANGenerator
    G = FurryGANGenerator.from_pretrained("run/pretrained")
    out = G(torch.randn(4, G.z_dim), truncation_psi=0.7)
    layered = out.to_layered(0)

Modules: :mod:`.config` (dataclass configs whose defaults are the official code's, presets),
:mod:`.networks` (generator, discriminator), :mod:`.losses` (Eq. 4-12), :mod:`.train`.
"""

from .config import PRESETS, ConfigError, FurryGANConfig, LossConfig, ModelConfig, TrainConfig, get_preset
from .losses import FakeBatch, FurryGANLoss
from .networks import (
    DiscriminatorOutput,
    ForegroundOutput,
    FurryGANDiscriminator,
    FurryGANGenerator,
    GeneratorOutput,
)
from .train import TrainingDivergedError, TrainResult, sample_grid, training_loop

__all__ = [
    "PRESETS",
    "ConfigError",
    "DiscriminatorOutput",
    "FakeBatch",
    "ForegroundOutput",
    "FurryGANConfig",
    "FurryGANDiscriminator",
    "FurryGANGenerator",
    "FurryGANLoss",
    "GeneratorOutput",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "get_preset",
    "sample_grid",
    "training_loop",
]
