"""Training BFS: the VAE stage, stage 1 (layered data, both branches) and stage 2 (unlayered composites).

Everything here is **our design** (the paper's training is not public; see :mod:`lamina.bfs.losses`):

* ``stage="vae"`` trains the RGB VAE (composites) and the transparency VAE (RGBA layers:
  :func:`~lamina.bfs.losses.transparency_losses` plus an identity loss towards the RGB VAE's
  latent of the layer over grey) on random crops; the export holds them with latent
  ``scaling_factor``/``shift_factor`` measured on held-out samples.
* ``stage="layered"`` (paper stage 1): flow matching on both rows of the dual branch, row x the
  composite (RGB VAE latent), row y the layer (transparency VAE latent), one logit-normal
  ``sigma`` per pair. The ``flux-fill`` preset trains only the joint adapter over a frozen
  FLUX.1-Fill; the ``tiny`` preset has no pretrained Fill base and trains the base transformer
  **from scratch** together with the adapter (``train_base``).
* ``stage="composite"`` (paper stage 2): unlayered composites, loss on the composite row only.

Runs are folders: ``training-config.json``, ``training-state.pt`` (atomic; running the same command
again resumes), ``log.jsonl``, ``losses.png``, ``previews/`` and ``export/`` (the EMA weights as a
:class:`~lamina.bfs.pipeline.BFSPipeline` folder, ``BFSPipeline.from_pretrained(RUN/export)``).
The loop uses ``accelerate`` (one process on CPU; ``accelerate launch`` for several GPUs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import LaminaError
from ..training import EMA, Deadline, RunDir
from .config import PATCH_CODE_VAE_STAGE, RESUMABLE_CHANGES, BFSTrainConfig
from .data import collate, make_source
from .losses import (
    composite_only_loss,
    flow_matching_loss,
    flow_target,
    identity_loss,
    kl_loss,
    logit_normal_sigmas,
    noisy_latent,
    over_grey,
    partial_alpha_token_weights,
    transparency_losses,
)

#: Seeds of held-out samples (previews, latent statistics): far from the training seeds.
HELD_OUT_SEED = 2_000_000_000
#: Samples used to measure a VAE's latent mean and std at export.
LATENT_STAT_SAMPLES = 32
#: Samples whose patches fit a linear patch code's basis (:func:`fit_patch_codes`).
PATCH_FIT_SAMPLES = 256


# --------------------------------------------------------------------------------- the VAEs
def encode_rgb(vae: Any, rgb: torch.Tensor) -> Any:
    """RGB VAE posterior of images ``[N, 3, H, W]`` in [0, 1] (the VAE sees [-1, 1])."""
    return vae.encode(rgb * 2.0 - 1.0).latent_dist


def encode_rgba(trans_vae: Any, rgba: torch.Tensor) -> Any:
    """Transparency VAE posterior of straight RGBA ``[N, 4, H, W]`` in [0, 1] (its input: the layer over grey,
    then alpha, :func:`~lamina.bfs.transparency.layer_to_vae_input`)."""
    from .transparency import layer_to_vae_input

    return trans_vae.encode(layer_to_vae_input(rgba)).latent_dist


def _vae_crop(batch: dict[str, Any], side: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``side`` x ``side`` crop (at most the image) of the batch's ``composite`` and ``foreground``."""
    size = batch["composite"].shape[-1]
    crop = min(side, size)
    y, x = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=generator))
    return batch["composite"][:, :, y:y + crop, x:x + crop], batch["foreground"][:, :, y:y + crop, x:x + crop]


