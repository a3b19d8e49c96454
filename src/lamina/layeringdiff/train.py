"""Training FBDD: config presets, layered training data composited on the fly, and the training loop.

Everything here is **our design** (the paper's training details are not public):

* **Data.** Every sample is a foreground layer (the object over its shadows and
  reflections) composited over a background at training time, so the exact targets are
  known: ``F`` the object's colour, ``B`` the background without the object's effects, ``E``
  the effects' opacity, and ``alpha`` the object's matte. Sources: procedural scenes
  (:func:`lamina.data.generate_scene`; a share of them get another scene's composite as
  background, so backgrounds also hold objects and shadows of their own), or a user folder
  of RGBA foregrounds and background photos (:class:`lamina.data.LayeredFolder`).
* **Augmentation against the procedural look** (the model is meant for photos): one random
  colour transform (gains, offset, contrast, saturation, gamma) applied to ``F`` and ``B``
  alike before compositing, so the targets stay exact; then only the composite the network
  sees is degraded by sensor noise, blur and JPEG compression (the targets stay clean; at
  inference the recomposition projection puts the image's own noise back); and the
  conditioning alpha is perturbed (blurred, hardened, grown or shrunk by a pixel), because
  at inference it comes from GrabCut/SAM and matting, not from the ground truth.
* **Two backbones.** By default the small pixel-space UNet of :mod:`.fbdd`, trained from
  scratch; with ``backbone`` (``--backbone MODEL``, preset ``latent-sd``) the latent model of
  :mod:`.latent`, fine-tuned from a pretrained inpainting UNet with its VAE and text encoder
  frozen.
* **Residuals over a classical estimate** (``prefill="classical"``, see :mod:`.fbdd`):
  the model learns what Telea inpainting and closed-form foreground estimation get wrong,
  so even a short CPU run starts from the classical result instead of from nothing.
* **Timesteps.** Half of the training timesteps are the ones the few-step DDIM sampler
  visits (``inference_steps``, "trailing" spacing), the rest uniform: with a small compute
  budget the network is trained where it is used.
* **Two stages.** ``stage="fbdd"`` trains the decomposition model; ``stage="hfa"`` (preset
  ``builtin-hfa``) trains the learned high-frequency alignment (:mod:`.hfa`) on top of the
  saved FBDD named by ``init``, which stays frozen and is sampled exactly as at inference, at
  output sizes ``hfa_sizes`` larger than its working size; the export is that FBDD with the HFA.
* **Loop** (:func:`training_loop`): AdamW with warm-up, ``accelerate`` (one process on CPU
  works; ``accelerate launch`` for more), EMA of the weights with a half-life in images
  (ramped up early in training). The run folder follows lamina's run protocol
  (:class:`lamina.training.RunDir`): ``training-config.json``, a loss log (``log.jsonl``) and
  its curves (``losses.png``), preview contact sheets of held-out scenes (``previews/``), a
  resumable training state written atomically (``training-state.pt``: running the same command
  again resumes), the inference export of the EMA weights (``export/``,
  :meth:`FBDDPipeline.save_pretrained``; ``snapshots/step-NNNNNNN/`` with ``keep_snapshots``),
  and a divergence guard (``max_loss``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image

from ..data.photo_scenes import PhotoFolder
from ..errors import ConfigError, LaminaError
from ..io import atomic_output, save_contact_sheet
from ..layers import LayeredImage
from ..overrides import config_values
from ..training import (
    CONFIG_NAME,
    EMA,
    EXPORT_DIR,
    LOG_NAME,
    PLOT_NAME,
    PREVIEW_DIR,
    STATE_NAME,
    Deadline,
    RunDir,
)
from .fbdd import FBDDPipeline, check_prefill, compute_prefill, fbdd_loss, make_scheduler, make_unet
from .hfa import HFANet, hfa_loss
from .latent import latent_fbdd_loss

#: The run folder's names (lamina.training's run protocol), under this module's earlier names.
STATE_FILE, CONFIG_FILE, LOG_FILE, PLOT_FILE = STATE_NAME, CONFIG_NAME, LOG_NAME, PLOT_NAME
__all__ = ["EMA", "EXPORT_DIR", "PREVIEW_DIR", "TRAINING_PRESETS", "TrainingConfig", "make_batch", "make_pipeline",
           "make_source", "resolve_config", "training_loop"]
#: Seeds of the preview scenes: far from the training seeds (``seed * 1_000_003 + step * batch + i``).
PREVIEW_SEED = 2_000_000_000


# ----------------------------------------------------------------------------- config
#: What a run trains: the FBDD model, or the learned HFA over a frozen one.
STAGES = ("fbdd", "hfa")


@dataclass(frozen=True)
class TrainingConfig:
    """Every option of :func:`training_loop`. Ranges ``(lo, hi)`` are sampled uniformly per sample."""

    # Data.
    data: str = "synth"  # "synth" (procedural scenes) or a folder with foregrounds/ and backgrounds/
    resolution: int = 64  # px, the UNet's working size
    scene_preset: str = "default"  # lamina.data.SCENE_PRESETS
    object_scale: tuple[float, float] = (0.12, 0.42)  # synth: object radius / canvas side
    p_swap_background: float = 0.25  # synth: background = another scene's composite
    # synth: a folder of photographs; a share (p_real_background) of the backgrounds are random square
    # crops of them (real texture under procedural objects with exact effects). None: procedural only.
    real_backgrounds: str | None = None
    p_real_background: float = 0.5
    # Augmentation.
    p_color: float = 0.8  # colour transform of F and B alike
    p_noise: float = 0.35  # Gaussian noise on the composite
    noise_std: tuple[float, float] = (0.004, 0.04)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.0)  # px
    p_jpeg: float = 0.35
    jpeg_quality: tuple[int, int] = (30, 90)
    p_alpha_jitter: float = 0.6  # perturb the conditioning alpha
    # Model.
    backbone: str | None = None  # inpainting model (hub id or folder): latent FBDD on it; None: pixel-space UNet
    init: str | None = None  # fine-tune: start from this saved FBDD's UNet (folder, hub id, or "builtin")
    unet: str = "builtin"  # FBDD_PRESETS (pixel-space model)
    effects: bool = True  # predict the effects' opacity E as a 7th channel
    prefill: str | None = "classical"  # residuals over this classical estimate (fbdd.PREFILLS; None: the layers)
    prediction: str = "sample"  # pixel model: x_0 ("sample") or v ("v_prediction"); a backbone keeps its own
    # Optimisation.
    batch_size: int = 8  # global: all processes together
    total_steps: int = 2000
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    hole_weight: float = 4.0  # extra loss weight of B/E where the object or its effects hide the background
    recomposition_weight: float = 0.0
    ema_halflife_nimg: int = 2000  # EMA half-life in images
    ema_rampup: float = 0.2  # early on, half-life <= this * images seen
    inference_steps: int = 2  # DDIM steps the export is meant for
    p_inference_timesteps: float = 0.5  # share of training timesteps taken from those steps
    # Sampling option saved in the export (FBDDPipeline): with a prefill, add the sampled F residual
    # to P_F (True) or keep F = P_F (False). The built-in model's F residual measured worse than P_F.
    foreground_residual: bool = True
    # Stage "hfa": train the learned HFA (.hfa) over the frozen FBDD named by ``init``; the options
    # above that shape the UNet (unet, effects, prefill, prediction, inference_steps, foreground_residual)
    # are then the init model's own.
    stage: str = "fbdd"  # "fbdd" | "hfa"
    hfa_channels: int = 24
    hfa_dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    hfa_sizes: tuple[int, ...] = (64, 96, 128, 160)  # output sizes (px) HFA trains at, one per step in turn
    hfa_foreground_weight: float = 1.0  # weight of the foreground L1 in hfa_loss
    hfa_from_init: bool = True  # start from the init model's HFA when it has one of this size (else: new)
    # Bookkeeping.
    seed: int = 0
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps: training state + export
    keep_snapshots: bool = False  # also keep each checkpoint's export in snapshots/step-NNNNNNN/
    preview_every: int = 250  # steps
    preview_count: int = 4
    max_loss: float = 1e4  # divergence guard: stop when a loss is NaN/Inf or larger (the last good state is kept)

    def __post_init__(self) -> None:
        from .fbdd import FBDD_PRESETS

        if self.unet not in FBDD_PRESETS:
            raise ConfigError(f"unknown FBDD UNet preset {self.unet!r}; choose from {', '.join(FBDD_PRESETS)}")
        if self.resolution < 8 or self.batch_size < 1 or self.total_steps < 1:
            raise ConfigError("resolution >= 8, batch_size >= 1 and total_steps >= 1 are required")
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ConfigError(f"{f.name} must be a probability in [0, 1], got {getattr(self, f.name)}")
        check_prefill(self.prefill)
        if self.backbone is not None and (self.effects or self.prefill is not None):
            raise ConfigError("a latent FBDD (backbone) has no effects channel and no prefill: set effects=False and "
                              "prefill=None, e.g. with --preset latent-sd")
        if self.stage not in STAGES:
            raise ConfigError(f"unknown training stage {self.stage!r}; choose from {', '.join(STAGES)}")
        if self.stage == "hfa" and (self.init is None or self.backbone is not None):
            raise ConfigError("stage 'hfa' trains the HFA over a saved pixel-space FBDD: give it with --init "
                              "(a folder, hub id or 'builtin'), without --backbone")
        if self.stage == "hfa" and (not self.hfa_sizes or min(self.hfa_sizes) < 8):
            raise ConfigError(f"hfa_sizes must be sizes of at least 8 px, got {self.hfa_sizes}")
        if self.real_backgrounds is not None and not Path(self.real_backgrounds).expanduser().is_dir():
            raise ConfigError(f"real_backgrounds {self.real_backgrounds!r}: not a folder of photographs")
        if self.data != "synth" and not Path(self.data).expanduser().is_dir():
            raise ConfigError(f"training data {self.data!r}: give 'synth' or a folder with foregrounds/ and "
                              "backgrounds/")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        return cls(**config_values(cls, values, "training", ConfigError))


#: ``tiny``: tests (16 px, a few steps); ``builtin``: the model shipped in the package (64 px,
#: about 40 min on one CPU thread per stage; its later fine-tuning stages override the learning
#: rate and the timestep focus, see ``assets/builtin/README.md``); ``small``: a bigger UNet for longer runs;
#: ``latent-sd``: fine-tune Stable Diffusion's inpainting model at 512 px (GPU; ``--backbone`` picks another);
#: ``builtin-hfa``: the learned HFA over the built-in FBDD (``--init`` picks another FBDD).
TRAINING_PRESETS: dict[str, TrainingConfig] = {
    "tiny": TrainingConfig(resolution=16, unet="tiny", batch_size=2, total_steps=4, warmup_steps=1,
                           log_every=1, checkpoint_every=2, preview_every=2, preview_count=2,
                           ema_halflife_nimg=8),
    "builtin": TrainingConfig(foreground_residual=False),
    "small": TrainingConfig(unet="small", batch_size=16, total_steps=20_000, lr=3e-4, preview_every=1000,
                            checkpoint_every=500, ema_halflife_nimg=20_000),
    "latent-sd": TrainingConfig(backbone="stable-diffusion-v1-5/stable-diffusion-inpainting", effects=False,
                                prefill=None, resolution=512, batch_size=4, total_steps=20_000, lr=1e-5,
                                warmup_steps=500, inference_steps=20, p_inference_timesteps=0.0,
                                ema_halflife_nimg=20_000, checkpoint_every=1000, preview_every=1000),
    "builtin-hfa": TrainingConfig(stage="hfa", init="builtin", batch_size=4, total_steps=1200, lr=5e-4,
                                  warmup_steps=50, ema_halflife_nimg=1000, checkpoint_every=100, preview_every=200),
}

#: Options that may change when a run is resumed (length, bookkeeping, and how the export samples).
RESUMABLE_CHANGES = ("total_steps", "log_every", "checkpoint_every", "keep_snapshots", "preview_every",
                     "preview_count", "max_loss", "foreground_residual")


def resolve_config(preset: str = "builtin", **overrides: Any) -> TrainingConfig:
    """A preset with ``overrides`` (``None`` values are ignored) applied."""
    if preset not in TRAINING_PRESETS:
        raise ConfigError(f"unknown training preset {preset!r}; choose from {', '.join(TRAINING_PRESETS)}")
    values = TRAINING_PRESETS[preset].to_dict() | {k: v for k, v in overrides.items() if v is not None}
    return TrainingConfig.from_dict(values)


# ------------------------------------------------------------------------------- data
# A sample: float32 arrays at the training resolution, channel-last, values in [0, 1]:
# "rgb" [H, W, 3] layer colour, "alpha" [H, W] object matte, "effects" [H, W] effects opacity
# (layer alpha t = alpha + effects (1 - alpha)), "background" [H, W, 3] without effects.
Sample = dict[str, np.ndarray]


def synth_sample(seed: int, config: TrainingConfig) -> Sample:
    """One procedural sample (exact ground truth), with a swapped background for a share of them."""
    from ..data import SCENE_PRESETS, generate_scene

    if config.scene_preset not in SCENE_PRESETS:
        raise LaminaError(f"unknown scene preset {config.scene_preset!r}; choose from {', '.join(SCENE_PRESETS)}")
    scene_config = replace(SCENE_PRESETS[config.scene_preset], size=config.resolution, scale=config.object_scale)
    scene = generate_scene(seed, scene_config)
    t = scene.foreground[:, :, 3]
    a = scene.object_alpha
    effects = np.where(a < 1.0, (t - a) / np.maximum(1.0 - a, 1e-6), 0.0)
    background = scene.background
    rng = np.random.default_rng(seed)
    if rng.random() < config.p_swap_background:
        background = generate_scene(seed + 7_919, scene_config).composite
    if config.real_backgrounds is not None:
        photos = PhotoFolder.of(config.real_backgrounds)
        real = np.random.default_rng([seed, 1])
        if real.random() < config.p_real_background:
            background = photos.crop(real, config.resolution)
    return {"rgb": np.ascontiguousarray(scene.foreground[:, :, :3]), "alpha": np.ascontiguousarray(a),
            "effects": np.clip(effects, 0.0, 1.0).astype(np.float32), "background": np.ascontiguousarray(background)}


def folder_sample(item: dict[str, Any]) -> Sample:
    """A :class:`lamina.data.LayeredFolder` item (a user's RGBA foreground over a background photo) as a sample."""
    foreground = item["foreground"].permute(1, 2, 0).numpy()
    return {"rgb": np.ascontiguousarray(foreground[:, :, :3]), "alpha": np.ascontiguousarray(foreground[:, :, 3]),
            "effects": item["effects_alpha"][0].numpy(),
            "background": np.ascontiguousarray(item["background"].permute(1, 2, 0).numpy())}


def make_source(config: TrainingConfig) -> Callable[[int], Sample]:
    """``seed -> Sample`` for ``config.data``."""
    if config.data == "synth":
        return lambda seed: synth_sample(seed, config)
    from ..data import LayeredFolder

    # object_scale is a radius over the canvas side; LayeredFolder scales the foreground's longer side.
    folder = LayeredFolder(config.data, config.resolution, seed=config.seed, length=2**62,
                           scale=(2.0 * config.object_scale[0], 2.0 * config.object_scale[1]))
    return lambda seed: folder_sample(folder[seed])


# ------------------------------------------------------------------------ augmentation
def colour_transform(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A random global colour change ``[..., 3] -> [..., 3]``: gains, contrast, saturation, gamma, offset."""
    gains = rng.uniform(0.8, 1.2, 3)
    contrast, saturation = rng.uniform(0.7, 1.3), rng.uniform(0.5, 1.4)
    gamma, offset = math.exp(rng.uniform(-0.35, 0.35)), rng.uniform(-0.08, 0.08)

    def apply(x: np.ndarray) -> np.ndarray:
        x = np.clip(x * gains, 0.0, 1.0) ** gamma
        grey = x.mean(axis=-1, keepdims=True)
        x = grey + saturation * (x - grey)
        x = 0.5 + contrast * (x - 0.5) + offset
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    return apply


def degrade(image: np.ndarray, rng: np.random.Generator, config: TrainingConfig) -> np.ndarray:
    """What a camera and a file format do to the composite: blur, noise, JPEG (each with its probability)."""
    out = image
    if rng.random() < config.p_blur:
        from scipy import ndimage

        out = ndimage.gaussian_filter(out, sigma=(rng.uniform(*config.blur_sigma),) * 2 + (0,))
    if rng.random() < config.p_noise:
        std = rng.uniform(*config.noise_std)
        luma = rng.standard_normal(out.shape[:2] + (1,)) * std * rng.uniform(0, 1)
        out = out + luma + rng.standard_normal(out.shape) * std
    out = np.clip(out, 0.0, 1.0)
    if rng.random() < config.p_jpeg:
        buffer = io.BytesIO()
        Image.fromarray((out * 255 + 0.5).astype(np.uint8)).save(
            buffer, "JPEG", quality=int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
        out = np.asarray(Image.open(buffer).convert("RGB"), np.float32) / 255.0
    return out.astype(np.float32)


def jitter_alpha(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The matte as a matting stage might deliver it: blurred, hardened, grown or shrunk by a pixel."""
    t = torch.from_numpy(alpha)[None, None]
    kind = rng.integers(4)
    if kind == 0:
        sigma = rng.uniform(0.4, 1.0)
        k = torch.exp(-torch.arange(-2, 3, dtype=torch.float32).square() / (2 * sigma**2))
        k = k / k.sum()
        t = nnf.conv2d(nnf.pad(t, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
        t = nnf.conv2d(nnf.pad(t, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
    elif kind == 1:
        t = (t > rng.uniform(0.3, 0.7)).float()
    elif kind == 2:
        t = nnf.max_pool2d(t, 3, stride=1, padding=1)
    else:
        t = -nnf.max_pool2d(-t, 3, stride=1, padding=1)
    return t[0, 0].numpy()


def make_batch(source: Callable[[int], Sample], seeds: list[int], config: TrainingConfig) -> dict[str, torch.Tensor]:
    """Training tensors ``[N, C, H, W]``: image (degraded), alpha (jittered), foreground, background, effects,
    and with ``config.prefill`` the classical estimate ``prefill`` computed from image and alpha."""
    keys = ("image", "alpha", "foreground", "background", "effects")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for seed in seeds:
        s = source(seed)
        rng = np.random.default_rng([seed, 1])
        rgb, background = s["rgb"], s["background"]
        if rng.random() < config.p_color:
            change = colour_transform(rng)
            rgb, background = change(rgb), change(background)
        alpha, effects = s["alpha"], s["effects"]
        total = (alpha + effects * (1.0 - alpha))[:, :, None]
        clean = total * rgb + (1.0 - total) * background
        condition = jitter_alpha(alpha, rng) if rng.random() < config.p_alpha_jitter else alpha
        # F where the object is, the composite elsewhere (what a too-wide matte should leave unchanged).
        foreground = np.where(alpha[:, :, None] > 0, rgb, clean)
        for key, value in zip(keys, (degrade(clean, rng, config), condition, foreground, background, effects),
                              strict=True):
            out[key].append(value if value.ndim == 3 else value[:, :, None])
    batch = {k: torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).contiguous().float() for k, v in out.items()}
    if config.prefill is not None:
        batch["prefill"] = compute_prefill(config.prefill, batch["image"], batch["alpha"])
    return batch


# ------------------------------------------------------------------------ run folder
def make_pipeline(config: TrainingConfig, unet: torch.nn.Module, backbone: Any = None) -> Any:
    """The inference pipeline around the trained network: :class:`FBDDPipeline` around ``unet``; with
    ``backbone`` (the :class:`~lamina.layeringdiff.latent.LatentFBDDPipeline` being trained) a latent one
    sharing its frozen parts; in stage ``"hfa"`` (``unet`` then the :class:`HFANet`) the frozen FBDD
    ``backbone`` with that HFA."""
    if config.stage == "hfa":
        return FBDDPipeline(unet=backbone.unet, scheduler=backbone.scheduler, prefill=backbone.config.prefill,
                            inference_steps=backbone.config.inference_steps,
                            foreground_residual=backbone.config.foreground_residual, hfa=unet)
    if backbone is None:
        return FBDDPipeline(unet=unet, scheduler=make_scheduler(prediction_type=config.prediction),
                            prefill=config.prefill, inference_steps=config.inference_steps,
                            foreground_residual=config.foreground_residual)
    return type(backbone)(vae=backbone.vae, unet=unet, scheduler=backbone.scheduler,
                          text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer,
                          inference_steps=config.inference_steps)


def export_pipeline(pipeline: Any, path: Path) -> Path:
    """Write an inference pipeline with ``save_pretrained``, atomically."""
    with atomic_output(path, overwrite=True) as staged:
        pipeline.save_pretrained(staged)
    return path


def _write_preview(pipeline: Any, config: TrainingConfig, path: Path) -> None:
    """Contact sheet of held-out scenes: ground truth, then the EMA model's layers, one row each."""
    from .disassembly import finish_decomposition

    pipeline.set_progress_bar_config(disable=True)
    source = make_source(replace(config, resolution=max(config.hfa_sizes)) if config.stage == "hfa" else config)
    rows = []
    for i in range(config.preview_count):
        s = source(PREVIEW_SEED + i)
        total = s["alpha"] + s["effects"] * (1.0 - s["alpha"])
        image = total[:, :, None] * s["rgb"] + (1.0 - total[:, :, None]) * s["background"]
        out = pipeline(image, s["alpha"], num_inference_steps=int(pipeline.config.inference_steps),
                       generator=torch.Generator().manual_seed(i), projection=False)
        part = finish_decomposition(image, s["alpha"], out.foreground[0], out.background[0],
                                    effects=None if out.effects is None else out.effects[0])
        rows.append(LayeredImage.from_foreground(s["background"], s["rgb"], total, name="ground truth"))
        rows.append(part.to_layered(name="FBDD"))
    save_contact_sheet(rows, path, overwrite=True)


def _load_backbone(config: TrainingConfig) -> Any:
    """The latent pipeline to fine-tune: its UNet widened from ``config.backbone``, sized to ``config.resolution``."""
    from .latent import LatentFBDDPipeline

    backbone = LatentFBDDPipeline.from_backbone(config.backbone, inference_steps=config.inference_steps)
    multiple = backbone.vae_scale_factor * 2 ** (len(backbone.unet.config.block_out_channels) - 1)
    if config.resolution % multiple:
        raise LaminaError(f"resolution {config.resolution} must be a multiple of {multiple} for the backbone "
                          f"{config.backbone!r}")
    backbone.unet.register_to_config(sample_size=config.resolution // backbone.vae_scale_factor)
    for frozen in (backbone.vae, backbone.text_encoder):
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    return backbone


def _load_saved(init: str) -> Any:
    """The saved FBDD pipeline ``init`` names: ``"builtin"``, a folder or a hub id."""
    from .decompose import BUILTIN_NAME
    from .fbdd import load_builtin, load_pipeline

    return load_builtin() if init == BUILTIN_NAME else load_pipeline(init)


def _load_frozen_fbdd(init: str) -> FBDDPipeline:
    """The saved pixel-space FBDD an HFA stage trains over (``"builtin"``, a folder or a hub id), frozen."""
    pipeline = _load_saved(init)
    if not isinstance(pipeline, FBDDPipeline):
        raise LaminaError(f"init {init!r} is a {type(pipeline).__name__}; the HFA stage needs a pixel-space FBDD")
    pipeline.set_progress_bar_config(disable=True)
    pipeline.unet.requires_grad_(False).eval()
    return pipeline


def hfa_training_loss(pipeline: FBDDPipeline, hfa: torch.nn.Module, batch: dict[str, torch.Tensor],
                      generator: torch.Generator, config: TrainingConfig) -> dict[str, torch.Tensor]:
    """:func:`~lamina.layeringdiff.hfa.hfa_loss` of ``hfa`` on a batch (:func:`make_batch`, no prefill):
    the frozen ``pipeline`` samples ``F_0, B_0, E`` as at inference, ``hfa`` refines them."""
    image, alpha = batch["image"], batch["alpha"]
    out = pipeline(image, alpha, num_inference_steps=int(pipeline.config.inference_steps), generator=generator,
                   projection=False, output_type="pt", hfa=False)
    refined = hfa(image, alpha, out.effects, out.foreground, out.background)
    hidden = ((alpha > 0) | (batch["effects"] > 0)).float()
    return hfa_loss(refined.foreground, refined.background, batch["foreground"], batch["background"], alpha, hidden,
                    config.hfa_foreground_weight)


def _load_init(unet: torch.nn.Module, init: str) -> None:
    """Copy the UNet weights of a saved FBDD (``"builtin"``, a folder or a hub id) into ``unet``; same architecture.

    A UNet with more conditioning inputs (``prefill="classical"`` from a ``"telea"`` model:
    ``P_F`` is the last input) gets the source's ``conv_in`` with zero weights for the new
    inputs, so it starts as the source model does on its inputs.
    """
    state = _load_saved(init).unet.state_dict()
    key = "conv_in.weight"
    target = unet.state_dict()[key]
    if key in state and state[key].shape[0] == target.shape[0] and state[key].shape[1] < target.shape[1]:
        widened = torch.zeros_like(target)
        widened[:, :state[key].shape[1]] = state[key]
        state[key] = widened
    _copy_weights(unet, state, f"init {init!r}: its UNet does not match this run's (choose the same preset, "
                               "effects and prefill)")


def _copy_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)``, or a one-line :class:`LaminaError` starting with ``what``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise LaminaError(f"{what}: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------ loop
def training_loop(
    config: TrainingConfig,
    run_dir: str | Path,
    *,
    echo: Callable[[str], None] = print,
    stop_after_s: float | None = None,
) -> Path:
    """Train FBDD (or, in stage ``"hfa"``, its HFA) into ``run_dir``; running it again resumes. Returns the export.

    Args:
        config: all options (:func:`resolve_config`).
        run_dir: the run folder (:class:`lamina.training.RunDir`): ``training-config.json``,
            ``training-state.pt``, ``log.jsonl``, ``losses.png``, ``previews/``, ``export/`` (the EMA
            pipeline, :meth:`FBDDPipeline.from_pretrained`), ``snapshots/`` with ``keep_snapshots``.
        echo: where progress lines go.
        stop_after_s: stop (after saving) once this many seconds have passed in this call.
    Raises:
        ConfigError: ``run_dir`` holds a run with other options (those not in :data:`RESUMABLE_CHANGES`).
        TrainingDivergedError: a loss became NaN/Inf or exceeded ``max_loss``; the last good state is kept.
    """
    from ..extras import require

    Accelerator = require("accelerate", "train").Accelerator
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    run = RunDir(run_dir, is_main=main, echo=echo)
    run.open(config.to_dict(), may_change=RESUMABLE_CHANGES, normalize=lambda d: TrainingConfig.from_dict(d).to_dict())
    accelerator.wait_for_everyone()
    run_dir = run.path

    # Networks, optimiser, EMA. ``unet`` is the network being trained (in stage "hfa" the HFANet, over
    # the frozen FBDD ``backbone``).
    torch.manual_seed(config.seed)
    resuming = run.has_state()
    state_key = "hfa" if config.stage == "hfa" else "unet"
    if config.stage == "hfa":
        backbone = _load_frozen_fbdd(str(config.init)).to(accelerator.device)
        unet = HFANet(config.hfa_channels, config.hfa_dilations,
                      max_scale=max(config.hfa_sizes) / min(backbone.working_size()))
        scheduler = backbone.scheduler
        if backbone.hfa is not None and config.hfa_from_init and not resuming:
            if (backbone.hfa.config.channels, tuple(backbone.hfa.config.dilations)) == (
                    config.hfa_channels, config.hfa_dilations):
                _copy_weights(unet, backbone.hfa.state_dict(), f"init {config.init!r}'s HFA")
                echo(f"starting from the HFA of {config.init}")
            else:
                echo(f"{config.init} has an HFA of another size; training a new one")
    elif config.backbone is not None:
        backbone = _load_backbone(config)
        unet, scheduler = backbone.unet, backbone.scheduler
        backbone.to(accelerator.device)
    else:
        backbone = None
        unet = make_unet(config.unet, sample_size=config.resolution, effects=config.effects, prefill=config.prefill)
        scheduler = make_scheduler(prediction_type=config.prediction)
    if config.init is not None and config.stage == "fbdd" and not resuming:
        _load_init(unet, config.init)
        echo(f"starting from the weights of {config.init}")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(unet, config.ema_halflife_nimg, config.ema_rampup)
    step = 0

    def write_export(folder: Path) -> None:
        make_pipeline(config, ema.model, backbone).save_pretrained(folder)

    # Resume; re-make an export older than the state (a kill between the two saves, or a finished run without one).
    state = run.load_state()
    if state is not None:
        unet.load_state_dict(state[state_key])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        del state
        echo(f"resuming {run_dir} at step {step}")
        if run.export_is_stale():
            echo(f"re-making the export of step {step} (older than the training state)")
            run.export(write_export, step)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.model.to(accelerator.device)
    sizes = config.hfa_sizes if config.stage == "hfa" else (config.resolution,)  # HFA: one size per step in turn
    sources = {size: make_source(replace(config, resolution=size)) for size in sizes}
    batch_config = replace(config, prefill=None) if config.stage == "hfa" else config  # HFA: FBDD makes its own
    scheduler.set_timesteps(config.inference_steps)
    focus = scheduler.timesteps.clone()
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ConfigError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({world})")
    n = config.batch_size // world  # batch_size is global (all processes together), as in FurryGAN

    def save() -> None:
        run.save_state({"step": step, state_key: accelerator.unwrap_model(unet).state_dict(),
                        "ema": ema.model.state_dict(), "optimizer": optimizer.state_dict(),
                        "config": config.to_dict()})
        run.export(write_export, step, snapshot=config.keep_snapshots)

    deadline = Deadline(stop_after_s)
    unet.train()
    while step < config.total_steps:
        # Batch: seeds depend only on (seed, step, rank), so a resumed run sees the same data.
        base = (config.seed * 1_000_003 + step * world + rank) * n
        batch = {k: v.to(accelerator.device) for k, v in make_batch(
            sources[sizes[step % len(sizes)]], list(range(base, base + n)), batch_config).items()}
        generator = torch.Generator().manual_seed(base)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator)
        use_focus = torch.rand(n, generator=generator) < config.p_inference_timesteps
        timesteps = torch.where(use_focus, focus[torch.randint(0, len(focus), (n,), generator=generator)], timesteps)

        # Optimisation step (linear warm-up).
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        if config.stage == "hfa":
            losses = hfa_training_loss(backbone, unet, batch, generator, config)
        elif backbone is None:
            losses = fbdd_loss(unet, scheduler, batch["image"], batch["alpha"], batch["foreground"],
                               batch["background"], generator=generator, effects=batch["effects"],
                               recomposition_weight=config.recomposition_weight, hole_weight=config.hole_weight,
                               timesteps=timesteps, prefill=batch.get("prefill"))
        else:
            losses = latent_fbdd_loss(backbone, unet, batch["image"], batch["alpha"], batch["foreground"],
                                      batch["background"], timesteps, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        ema.update(accelerator.unwrap_model(unet), step * config.batch_size, config.batch_size)

        # Divergence guard (the same answer on every process), then log, checkpoint, preview.
        record = run.log_step(step, losses, accelerator, batch_size=config.batch_size, max_loss=config.max_loss,
                              log_every=config.log_every)
        if record is not None:
            echo(f"step {step}/{config.total_steps} loss {record['loss']:.4f} ({record['sec_per_step']:.2f} s/step)")
        timed_out = deadline.passed(accelerator)
        if step % config.checkpoint_every == 0 or step == config.total_steps or timed_out:
            save()
        if main and (step % config.preview_every == 0 or step == config.total_steps):
            _write_preview(make_pipeline(config, ema.model, backbone), config, run.preview_path(step))
            run.plot()
        if timed_out:
            echo(f"stopping after {deadline.elapsed():.0f} s at step {step}; run again to resume")
            break
    return run.export_dir
