"""Latent FBDD: the disassembly model on a pretrained latent-diffusion backbone (a VAE and an inpainting UNet).

The pixel-space :class:`~lamina.layeringdiff.fbdd.FBDDPipeline` is for small models trained
from scratch; this is the variant the paper's setting calls for, where FBDD adapts a large
pretrained generative prior. It starts from a Stable-Diffusion-style *inpainting* model
(hub id or local folder with ``unet/``, ``vae/``, ``scheduler/`` and, optionally,
``text_encoder/`` + ``tokenizer/``), because completing the background under an object is
inpainting. Our design (the paper's sections are not public):

* **Sample.** The latents of both layers at once, ``z = [z_B, z_F]`` (``2 c`` channels,
  ``c`` the VAE's latent channels), each ``vae.encode(x) * scaling_factor``; the network
  splits every pixel of ``I`` between the layers in one place, as in the pixel model.
* **Conditioning by concatenation, in the inpainting UNet's own layout**:
  ``[z_t (2c), m (1), E(I (1 - m)) (c), E(I) (c)]`` where ``m`` is the object's hole
  (``alpha > 0.01``, max-pooled to the latent grid) and ``E(I (1 - m))`` the masked-image
  latent, exactly what a Stable Diffusion inpainting UNet sees, plus the latent of the full
  composite (the object's colours are only there).
* **Initialisation from the inpainting UNet** (:func:`widen_unet`): every weight is copied
  except ``conv_in`` and ``conv_out``, which are widened. ``conv_in``: the ``z_B``, ``m``
  and masked-latent inputs get the inpainting UNet's own weights for its latent, mask and
  masked-image inputs; the new ``z_F`` and ``E(I)`` inputs start at zero. ``conv_out``: both
  the ``z_B`` and ``z_F`` outputs start as copies of the inpainting head. Before any
  training, the ``B`` half of the model *is* the inpainting model, so fine-tuning starts
  from a working background completer rather than from noise. A plain text-to-image UNet
  (``c`` input channels) also works: its latent weights are copied and the rest start at zero.
* **Prediction and noise schedule** are the backbone's (``epsilon`` for SD 1.x/2.x
  inpainting, ``v_prediction`` where its scheduler says so), sampled with DDIM; the prompt
  (default ``""``) goes through the backbone's text encoder, without classifier-free
  guidance (the task is reconstruction, not prompt following).
* **Resolution and HFA.** The UNet runs at ``sample_size * vae_scale_factor`` pixels; the
  decoded layers come back at the input's size through the same closed-form high-frequency
  alignment as the pixel model: ``F`` gets the composite's own detail, ``B`` gets it
  outside the hole, i.e. ``X_full = up(X_low) + (I - up(down(I)))`` (``B``: times ``1 - hole``);
  the recomposition projection of :func:`~lamina.layeringdiff.disassembly.finish_decomposition`
  then makes the layers reproduce the image exactly.
* **Effects** (shadows, reflections) are not a sampled channel here; :class:`FBDDDecomposer`
  finds them in the foreground stage's region by comparing the image with the completed
  background, as for pixel models without ``E``.

Training (:func:`latent_fbdd_loss`, ``lamina layeringdiff train --backbone MODEL``) fits the
UNet only; VAE and text encoder stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf

from ..errors import LaminaError
from ..tensors import resize, to_signed
from ._util import first_line, pipeline_inputs, step_kwargs
from .disassembly import project_recomposition

try:
    from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, SchedulerMixin, UNet2DConditionModel
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise LaminaError("latent FBDD needs diffusers: pip install 'diffusers>=0.42'") from exc

#: ``alpha`` above this is part of the object's hole.
HOLE_FLOOR = 0.01


def hole_mask(alpha: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The object's hole ``[N, 1, H, W]`` (``alpha > HOLE_FLOOR``), and on the latent grid (max-pooled)."""
    hole = (alpha > HOLE_FLOOR).to(alpha.dtype)
    return hole, (nnf.max_pool2d(hole, factor) if factor > 1 else hole)