def vae_losses(vae: Any, trans_vae: Any, batch: dict[str, Any], generator: torch.Generator,
               config: BFSTrainConfig) -> dict[str, torch.Tensor]:
    """Stage ``vae``: both VAEs on one random crop of the batch (straight RGBA ``foreground`` ``[N, 4, H, W]``,
    ``composite`` ``[N, 3, H, W]``, [0, 1])."""
    comp, layer = _vae_crop(batch, config.vae_crop, generator)
    backgrounds = torch.roll(comp, 1, 0)  # another sample's composite behind each layer

    post = encode_rgb(vae, comp)
    rec = vae.decode(post.sample(generator)).sample * 0.5 + 0.5
    rgb_rec = (rec - comp).abs().mean()
    rgb_kl = kl_loss(post.mean, post.logvar)

    tpost = encode_rgba(trans_vae, layer)
    decoded = trans_vae.decode(tpost.sample(generator)).sample * 0.5 + 0.5
    trans = transparency_losses(decoded, layer, backgrounds, config.shadow_weight, config.alpha_weight,
                                config.rgb_weight, config.composite_weight)
    with torch.no_grad():
        reference = encode_rgb(vae, over_grey(layer)).mean
    ident = identity_loss(tpost.mean, reference)
    trans_kl = kl_loss(tpost.mean, tpost.logvar)
    loss = rgb_rec + trans["loss"] + config.identity_weight * ident + config.kl_weight * (rgb_kl + trans_kl)
    return {"loss": loss, "vae_l1": rgb_rec, "alpha": trans["alpha"], "rgb": trans["rgb"],
            "composite": trans["composite"], "identity": ident, "kl": rgb_kl + trans_kl}


def transparency_decoder_losses(trans_vae: Any, batch: dict[str, Any], generator: torch.Generator,
                                config: BFSTrainConfig) -> dict[str, torch.Tensor]:
    """Stage ``vae`` with ``vae_modules="trans_decoder"``: the transparency VAE's reconstruction losses with its
    encoder frozen (its latent space is the one the transformer learned), on a random crop of the batch."""
    comp, layer = _vae_crop(batch, config.vae_crop, generator)
    backgrounds = torch.roll(comp, 1, 0)
    with torch.no_grad():
        latent = encode_rgba(trans_vae, layer).sample(generator)
    decoded = trans_vae.decode(latent).sample * 0.5 + 0.5
    trans = transparency_losses(decoded, layer, backgrounds, config.shadow_weight, config.alpha_weight,
                                config.rgb_weight, config.composite_weight)
    return {"loss": trans["loss"], "alpha": trans["alpha"], "rgb": trans["rgb"], "composite": trans["composite"]}


def held_out_batch(config: BFSTrainConfig, count: int) -> dict[str, Any]:
    """The first ``count`` preview-range layered samples (seeds from ``HELD_OUT_SEED``, captions kept), collated."""
    source = make_source(replace(config, stage="layered", p_drop_caption=0.0))
    return collate([source(HELD_OUT_SEED + i) for i in range(count)])


@torch.no_grad()
def fit_patch_codes(vae: Any, trans_vae: Any, batch: dict[str, Any]) -> None:
    """Fit both :class:`~lamina.bfs.patch_vae.LinearPatchVAE` codes (principal components of their patches) to a
    layered ``batch`` (:func:`held_out_batch` of :data:`PATCH_FIT_SAMPLES`): ``vae`` to composites, ``trans_vae``
    to layers."""
    from .transparency import layer_to_vae_input

    vae.fit(batch["composite"] * 2.0 - 1.0)
    trans_vae.fit(layer_to_vae_input(batch["foreground"]))


@torch.no_grad()
def set_latent_statistics(vae: Any, trans_vae: Any, config: BFSTrainConfig, batch: dict[str, Any] | None = None
                          ) -> None:
    """Set both VAEs' ``shift_factor`` (mean) and ``scaling_factor`` (1 / std) from the first
    :data:`LATENT_STAT_SAMPLES` held-out samples (of ``batch`` when given, a :func:`held_out_batch`), so the
    transformer sees unit-variance latents in both rows."""
    if batch is None:
        batch = held_out_batch(config, LATENT_STAT_SAMPLES)
    composite, foreground = batch["composite"][:LATENT_STAT_SAMPLES], batch["foreground"][:LATENT_STAT_SAMPLES]
    device = vae.device
    for model, latent in ((vae, encode_rgb(vae, composite.to(device)).mean),
                          (trans_vae, encode_rgba(trans_vae, foreground.to(device)).mean)):
        model.register_to_config(shift_factor=float(latent.mean()), scaling_factor=float(1.0 / latent.std()))


