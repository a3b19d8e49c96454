"""BFS sampling: the building blocks shared with training, and :class:`BFSPipeline`.

Building blocks (pure functions on tensors; training uses the same ones):

* :func:`encode_prompts`: CLIP pooled + T5 token embeddings and FLUX's text ids;
* :func:`encode_image` / :func:`decode_latents`: VAE with its shift and scaling;
* :func:`pack_latents` / :func:`unpack_latents` / :func:`latent_image_ids`: FLUX's 2x2 packing;
* :func:`prepare_fill_condition`: the Fill condition ``[pack(E(B)), pack(unshuffle(M))]`` with the
  **unmasked** background (BFS), not stock Fill's ``E(B * (1 - M))``;
* :func:`predict_velocity`: one transformer call on the ``[composite; foreground]`` batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import LaminaError

try:
    from diffusers.utils import BaseOutput
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise ImportError("lamina.bfs needs diffusers: pip install 'lamina[diffusion]'") from exc

from .joint import BFSJointAdapter, BFSJointProcessor

# ---------------------------------------------------------------------------- outputs


@dataclass
class PromptEmbeddings(BaseOutput):
    """Encoded captions: ``prompt_embeds`` [B, L, joint_attention_dim] (T5), ``pooled`` [B, pooled_projection_dim]
    (CLIP) and ``text_ids`` [L, 3] (zeros, FLUX's text positions)."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor

    def repeat(self, times: int) -> PromptEmbeddings:
        """The batch repeated ``times`` times (row order ``[all, all, ...]``)."""
        return PromptEmbeddings(self.prompt_embeds.repeat(times, 1, 1), self.pooled.repeat(times, 1), self.text_ids)


@dataclass
class VelocityOutput(BaseOutput):
    """Predicted flow-matching velocities (``noise - clean`` in packed latent space), each [B, N, 4c]:
    ``velocity_x`` for the composite branch, ``velocity_y`` for the foreground branch."""

    velocity_x: torch.Tensor
    velocity_y: torch.Tensor


# ---------------------------------------------------------------------------- text


def encode_prompts(
    prompts: str | list[str],
    tokenizer: Any,
    text_encoder: nn.Module,
    tokenizer_2: Any,
    text_encoder_2: nn.Module,
    max_sequence_length: int = 512,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> PromptEmbeddings:
    """FLUX's text conditioning of ``prompts`` (B captions): CLIP pooled output and T5 hidden states.

    As in ``FluxPipeline.encode_prompt``: both tokenizers pad to their length (CLIP: its
    ``model_max_length``; T5: ``max_sequence_length``, capped by ``tokenizer_2.model_max_length``)
    and truncate.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    device = torch.device(device) if device is not None else next(text_encoder_2.parameters()).device
    clip_length = int(min(getattr(tokenizer, "model_max_length", 77), 77))
    t5_length = int(min(max_sequence_length, getattr(tokenizer_2, "model_max_length", max_sequence_length)))
    clip_ids = tokenizer(prompts, padding="max_length", max_length=clip_length, truncation=True,
                         return_tensors="pt").input_ids
    t5_ids = tokenizer_2(prompts, padding="max_length", max_length=t5_length, truncation=True,
                         return_tensors="pt").input_ids
    clip_device = next(text_encoder.parameters()).device
    pooled = text_encoder(clip_ids.to(clip_device), output_hidden_states=False).pooler_output
    t5_device = next(text_encoder_2.parameters()).device
    embeds = text_encoder_2(t5_ids.to(t5_device), output_hidden_states=False)[0]
    dtype = dtype or embeds.dtype
    text_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype)
    return PromptEmbeddings(embeds.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype), text_ids)


# ---------------------------------------------------------------------------- latents


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent cell of a diffusers VAE (``2 ** (len(block_out_channels) - 1)``)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _vae_shift_scale(vae: nn.Module) -> tuple[float, float]:
    shift = vae.config.get("shift_factor", None)
    return float(shift or 0.0), float(vae.config.scaling_factor)


def encode_image(vae: nn.Module, image: torch.Tensor, generator: torch.Generator | None = None,
                 sample: bool = False) -> torch.Tensor:
    """Latents ``(E(image) - shift) * scale`` [B, c, H/s, W/s] of ``image`` [B, C, H, W] in ``[-1, 1]``.

    ``sample`` draws from the posterior (training targets); otherwise its mode (conditions).
    """
    dist = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = dist.sample(generator) if sample else dist.mode()
    shift, scale = _vae_shift_scale(vae)
    return (latents - shift) * scale


def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``vae.decode(latents / scale + shift)``: [B, C, H, W], nominally in ``[-1, 1]`` (not clamped)."""
    shift, scale = _vae_shift_scale(vae)
    return vae.decode((latents / scale + shift).to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """FLUX's 2x2 packing: [B, C, H, W] -> [B, H/2 * W/2, 4C] (``H``, ``W`` even)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise LaminaError(f"latents of size {h}x{w} cannot be packed 2x2 (sides must be even)")
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: [B, H/2 * W/2, 4C] -> [B, C, H, W] (``height``, ``width`` in latent cells)."""
    b, n, c4 = packed.shape
    if n != (height // 2) * (width // 2):
        raise LaminaError(f"{n} packed tokens do not match a {height}x{width} latent grid")
    latents = packed.view(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, c4 // 4, height, width)


def latent_image_ids(height: int, width: int, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """FLUX image position ids [H/2 * W/2, 3] , ``(0, row, col)`` per token, of a latent grid ``height x width``."""
    h, w = height // 2, width // 2
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device=device, dtype=dtype)


def pack_mask(mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Fill's mask condition: [B, 1, H, W] in ``{0, 1}`` -> pixel-unshuffled by ``s`` and packed: [B, N, 4 s^2].

    Channel order as ``FluxFillPipeline.prepare_mask_latents`` (``(dy, dx)`` inside each latent cell).
    """
    b, _, height, width = mask.shape
    s = scale_factor
    if height % (2 * s) or width % (2 * s):
        raise LaminaError(f"mask of size {height}x{width} is not a multiple of {2 * s} (VAE factor x 2)")
    h, w = height // s, width // s
    cells = mask[:, 0].reshape(b, h, s, w, s).permute(0, 2, 4, 1, 3).reshape(b, s * s, h, w)
    return pack_latents(cells)


def prepare_fill_condition(vae: nn.Module, background: torch.Tensor, mask: torch.Tensor,
                           masked: bool = False) -> torch.Tensor:
    """The Fill condition [B, N, 4c + 4 s^2]: packed latents of the background, then the packed mask.

    Args:
        background: [B, 3, H, W] in ``[-1, 1]`` (``H``, ``W`` multiples of ``2 s``).
        mask: [B, 1, H, W], 1 inside the region to synthesise, 0 elsewhere.
        masked: encode ``B * (1 - M)`` as stock ``FluxFillPipeline`` does; BFS encodes the unmasked ``B``
            (the default), because the layer's shadows fall on the visible background.
    """
    if background.shape[-2:] != mask.shape[-2:]:
        raise LaminaError(f"background {tuple(background.shape[-2:])} and mask {tuple(mask.shape[-2:])} sizes differ")
    mask = mask.to(device=background.device, dtype=background.dtype)
    image = background * (1 - mask) if masked else background
    latents = pack_latents(encode_image(vae, image))
    packed_mask = pack_mask(mask, vae_scale_factor(vae)).to(device=latents.device, dtype=latents.dtype)
    return torch.cat([latents, packed_mask], dim=-1)


# ---------------------------------------------------------------------------- the transformer call


def _has_joint_processors(transformer: nn.Module) -> bool:
    blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
    return any(isinstance(b.attn.processor, BFSJointProcessor) for b in blocks)


def predict_velocity(
    transformer: nn.Module,
    joint: BFSJointAdapter | None,
    latents_x: torch.Tensor,
    latents_y: torch.Tensor,
    condition: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    timestep: torch.Tensor | float,
    guidance: torch.Tensor | float | None = None,
) -> VelocityOutput:
    """Velocities of both branches from one call of ``transformer`` on the batch ``[x; y]``.

    Args:
        transformer: a stock Fill-style ``FluxTransformer2DModel``.
        joint: the coupling; attached to ``transformer`` here if it is not yet. ``None`` runs the
            branches uncoupled (any attached joint processors are switched off for this call).
        latents_x, latents_y: packed noisy latents [B, N, 4c] of the composite and foreground branches.
        condition: Fill condition [B, N, 4c + 4 s^2] (:func:`prepare_fill_condition`), shared by both branches.
        prompt_embeds: [B, L, D]; pooled: [B, P]; text_ids: [L, 3]; img_ids: [N, 3] (both branches share them).
        timestep: sigma in ``[0, 1]`` ([B] or a number; FLUX multiplies it by 1000 itself).
        guidance: guidance-embedding value ([B] or a number) for guidance-distilled models, else ``None``.
    Returns:
        :class:`VelocityOutput` with ``velocity_x``, ``velocity_y`` [B, N, 4c] (``noise - clean``).
    """
    if latents_x.shape != latents_y.shape:
        raise LaminaError(f"branch latents differ in shape: {tuple(latents_x.shape)} vs {tuple(latents_y.shape)}")
    b, n, _ = latents_x.shape
    if condition.shape[:2] != (b, n):
        raise LaminaError(f"condition {tuple(condition.shape)} does not match latents {tuple(latents_x.shape)}")
    expected = int(transformer.config.in_channels)
    if latents_x.shape[-1] + condition.shape[-1] != expected:
        raise LaminaError(f"latents ({latents_x.shape[-1]}) + condition ({condition.shape[-1]}) channels != the "
                          f"transformer's in_channels {expected}")
    dtype = transformer.dtype
    device = latents_x.device
    hidden = torch.cat([torch.cat([latents_x, condition], -1), torch.cat([latents_y, condition], -1)]).to(dtype)

    def batch(value: torch.Tensor | float | None) -> torch.Tensor | None:
        if value is None:
            return None
        value = torch.as_tensor(value, device=device, dtype=torch.float32)
        return (value.expand(b) if value.ndim == 0 else value).repeat(2).to(dtype)

    kwargs: dict[str, Any] | None = None
    if joint is not None:
        if not joint.is_attached(transformer):
            joint.attach(transformer)
        kwargs = {"bfs_image_tokens": n}
    elif _has_joint_processors(transformer):
        kwargs = {"bfs_joint": False}
    guided = bool(transformer.config.guidance_embeds)
    if guided and guidance is None:
        raise LaminaError("this transformer has a guidance embedding (guidance_embeds=True): pass guidance")
    out = transformer(
        hidden_states=hidden,
        encoder_hidden_states=prompt_embeds.repeat(2, 1, 1).to(dtype),
        pooled_projections=pooled.repeat(2, 1).to(dtype),
        timestep=batch(timestep),
        img_ids=img_ids,
        txt_ids=text_ids,
        guidance=batch(guidance) if guided else None,
        joint_attention_kwargs=kwargs,
        return_dict=False,
    )[0]
    velocity_x, velocity_y = out.chunk(2)
    return VelocityOutput(velocity_x=velocity_x, velocity_y=velocity_y)
