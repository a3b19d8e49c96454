"""FurryGAN (Bae, Kwon, Uh, ECCV 2022): foreground-aware image synthesis with coarse and fine masks.

A GAN whose generator draws a foreground, a background and an alpha mask, trained from
unlabelled images only; each sample converts to a two-layer :class:`lamina.LayeredImage`::

    from lamina.furrygan import load_builtin, load_generator
    G = load_builtin()                      # or load_generator("run") / FurryGANGenerator.from_pretrained(...)
    out = G(torch.randn(4, G.z_dim), truncation_psi=0.7)
    layered = out.to_layered(0)

Modules: :mod:`.config` (dataclass configs whose defaults are the official code's, presets),
:mod:`.networks` (generator, discriminator), :mod:`.losses` (Eq. 4-12), :mod:`.train`,
:mod:`.datasets` (image folders, procedural composites), :mod:`.inference` (checkpoints,
sampling, segmentation by GAN inversion), :mod:`.segmenter` (pseudo-GT segmenter),
:mod:`.evaluate` (Table 2/4-style metrics, FID/KID), :mod:`.cli` (``lamina furrygan``).
"""

from .config import PRESETS, ConfigError, FurryGANConfig, LossConfig, ModelConfig, TrainConfig, get_preset
from .datasets import ImageFolderDataset, SynthComposites
from .inference import (
    FurryGAN,
    InversionResult,
    invert,
    load_builtin,
    load_discriminator,
    load_generator,
    resolve_checkpoint,
)
from .losses import FakeBatch, FurryGANLoss
from .networks import (
    DiscriminatorOutput,
    ForegroundOutput,
    FurryGANDiscriminator,
    FurryGANGenerator,
    GeneratorOutput,
)
from .segmenter import Segmenter, load_segmenter, train_segmenter
from .train import TrainingDivergedError, TrainResult, sample_grid, training_loop

__all__ = [
    "PRESETS",
    "ConfigError",
    "DiscriminatorOutput",
    "FakeBatch",
    "FurryGAN",
    "ForegroundOutput",
    "FurryGANConfig",
    "FurryGANDiscriminator",
    "FurryGANGenerator",
    "FurryGANLoss",
    "GeneratorOutput",
    "ImageFolderDataset",
    "InversionResult",
    "LossConfig",
    "ModelConfig",
    "Segmenter",
    "SynthComposites",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "get_preset",
    "invert",
    "load_builtin",
    "load_discriminator",
    "load_generator",
    "load_segmenter",
    "resolve_checkpoint",
    "sample_grid",
    "train_segmenter",
    "training_loop",
]
