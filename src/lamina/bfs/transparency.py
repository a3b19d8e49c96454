"""The transparency decoder: an RGBA :class:`~diffusers.AutoencoderKL` whose latents live in the RGB VAE's space.

BFS decodes the foreground branch's latent with a VAE that has 4 image channels; its
architecture and training are not published. Ours (LayerDiffuse-like, see bfs.md):

* **Input** (:func:`layer_to_vae_input`): the layer composited over a neutral grey,
  ``C = a F + g (1 - a)``, plus its alpha ``a``; both mapped to ``[-1, 1]``. Where the layer is
  opaque ``C = F``, so the RGB VAE's latent of ``C`` is a natural target for the RGBA
  encoder's latent (an identity loss in training keeps the two spaces together, so that one
  transformer can denoise both branches).
* **Output** (:func:`vae_output_to_layer`): straight RGB and alpha in ``[-1, 1]`` -> ``[0, 1]``;
  soft (shadow) alpha is a plain value of the alpha channel.
* **Initialisation** (:func:`widen_vae`): the RGB VAE with ``conv_in`` / ``conv_out`` widened;
  the alpha input starts with zero weights (the encoder sees only ``C``) and the alpha output
  with zero weights and bias 1 (opaque), so before training the RGBA VAE encodes and decodes
  the colour exactly as the RGB VAE does.

The losses that train it belong to :mod:`lamina.bfs.losses`; :func:`composite_over` is the
"over" operator they need.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from ..errors import LaminaError

#: The neutral grey (in ``[0, 1]``) a layer is composited over before encoding.
NEUTRAL_GREY = 0.5
#: Alpha output bias of a freshly widened VAE, in the VAE's ``[-1, 1]`` range: 1 means opaque.
OPAQUE_ALPHA_BIAS = 1.0


def widen_vae(vae: AutoencoderKL, channels: int = 4) -> AutoencoderKL:
    """An ``AutoencoderKL`` with ``channels`` (RGBA) image channels, initialised from the RGB ``vae``.

    ``conv_in``: RGB weights copied, extra input channels zero. ``conv_out``: RGB copied, extra
    outputs zero weights and bias :data:`OPAQUE_ALPHA_BIAS`. Everything else is copied, so the
    new VAE's latent of ``[C, a]`` is ``vae``'s latent of ``C`` and its decoded RGB is ``vae``'s.
    """
    base_channels = int(vae.config.in_channels)
    if channels <= base_channels or int(vae.config.out_channels) != base_channels:
        raise LaminaError(f"widen_vae: cannot widen a {base_channels}-channel VAE to {channels} channels")
    config = dict(vae.config)
    config.update(in_channels=channels, out_channels=channels)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    wide = AutoencoderKL.from_config(config)
    state = vae.state_dict()
    own = wide.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
            elif name == "encoder.conv_in.weight":
                target.zero_()
                target[:, :base_channels] = value
            elif name == "decoder.conv_out.weight":
                target.zero_()
                target[:base_channels] = value
            elif name == "decoder.conv_out.bias":
                target.fill_(OPAQUE_ALPHA_BIAS)
                target[:base_channels] = value
            else:  # pragma: no cover - AutoencoderKL has no other channel-dependent weights
                raise LaminaError(f"widen_vae: unexpected shape change of {name}")
    wide.load_state_dict(own)
    param = next(vae.parameters())
    return wide if param.dtype == torch.float32 and param.device.type == "cpu" else wide.to(param.device, param.dtype)


def composite_over(rgba: torch.Tensor, background: torch.Tensor | float) -> torch.Tensor:
    """``a F + (1 - a) B``: straight ``rgba`` [B, 4, H, W] over ``background`` ([B, 3, H, W] or a grey), in [0, 1]."""
    if rgba.ndim != 4 or rgba.shape[1] != 4:
        raise LaminaError(f"expected straight RGBA [B, 4, H, W], got {tuple(rgba.shape)}")
    alpha = rgba[:, 3:4]
    return rgba[:, :3] * alpha + background * (1 - alpha)


def layer_to_vae_input(rgba: torch.Tensor, neutral: float = NEUTRAL_GREY) -> torch.Tensor:
    """The RGBA VAE's input [B, 4, H, W] in ``[-1, 1]``: the layer over ``neutral`` grey, then its alpha."""
    over = composite_over(rgba, neutral)
    return torch.cat([over, rgba[:, 3:4]], dim=1) * 2 - 1


def vae_output_to_layer(decoded: torch.Tensor) -> torch.Tensor:
    """Straight RGBA [B, 4, H, W] in ``[0, 1]`` from the RGBA VAE's output in ``[-1, 1]`` (clamped)."""
    return ((decoded.float() + 1) / 2).clamp(0, 1)


def encode_layer(trans_vae: AutoencoderKL, rgba: torch.Tensor, generator: torch.Generator | None = None,
                 sample: bool = False) -> torch.Tensor:
    """Latents [B, c, H/s, W/s] (shifted and scaled like the RGB VAE's) of straight ``rgba`` [B, 4, H, W] in [0, 1]."""
    from .pipeline import encode_image

    return encode_image(trans_vae, layer_to_vae_input(rgba), generator=generator, sample=sample)


def decode_layer(trans_vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Straight RGBA [B, 4, H, W] in ``[0, 1]`` (soft alpha) from foreground latents [B, c, h, w]."""
    from .pipeline import decode_latents

    return vae_output_to_layer(decode_latents(trans_vae, latents))