# ------------------------------------------------------------------------------ the dual branch
def dual_branch_losses(parts: dict[str, Any], batch: dict[str, Any], generator: torch.Generator,
                       config: BFSTrainConfig, guidance: float | None = None) -> dict[str, torch.Tensor]:
    """Stages ``layered`` / ``composite``: flow-matching losses of the dual-branch transformer on a batch.

    ``parts``: the pipeline's components. Row x is the composite (RGB VAE latent of ``composite``),
    row y the layer (transparency VAE latent of ``foreground``). Both rows are Fill-conditioned on the
    unmasked ``background`` and the box ``mask`` and share the caption and ``sigma``. Unlayered batches
    (stage ``composite``) have no layer: row y then starts from the latent mean (``y0 = 0``, so
    ``y_s = sigma * noise``, the best guess without a layer) and is not supervised.
    """
    from .pipeline import (
        encode_image,
        encode_prompts,
        latent_image_ids,
        pack_latents,
        predict_velocity,
        prepare_fill_condition,
    )
    from .transparency import encode_layer

    vae, transformer = parts["vae"], parts["transformer"]
    device = next(transformer.parameters()).device
    n = batch["composite"].shape[0]
    with torch.no_grad():
        x0 = encode_image(vae, batch["composite"].to(device) * 2 - 1, generator=generator, sample=True)
        lh, lw = x0.shape[-2:]
        x0 = pack_latents(x0.float())
        if "foreground" in batch:
            y0 = pack_latents(encode_layer(parts["trans_vae"], batch["foreground"].to(device), generator=generator,
                                           sample=True).float())
        else:
            y0 = torch.zeros_like(x0)
        condition = prepare_fill_condition(vae, batch["background"].to(device) * 2 - 1, batch["mask"].to(device))
        text = encode_prompts(batch["caption"], parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"],
                              parts["text_encoder_2"], config_max_sequence_length(parts), device=device)
    sigma = logit_normal_sigmas(n, config.sigma_mean, config.sigma_std, generator).to(device)
    noise_x = torch.randn(x0.shape, generator=generator).to(device)
    noise_y = torch.randn(y0.shape, generator=generator).to(device)
    img_ids = latent_image_ids(lh, lw, device=device)
    pred = predict_velocity(transformer, parts["joint"], noisy_latent(x0, noise_x, sigma),
                            noisy_latent(y0, noise_y, sigma), condition, text.prompt_embeds, text.pooled,
                            text.text_ids, img_ids, sigma, guidance=guidance)
    if "foreground" in batch and config.stage == "layered":
        token_weight = None
        if config.effects_token_weight != 1.0:
            token_size = batch["foreground"].shape[-1] // (lw // 2)  # pixels per packed token side
            token_weight = partial_alpha_token_weights(batch["foreground"][:, 3:].to(device), token_size,
                                                       config.effects_token_weight)
        return flow_matching_loss(pred.velocity_x, pred.velocity_y, flow_target(x0, noise_x),
                                  flow_target(y0, noise_y), config.foreground_weight, token_weight)
    return composite_only_loss(pred.velocity_x, flow_target(x0, noise_x))


def config_max_sequence_length(parts: dict[str, Any]) -> int:
    """T5 tokens of the model (the pipeline's ``max_sequence_length``, else the tokenizer's length)."""
    return int(parts.get("_max_sequence_length") or min(getattr(parts["tokenizer_2"], "model_max_length", 512), 512))