def widen_unet(base: UNet2DConditionModel, latent_channels: int) -> UNet2DConditionModel:
    """An FBDD UNet initialised from an inpainting (``2c + 1`` inputs) or text-to-image (``c`` inputs) UNet.

    Inputs ``[z_B, z_F, m, E(I (1 - m)), E(I)]`` (``4c + 1``), outputs ``[z_B, z_F]`` (``2c``);
    see the module docstring for which weights are copied and which start at zero.
    """
    c = latent_channels
    c_in, c_out = int(base.config.in_channels), int(base.config.out_channels)
    if c_in not in (c, 2 * c + 1) or c_out != c:
        raise LaminaError(f"the backbone UNet has {c_in} input / {c_out} output channels; an FBDD backbone must be "
                          f"an inpainting UNet ({2 * c + 1} / {c}) or a text-to-image UNet ({c} / {c}) for a VAE with "
                          f"{c} latent channels")
    unet = UNet2DConditionModel.from_config({**base.config, "in_channels": 4 * c + 1, "out_channels": 2 * c})
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(("conv_in.weight", "conv_out."))}
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"conv_in.weight", "conv_out.weight", "conv_out.bias"}:
        raise LaminaError(f"cannot widen the backbone UNet: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        w_in = base.conv_in.weight
        weight = torch.zeros_like(unet.conv_in.weight)
        weight[:, :c] = w_in[:, :c]  # z_B <- the inpainting latent
        if c_in == 2 * c + 1:
            weight[:, 2 * c:3 * c + 1] = w_in[:, c:]  # hole mask and masked-image latent, as in inpainting
        unet.conv_in.weight.copy_(weight)
        unet.conv_out.weight.copy_(base.conv_out.weight.repeat(2, 1, 1, 1))
        unet.conv_out.bias.copy_(base.conv_out.bias.repeat(2))
    return unet.to(base.dtype)


@dataclass
class LatentFBDDOutput(BaseOutput):
    """As :class:`~lamina.layeringdiff.fbdd.FBDDPipelineOutput`: foreground and background; no effects."""

    foreground: Any
    background: Any
    effects: Any = None


class LatentFBDDPipeline(DiffusionPipeline):
    """FBDD in the latent space of a pretrained VAE; the UNet is widened from an inpainting UNet.

    Build one with :meth:`from_backbone` (any Stable-Diffusion-style inpainting model, hub id or
    folder), train it with ``lamina layeringdiff train --backbone``, and load the result with
    :meth:`from_pretrained` (or :func:`~lamina.layeringdiff.fbdd.load_pipeline`, which picks
    the class from ``model_index.json``). Same call and output as the pixel pipeline.

    Args:
        vae: :class:`~diffusers.AutoencoderKL`.
        unet: :class:`~diffusers.UNet2DConditionModel` with ``4c + 1`` inputs and ``2c`` outputs (:func:`widen_unet`).
        scheduler: the backbone's noise schedule (DDIM).
        text_encoder, tokenizer: the backbone's (optional: without them the UNet gets zero embeddings).
        inference_steps: default number of denoising steps.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: SchedulerMixin,
                 text_encoder: Any = None, tokenizer: Any = None, inference_steps: int = 20) -> None:
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(inference_steps=int(inference_steps))
        c = self.latent_channels
        if unet.config.in_channels != 4 * c + 1 or unet.config.out_channels != 2 * c:
            raise LaminaError(f"not a latent FBDD UNet: {unet.config.in_channels} input / {unet.config.out_channels} "
                              f"output channels (expected {4 * c + 1} / {2 * c}; build it with widen_unet)")

    # ------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, model: str | Path, inference_steps: int = 20, **kwargs: Any) -> LatentFBDDPipeline:
        """A new (untrained) latent FBDD from an inpainting model: folder or hub id with ``unet/``, ``vae/``, etc.

        ``kwargs`` go to every ``from_pretrained`` (e.g. ``torch_dtype``, ``revision``). A hub id that
        is neither cached nor reachable fails at once with a one-line error.
        """
        from ..extras import require

        transformers = require("transformers", "prompt")
        AutoTokenizer, CLIPTextModel = transformers.AutoTokenizer, transformers.CLIPTextModel
        path = Path(model).expanduser()
        if path.is_dir():
            kwargs.setdefault("local_files_only", True)
            model = str(path)
        elif not kwargs.get("local_files_only"):  # a hub id: fail fast when not cached and the hub does not answer
            from ..hub import require_hub

            try:
                UNet2DConditionModel.load_config(model, subfolder="unet", local_files_only=True)
            except (OSError, ValueError):
                require_hub("FBDD backbone", model)
        try:
            base = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **kwargs)
            vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **kwargs)
            scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler", **kwargs)
            text_encoder = tokenizer = None
            if not path.is_dir() or (path / "text_encoder").is_dir():
                text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **kwargs)
                tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer", **kwargs)
        except (OSError, ValueError) as exc:
            raise LaminaError(f"cannot load the FBDD backbone {str(model)!r}: {first_line(exc)}") from None
        if base.config.get("addition_embed_type") is not None:
            raise LaminaError(f"the backbone {str(model)!r} needs added conditioning (SDXL-style "
                              f"{base.config.addition_embed_type!r}); use a Stable Diffusion 1.x/2.x inpainting model")
        unet = widen_unet(base, int(vae.config.latent_channels))
        return cls(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                   inference_steps=inference_steps)

    # ------------------------------------------------------------ geometry
    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def working_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels the model runs at: the UNet's ``sample_size`` times the VAE's factor."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    # ------------------------------------------------------------ encoders
    def encode_prompt(self, prompt: str, batch: int) -> torch.Tensor:
        """Text embeddings ``[N, L, D]`` of ``prompt`` (zeros ``[N, 1, D]`` without a text encoder)."""
        if self.text_encoder is None or self.tokenizer is None:
            dim = int(self.unet.config.cross_attention_dim)
            return torch.zeros(batch, 1, dim, device=self.device, dtype=self.unet.dtype)
        ids = self.tokenizer([prompt] * batch, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0].to(self.unet.dtype)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE latents ``[N, c, H/f, W/f]`` of ``[N, 3, H, W]`` images in [0, 1] (posterior mean if no generator)."""
        posterior = self.vae.encode(to_signed(images).to(self.vae.dtype)).latent_dist
        z = posterior.sample(generator) if generator is not None else posterior.mode()
        shift = self.vae.config.get("shift_factor") or 0.0
        return (z - shift) * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] of VAE latents."""
        shift = self.vae.config.get("shift_factor") or 0.0
        x = self.vae.decode((latents / self.vae.config.scaling_factor + shift).to(self.vae.dtype)).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def condition(self, image: torch.Tensor, alpha: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """The UNet's conditioning channels ``[m, E(I (1 - m)), E(I)]`` for images and alphas at the working size."""
        hole, latent_hole = hole_mask(alpha, self.vae_scale_factor)
        masked = image * (1.0 - hole) + 0.5 * hole  # grey, 0 in [-1, 1], like diffusers' inpainting
        return torch.cat([latent_hole, self.encode(masked, generator), self.encode(image, generator)],
                         dim=1).to(self.unet.dtype)

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        alpha: Any,
        prompt: str = "",
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        projection: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> LatentFBDDOutput | tuple[Any, Any, Any]:
        """Decompose ``image`` (``[H, W, 3]``, ``[N, H, W, 3]`` or ``[N, 3, H, W]`` in [0, 1]) given ``alpha``.

        Returns foreground colours and completed background at the input's size (see
        :class:`~lamina.layeringdiff.fbdd.FBDDPipeline` for the arguments and output shapes).
        """
        image_t, alpha_t = pipeline_inputs(image, alpha, output_type, self.device)
        n, size, full = image_t.shape[0], self.working_size(), tuple(image_t.shape[-2:])
        image_w, alpha_w = resize(image_t, size), resize(alpha_t, size)
        condition = self.condition(image_w, alpha_w)
        embeddings = self.encode_prompt(prompt, n)

        c, f = self.latent_channels, self.vae_scale_factor
        z = randn_tensor((n, 2 * c, size[0] // f, size[1] // f), generator=generator, device=self.device,
                         dtype=self.unet.dtype) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps or int(self.config.inference_steps), device=self.device)
        extra = step_kwargs(self.scheduler, generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([self.scheduler.scale_model_input(z, t), condition], dim=1)
            out = self.unet(model_input, t, encoder_hidden_states=embeddings).sample
            z = self.scheduler.step(out, t, z, **extra).prev_sample

        # Decode at the working size; back to full size with the composite's own high frequencies (HFA).
        layers = self.decode(torch.cat([z[:, :c], z[:, c:]], dim=0))
        background_w, foreground_w = layers[:n], layers[n:]
        detail = image_t - resize(image_w, full)
        hole = hole_mask(alpha_t, 1)[0]
        foreground = (resize(foreground_w, full) + detail).clamp(0.0, 1.0)
        background = (resize(background_w, full) + (1.0 - hole) * detail).clamp(0.0, 1.0)
        if projection:
            foreground, background = project_recomposition(image_t, alpha_t, foreground, background)
        if output_type == "np":
            foreground = foreground.permute(0, 2, 3, 1).cpu().numpy()
            background = background.permute(0, 2, 3, 1).cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return foreground, background, None
        return LatentFBDDOutput(foreground=foreground, background=background, effects=None)


def latent_fbdd_loss(
    pipeline: LatentFBDDPipeline,
    unet: torch.nn.Module,
    image: torch.Tensor,
    alpha: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor,
    timesteps: torch.Tensor,
    generator: torch.Generator | None = None,
    prompt: str = "",
) -> dict[str, torch.Tensor]:
    """One training loss of latent FBDD: the backbone's denoising objective on ``[z_B, z_F]``.

    Args:
        pipeline: supplies the frozen VAE, text encoder and noise schedule.
        unet: the UNet being trained (``pipeline.unet`` or its distributed wrapper).
        image, foreground, background: ``[N, 3, H, W]`` in [0, 1] at the working size;
            alpha ``[N, 1, H, W]`` the conditioning matte.
        timesteps: ``[N]`` training timesteps.
    Returns:
        ``{"loss", "v"}`` (``v``: the same MSE, detached, for logging like the pixel model).
    """
    with torch.no_grad():
        condition = pipeline.condition(image, alpha, generator)
        x0 = torch.cat([pipeline.encode(background, generator), pipeline.encode(foreground, generator)], dim=1)
        embeddings = pipeline.encode_prompt(prompt, image.shape[0])
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps = timesteps.to(x0.device)
    scheduler = pipeline.scheduler
    xt = scheduler.add_noise(x0, noise, timesteps)
    kind = scheduler.config.prediction_type
    target = {"epsilon": noise, "sample": x0}.get(kind)
    if target is None:
        if kind != "v_prediction":
            raise LaminaError(f"unsupported prediction_type {kind!r} of the backbone's scheduler")
        target = scheduler.get_velocity(x0, noise, timesteps)
    prediction = unet(torch.cat([xt, condition], dim=1), timesteps, encoder_hidden_states=embeddings).sample
    loss = (prediction.float() - target.float()).square().mean()
    return {"loss": loss, "v": loss.detach()}
