"""BFS training configuration: one frozen dataclass, named presets and ``--set KEY=VALUE`` overrides.

Everything here is **our design**: the paper's training data, losses and hyper-parameters are not
public (``shared/reference/bfs.md``). Two presets span the one code path:

* ``tiny``: the built-in CPU model. There is no pretrained Fill base at this size, so the
  ``layered`` stage trains the tiny base transformer **from scratch** together with the joint
  adapter (``train_base=True``); the ``vae`` stage trains the RGB VAE and the transparency VAE.
* ``flux-fill``: FLUX.1-Fill (``base``, a hub id or folder) frozen in bf16 with gradient
  checkpointing at 512 px; only the joint adapter (rank-4 LoRAs and the zero-initialised
  projection) is trained, as BFS does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import LaminaError
from ..overrides import config_values

#: What a run trains: ``vae`` the two VAEs (RGB and transparency); ``layered`` stage 1 (both branches on
#: layered data); ``composite`` stage 2 (the composite branch only, on unlayered composites).
STAGES = ("vae", "layered", "composite")
#: What stage ``vae`` trains: both VAEs from their start, or only the transparency VAE's decoder (its encoder, whose
#: latents a trained transformer denoises, stays frozen: a decoder fine-tune of a finished model).
VAE_MODULES = ("both", "trans_decoder")
#: Why stage ``vae`` cannot train a model whose VAEs are linear patch codes (``lamina.bfs.patch_vae``).
PATCH_CODE_VAE_STAGE = ("stage vae: this model's VAEs are linear patch codes (components 'tiny'), fitted when a run "
                        "starts, with nothing to train; train the 'layered' stage, or give --set components=tiny-kl "
                        "for learned VAEs")
#: Mixed precision modes of ``accelerate``.
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class BFSTrainConfig:
    """Every option of :func:`lamina.bfs.train.training_loop`. Ranges ``(lo, hi)`` are sampled uniformly."""

    stage: str = "layered"
    # Data.
    data: str = "synth"  # "synth" (procedural scenes), a folder holding manifest.jsonl, or a .jsonl manifest
    resolution: int = 64  # px, square working size
    scene_preset: str = "default"  # lamina.data.SCENE_PRESETS for single-object samples
    object_scale: tuple[float, float] = (0.16, 0.32)  # synth: object radius / canvas side
    p_multi: float = 0.3  # synth: share of samples whose background already holds objects (back to front)
    box_grow: tuple[float, float] = (0.0, 0.15)  # the object's box grown by this share of its size
    box_jitter: float = 0.05  # ... and its sides moved by up to this share of its size
    p_drop_caption: float = 0.1  # empty caption (classifier-free guidance)
    composite_backgrounds: str = "auto"  # stage composite: "auto" (photos if scikit-image is installed), "procedural"
    photos: str | None = None  # synth, stages layered/vae: a folder of photographs for single-object backgrounds
    p_photo: float = 0.0  # synth: share of single-object samples drawn over a crop of one of ``photos``
    # Model.
    components: str = "tiny"  # tiny component preset (lamina.bfs.components) when base is None
    latent_channels: int | None = None  # ... with this many latent channels (None: the preset's; tiny: components)
    base: str | None = None  # FLUX.1-Fill-style folder or hub id (None: tiny components built from scratch)
    init: str | None = None  # start from this saved BFS export (RUN/export, a folder or "builtin")
    train_base: bool = True  # stage layered/composite: also train the base transformer (tiny: no pretrained base)
    lora_rank: int = 8  # joint adapter LoRA rank
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    # Optimisation.
    batch_size: int = 8
    total_steps: int = 2000
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_halflife_nimg: int = 2000
    ema_rampup: float = 0.2
    # Flow matching (layered/composite): sigma = sigmoid(N(mean, std)) shared by both rows.
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    foreground_weight: float = 1.0  # weight of the foreground row's loss
    effects_token_weight: float = 1.0  # foreground-row tokens of partial alpha (shadows, soft edges) count up to this
    # Transparency VAE losses (stage vae).
    kl_weight: float = 1e-6
    alpha_weight: float = 1.0
    rgb_weight: float = 1.0
    composite_weight: float = 1.0
    identity_weight: float = 0.1
    shadow_weight: float = 4.0  # partial-alpha pixels count this many times
    vae_crop: int = 32  # stage vae: train on random crops of this side (px; the VAEs are convolutional)
    vae_modules: str = "both"  # stage vae: "both" VAEs, or "trans_decoder" (fine-tune the transparency decoder only)
    # Sampling saved in the export and used for previews.
    inference_steps: int = 20
    # Bookkeeping.
    seed: int = 0
    log_every: int = 10
    max_loss: float = 1e4  # divergence guard: stop when a loss is not finite or exceeds this
    checkpoint_every: int = 100
    preview_every: int = 500
    preview_count: int = 4

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise LaminaError(f"unknown BFS training stage {self.stage!r}; choose from {', '.join(STAGES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise LaminaError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                              f"got {self.mixed_precision!r}")
        if self.resolution < 16 or self.resolution % 16:
            raise LaminaError(f"resolution must be a multiple of 16 of at least 16 px, got {self.resolution}")
        if self.batch_size < 1 or self.total_steps < 1 or self.lora_rank < 1:
            raise LaminaError("batch_size, total_steps and lora_rank must be at least 1")
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise LaminaError(f"{f.name} must be a probability in [0, 1], got {getattr(self, f.name)}")
        if self.vae_modules not in VAE_MODULES:
            raise LaminaError(f"vae_modules must be one of {', '.join(VAE_MODULES)}, got {self.vae_modules!r}")
        if self.stage == "vae" and self.init is None and self.base is None:
            from .components import get_preset

            if get_preset(self.components).vae_kind == "patch":
                raise LaminaError(PATCH_CODE_VAE_STAGE)
        if self.composite_backgrounds not in ("auto", "procedural"):
            raise LaminaError(f"composite_backgrounds must be 'auto' or 'procedural', got "
                              f"{self.composite_backgrounds!r}")
        if self.p_photo > 0 and self.photos is None:
            raise LaminaError(f"p_photo={self.p_photo} needs photos=FOLDER (photographs for the backgrounds)")
        if self.photos is not None and not Path(self.photos).expanduser().is_dir():
            raise LaminaError(f"photos={self.photos!r} is not a folder of photographs")
        if self.data != "synth":
            path = Path(self.data).expanduser()
            if not (path.is_dir() or (path.is_file() and path.suffix == ".jsonl")):
                raise LaminaError(f"training data {self.data!r}: give 'synth', a folder holding manifest.jsonl, "
                                  "or a .jsonl manifest")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BFSTrainConfig:
        return cls(**config_values(cls, values, "BFS training"))


#: ``tiny``: the built-in CPU model (64 px, everything trained from scratch, one thread);
#: ``test``: the same components at 32 px, batch 2, two steps (unit tests);
#: ``flux-fill``: FLUX.1-Fill-dev frozen, bf16, gradient checkpointing, 512 px, joint LoRA rank 4.
TRAINING_PRESETS: dict[str, BFSTrainConfig] = {
    "tiny": BFSTrainConfig(),
    "test": BFSTrainConfig(resolution=32, batch_size=2, total_steps=2, warmup_steps=1,
                           log_every=1, checkpoint_every=1, preview_every=2, preview_count=1, inference_steps=2,
                           ema_halflife_nimg=8),
    "flux-fill": BFSTrainConfig(base="black-forest-labs/FLUX.1-Fill-dev", train_base=False, lora_rank=4,
                                resolution=512, gradient_checkpointing=True, mixed_precision="bf16", batch_size=1,
                                total_steps=20_000, lr=1e-4, warmup_steps=200, ema_halflife_nimg=20_000,
                                checkpoint_every=500, preview_every=1000, inference_steps=28,
                                object_scale=(0.12, 0.3)),
}

#: Options that may change when a run is resumed (``lr`` and the EMA's: a cool-down at the end of a run).
RESUMABLE_CHANGES = ("total_steps", "log_every", "checkpoint_every", "preview_every", "preview_count",
                     "inference_steps", "max_loss", "lr", "ema_halflife_nimg", "ema_rampup")


def resolve_config(preset: str = "tiny", **overrides: Any) -> BFSTrainConfig:
    """A preset with ``overrides`` (``None`` values ignored) applied and checked."""
    if preset not in TRAINING_PRESETS:
        raise LaminaError(f"unknown BFS training preset {preset!r}; choose from {', '.join(TRAINING_PRESETS)}")
    values = TRAINING_PRESETS[preset].to_dict() | {k: v for k, v in overrides.items() if v is not None}
    return BFSTrainConfig.from_dict(values)