# ------------------------------------------------------------------------------------ components
#: Components of a BFS pipeline (``BFSPipeline.components``'s module keys).
COMPONENT_NAMES = ("scheduler", "vae", "trans_vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                   "transformer", "joint")
#: The built-in model's name for ``init`` / ``--model``.
BUILTIN_NAME = "builtin"


def builtin_path() -> Path:
    """Folder of the built-in tiny BFS model shipped in the package."""
    return Path(__file__).resolve().parent / "assets" / "builtin"


def load_model(name: str) -> Any:
    """A saved BFS pipeline: ``"builtin"``, a folder (``RUN/export``) or a hub id; FLUX.1-Fill-style
    models are wrapped with a new joint adapter (:func:`lamina.bfs.pipeline.load_pipeline`)."""
    from .pipeline import load_pipeline

    if name == BUILTIN_NAME:
        path = builtin_path()
        if not (path / "model_index.json").is_file():
            raise LaminaError(f"the built-in BFS model is missing from the package ({path})")
        return load_pipeline(path)
    return load_pipeline(name)


def patch_codes(parts: dict[str, Any]) -> dict[str, Any] | None:
    """The fitted linear patch codes of ``parts`` (basis, mean and latent normalisation of ``vae`` and
    ``trans_vae``) for a run's training state, or None when its VAEs are not patch codes."""
    from .patch_vae import LinearPatchVAE

    if not isinstance(parts["vae"], LinearPatchVAE):
        return None
    return {name: {"buffers": parts[name].state_dict(), "shift_factor": parts[name].config.shift_factor,
                   "scaling_factor": parts[name].config.scaling_factor} for name in ("vae", "trans_vae")}


def load_parts(config: BFSTrainConfig, codes: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The components a run starts from and the pipeline options: ``config.init`` (a saved BFS
    pipeline, ``"builtin"``), ``config.base`` (a FLUX.1-Fill-style model, frozen, new joint adapter), or
    fresh tiny components (``config.components`` preset). Fresh patch codes are fitted to data, or, for a
    resumed run, restored from its state's ``codes`` (:func:`patch_codes`), so the transformer goes on in the
    latent space it started in."""
    if config.init is not None:
        pipe = load_model(config.init)
    elif config.base is not None:
        from .pipeline import BFSPipeline

        pipe = BFSPipeline.from_fill(config.base, rank=config.lora_rank, resolution=config.resolution)
    else:
        from dataclasses import replace as dc_replace

        from .components import build_components, get_preset
        from .pipeline import DEFAULT_BOX_SHARE

        preset = get_preset(config.components)
        preset = dc_replace(preset, joint_rank=config.lora_rank, joint_alpha=float(config.lora_rank),
                            latent_channels=config.latent_channels or preset.latent_channels)
        parts = build_components(preset, seed=config.seed)
        if preset.vae_kind == "patch" and codes is not None:
            for name, code in codes.items():
                parts[name].load_state_dict(code["buffers"])
                parts[name].register_to_config(shift_factor=code["shift_factor"],
                                               scaling_factor=code["scaling_factor"])
        elif preset.vae_kind == "patch":  # no VAE stage: fit and normalise the codes now (a KL pair: at its export)
            batch = held_out_batch(config, PATCH_FIT_SAMPLES)
            fit_patch_codes(parts["vae"], parts["trans_vae"], batch)
            set_latent_statistics(parts["vae"], parts["trans_vae"], config, batch)
        options = {"resolution": config.resolution, "inference_steps": config.inference_steps,
                   "guidance_scale": preset.guidance_scale, "max_sequence_length": preset.max_sequence_length,
                   "box_share": DEFAULT_BOX_SHARE if config.data == "synth" else None}
        return parts, options
    options = {k: pipe.config[k] for k in ("resolution", "inference_steps", "guidance_scale", "max_sequence_length")}
    options["box_share"] = pipe.config.get("box_share")
    options["resolution"] = config.resolution
    return {k: getattr(pipe, k) for k in COMPONENT_NAMES}, options


def make_pipeline(parts: dict[str, Any], options: dict[str, Any]) -> Any:
    """A :class:`~lamina.bfs.pipeline.BFSPipeline` around ``parts``."""
    from .pipeline import BFSPipeline

    return BFSPipeline.from_components({k: parts[k] for k in COMPONENT_NAMES}, **options)


def _trainable(config: BFSTrainConfig, parts: dict[str, Any]) -> torch.nn.ModuleDict:
    """The modules a stage trains; everything else in ``parts`` is frozen."""
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    if config.stage == "vae" and not any(True for _ in parts["trans_vae"].parameters()):
        raise LaminaError(PATCH_CODE_VAE_STAGE)  # (a saved model's: ``init``)
    if config.stage == "vae" and config.vae_modules == "trans_decoder":
        trans_vae = parts["trans_vae"]
        trans_vae.train()
        for part in (trans_vae.decoder, trans_vae.post_quant_conv):
            if part is not None:  # post_quant_conv is optional in AutoencoderKL
                part.requires_grad_(True)
        return torch.nn.ModuleDict({"trans_vae": trans_vae})
    if config.stage == "vae":
        names = ["vae", "trans_vae"]
    else:
        names = ["joint"] + (["transformer"] if config.train_base else [])
        if config.gradient_checkpointing:
            parts["transformer"].enable_gradient_checkpointing()
    modules = torch.nn.ModuleDict({k: parts[k] for k in names})
    modules.requires_grad_(True).train()
    return modules


class StageLoss(torch.nn.Module):
    """The trained modules and their stage's loss as one module, so that ``accelerator.prepare`` (DDP under
    ``accelerate launch``) wraps the whole forward pass and averages the gradients across processes.

    ``trainable``: the modules the stage trains (its only registered submodule); ``parts``: every component
    (a plain dict, so frozen components are not this module's parameters). ``forward(batch, generator)``
    returns the stage's named losses (``"loss"`` the total)."""

    def __init__(self, config: BFSTrainConfig, parts: dict[str, Any], trainable: torch.nn.ModuleDict,
                 guidance: float | None) -> None:
        super().__init__()
        self.trainable = trainable
        self.config, self.parts, self.guidance = config, parts, guidance

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.config.stage == "vae" and self.config.vae_modules == "trans_decoder":
            return transparency_decoder_losses(self.trainable["trans_vae"], batch, generator, self.config)
        if self.config.stage == "vae":
            return vae_losses(self.trainable["vae"], self.trainable["trans_vae"], batch, generator, self.config)
        return dual_branch_losses(self.parts, batch, generator, self.config, self.guidance)


# ------------------------------------------------------------------------------------ run folder
def _with_ema(parts: dict[str, Any], ema_modules: torch.nn.ModuleDict) -> dict[str, Any]:
    """``parts`` with the trained modules replaced by their EMA copies."""
    return dict(parts) | {k: m for k, m in ema_modules.items()}


def write_export(config: BFSTrainConfig, parts: dict[str, Any], options: dict[str, Any],
                 ema_modules: torch.nn.ModuleDict, folder: Path) -> None:
    """Fill ``folder`` with the EMA weights as a :class:`~lamina.bfs.pipeline.BFSPipeline` (``save_pretrained``)
    and the run's config; the stage ``vae`` export gets its latent statistics (:func:`set_latent_statistics`)."""
    exported = _with_ema(parts, ema_modules)
    if config.stage == "vae" and config.vae_modules == "both":  # a decoder fine-tune keeps the encoder's latents
        set_latent_statistics(exported["vae"], exported["trans_vae"], config)
    pipe = make_pipeline(exported, options)
    pipe.save_pretrained(folder)
    (folder / "training-config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    parts["joint"].attach(parts["transformer"])  # the pipeline attached the EMA adapter: train the live one


def _write_preview(config: BFSTrainConfig, parts: dict[str, Any], options: dict[str, Any],
                   ema_modules: torch.nn.ModuleDict, path: Path) -> None:
    """Contact sheet of held-out samples, one pair of rows each: the ground-truth layer over its
    background, then the EMA model's (stage ``vae``: the transparency VAE's reconstruction)."""
    from ..io import save_contact_sheet
    from ..layers import Layer, LayeredImage
    from .data import synth_sample
    from .transparency import decode_layer, encode_layer

    modules = _with_ema(parts, ema_modules)
    rows = []
    for i in range(config.preview_count):
        s = synth_sample(HELD_OUT_SEED + i, replace(config, p_drop_caption=0.0))
        rows.append(LayeredImage(s.background, [Layer(s.foreground, name="ground truth")]))
        if config.stage == "vae":
            with torch.no_grad():
                tvae = modules["trans_vae"]
                layer = torch.from_numpy(s.foreground.transpose(2, 0, 1))[None].to(tvae.device)
                dec = decode_layer(tvae, encode_layer(tvae, layer))[0].cpu()
            rows.append(LayeredImage(s.background, [Layer(dec.permute(1, 2, 0).numpy(), name="trans-VAE")]))
        else:
            pipe = make_pipeline(modules, options)
            pipe.set_progress_bar_config(disable=True)
            rows.append(pipe(background=s.background, box=s.box, prompt=s.caption,
                             num_inference_steps=config.inference_steps, generator=torch.Generator().manual_seed(i)))
    save_contact_sheet(rows, path, overwrite=True)
    parts["joint"].attach(parts["transformer"])


# ------------------------------------------------------------------------------------ the loop
def training_loop(config: BFSTrainConfig, run_dir: str | Path, *, echo: Callable[[str], None] = print,
                  stop_after_s: float | None = None,
                  parts: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Path:
    """Train one BFS stage into ``run_dir`` (:class:`lamina.training.RunDir`); running it again resumes.
    Returns the export folder.

    Args:
        config: all options (:func:`lamina.bfs.config.resolve_config`).
        run_dir: the run folder (see the module docstring).
        echo: where progress lines go.
        stop_after_s: stop (after saving) once this many seconds have passed in this call.
        parts: the starting components and pipeline options (default: :func:`load_parts`).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Stage composite leaves the foreground row's own adapter weights without gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.stage == "composite")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=config.mixed_precision,
                              kwargs_handlers=[ddp])
    main = accelerator.is_main_process
    run = RunDir(run_dir, is_main=main, echo=echo)
    run.open(config.to_dict(), may_change=RESUMABLE_CHANGES,
             normalize=lambda d: BFSTrainConfig.from_dict(d).to_dict())
    accelerator.wait_for_everyone()
    source = make_source(config)  # fails early on bad data

    torch.manual_seed(config.seed)
    state = run.load_state()
    parts, options = load_parts(config, None if state is None else state.get("codes")) if parts is None else parts
    modules = _trainable(config, parts)
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(modules, config.ema_halflife_nimg, config.ema_rampup)
    step = 0
    if state is not None:
        modules.load_state_dict(state["modules"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        echo(f"resuming {run.path} at step {step}")
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.to(accelerator.device)
    ema.model.to(accelerator.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    guided = config.stage != "vae" and bool(parts["transformer"].config.guidance_embeds)
    guidance = options["guidance_scale"] if guided else None
    text_parts = parts | {"_max_sequence_length": options["max_sequence_length"]}
    loss_module, optimizer = accelerator.prepare(StageLoss(config, text_parts, modules, guidance), optimizer)

    def export() -> None:
        run.export(lambda folder: write_export(config, parts, options, ema.model, folder), step)

    def save() -> None:
        run.save_state({"step": step, "modules": modules.state_dict(),
                        "ema": ema.model.state_dict(), "optimizer": optimizer.state_dict(),
                        "config": config.to_dict(), "codes": patch_codes(parts)})
        export()
        accelerator.wait_for_everyone()

    if run.export_is_stale():
        export()
    deadline, last = Deadline(stop_after_s), time.time()
    while step < config.total_steps:
        # Seeds depend only on (seed, step, rank): a resumed run sees the same data.
        base = (config.seed * 1_000_003 + step * world + rank) * config.batch_size
        batch = collate([source(seed) for seed in range(base, base + config.batch_size)])
        batch = {k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        generator = torch.Generator().manual_seed(base)
        for group in optimizer.param_groups:  # linear warm-up
            group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        with accelerator.autocast():
            losses = loss_module(batch, generator)
        values = {k: float(v.detach()) for k, v in losses.items()}
        run.check_losses(step + 1, values, config.max_loss)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        n = config.batch_size
        ema.update(modules, step * n * world, n * world)

        if step % config.log_every == 0:
            now = time.time()
            record = {"step": step, "nimg": step * n * world, **{k: round(v, 6) for k, v in values.items()},
                      "sec_per_step": round((now - last) / config.log_every, 4)}
            last = now
            run.log(record)
            if main:
                echo(f"step {step}/{config.total_steps} loss {record['loss']:.4f} "
                     f"({record['sec_per_step']:.2f} s/step)")
        timed_out = deadline.passed(accelerator)
        if step % config.checkpoint_every == 0 or step == config.total_steps or timed_out:
            save()
        if main and (step % config.preview_every == 0 or step == config.total_steps):
            _write_preview(config, parts, options, ema.model, run.preview_path(step))
            run.plot()
        if timed_out:
            echo(f"stopping after {deadline.elapsed():.0f} s at step {step}; run again to resume")
            break
    if not run.has_state():  # total_steps reached before the first save (nothing trained): export the start
        save()
    return run.export_dir
