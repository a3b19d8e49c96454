"""HFA, high-frequency alignment: a small learned refinement of FBDD's layers at the output resolution.

LayeringDiff follows its decomposition model with HFA modules that restore the fine detail the
low-resolution decomposition loses and align the layers' high frequencies with the composite
(abstract; the method sections are not public). lamina's FBDD samples at its UNet's working
size (64 px for the built-in model) and upsamples; the parameter-free part of the alignment
is already in :class:`~lamina.layeringdiff.fbdd.FBDDPipeline`: full-resolution classical
estimates as the residuals' base, and the recomposition projection, which copies what the
layers miss of the composite into the layer that shows it. :class:`HFANet` is the learned
part, **our design**:

* **Where.** After FBDD has produced full-resolution ``F_0``, ``B_0`` (and the effects'
  opacity ``E``), before the projection: ``F = F_0 + dF``, ``B = B_0 + dB``. The projection
  still follows, so the layers recompose the image exactly whatever the network does.
  :func:`refine` runs it only on the box around the object and its effects, grown by its
  receptive field: elsewhere the projection makes ``B`` the image and ``F`` does not show. The
  pipeline skips it when the output is more than ``max_scale`` times its working size.
* **Inputs** (all at the output resolution, mapped to ``[-1, 1]``): the composite ``I``, the
  object's alpha, ``E``, ``F_0``, ``B_0`` and the recomposition residual
  ``r = I - t F_0 - (1 - t) B_0`` (``t = alpha + E (1 - alpha)``, the layer's alpha), which is
  exactly the detail the upsampled layers miss where they are visible.
* **Network.** A fully convolutional stack of residual blocks with growing dilation (1, 2, 4,
  8, 1 by default: a receptive field of 47 px, to carry texture from the visible surroundings
  into the hidden background) and no normalisation, so it runs at any
  resolution. Its last convolution starts at zero: before training it changes nothing.
* **Training** (:func:`hfa_loss`, ``lamina layeringdiff train --preset builtin-hfa``): the
  FBDD model is frozen and sampled exactly as at inference, on procedural scenes at several
  output sizes (1 to 2.5 times its working size). The loss (:func:`hfa_loss`) is on the refined
  layers where they matter and before the projection: ``B`` where the object or its effects
  hide it, ``F`` weighted by alpha. (A first version scored the projected layers instead; it
  learned mostly to undo what projecting with the raw effects opacity does to ``B``, which the
  decomposer's own effects handling already avoids, and made the decomposer's layers worse.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from ..errors import LaminaError
from .unet_lite import AttrDict

#: Input channels: I (3), alpha (1), E (1), F_0 (3), B_0 (3), r (3); output: dF (3), dB (3).
IN_CHANNELS, OUT_CHANNELS = 14, 6
#: :func:`refine` works on the box around pixels whose alpha or effects opacity exceed this (a
#: UNet's effects channel is rarely exactly 0, and the decomposer drops effects below 0.12 anyway).
REGION_FLOOR = 0.01


@dataclass
class HFAOutput:
    """``foreground``, ``background``: ``[N, 3, H, W]`` refined layers in ``[0, 1]`` (not yet projected)."""

    foreground: torch.Tensor
    background: torch.Tensor


class _Block(nn.Module):
    """``x + conv(silu(conv(silu(x))))``, the first convolution dilated."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(nnf.silu(self.conv1(nnf.silu(x))))


class HFABase:
    """The network of :class:`HFANet` (module docstring), shared with :class:`LiteHFA`; a mixin over ``nn.Module``
    whose ``config`` has ``channels``, ``dilations`` and ``max_scale`` (see :class:`HFANet`)."""

    config: Any

    def _build(self, channels: int, dilations: tuple[int, ...]) -> None:
        if channels < 1 or not dilations or min(dilations) < 1:
            raise LaminaError(f"HFANet needs channels >= 1 and dilations >= 1, got {channels} and {dilations}")
        self.conv_in = nn.Conv2d(IN_CHANNELS, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(channels, int(d)) for d in dilations)
        self.conv_out = nn.Conv2d(channels, OUT_CHANNELS, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # identity at the start
        nn.init.zeros_(self.conv_out.bias)

    def applies(self, scale: float) -> bool:
        """Whether an output ``scale`` times the FBDD working size is within the trained range."""
        return self.config.max_scale is None or scale <= self.config.max_scale + 1e-6

    @property
    def radius(self) -> int:
        """Receptive-field radius in pixels: an output pixel depends on inputs at most this far away."""
        return 2 + sum(int(d) + 1 for d in self.config.dilations)

    def forward(self, image: torch.Tensor, alpha: torch.Tensor, effects: torch.Tensor | None,
                foreground: torch.Tensor, background: torch.Tensor) -> HFAOutput:
        """Refine upsampled layers.

        Args:
            image: the composite ``[N, 3, H, W]`` in ``[0, 1]``.
            alpha: the object's matte ``[N, 1, H, W]`` in ``[0, 1]``.
            effects: the effects' opacity ``E`` ``[N, 1, H, W]`` in ``[0, 1]`` (``None``: no effects).
            foreground, background: FBDD's ``F_0``, ``B_0`` ``[N, 3, H, W]`` in ``[0, 1]``.
        Returns:
            :class:`HFAOutput`, ``F_0 + dF`` and ``B_0 + dB`` clamped to ``[0, 1]``.
        """
        effects = torch.zeros_like(alpha) if effects is None else effects
        total = alpha + effects * (1.0 - alpha)
        residual = image - total * foreground - (1.0 - total) * background
        x = torch.cat([image * 2 - 1, alpha * 2 - 1, effects * 2 - 1, foreground * 2 - 1, background * 2 - 1,
                       residual], dim=1).to(self.conv_in.weight.dtype)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        delta = self.conv_out(nnf.silu(h)).float()
        return HFAOutput(foreground=(foreground + delta[:, :3]).clamp(0.0, 1.0),
                         background=(background + delta[:, 3:]).clamp(0.0, 1.0))


class LiteHFA(HFABase, nn.Module):
    """:class:`HFANet` for inference without diffusers: the same network and parameter names, loaded with
    :meth:`from_folder` from the folder ``HFANet.save_pretrained`` writes (``config.json`` + safetensors)."""

    def __init__(self, channels: int = 24, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 max_scale: float | None = None) -> None:
        nn.Module.__init__(self)
        self.config = AttrDict(channels=channels, dilations=tuple(dilations), max_scale=max_scale)
        self._build(channels, tuple(dilations))

    @classmethod
    def from_folder(cls, folder: str | Path) -> LiteHFA:
        """The HFA saved in ``folder``, its weights loaded strictly."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        model = cls(**{key: config[key] for key in ("channels", "dilations", "max_scale") if key in config})
        model.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"), strict=True)
        return model.eval()


def __getattr__(name: str) -> Any:
    """:class:`HFANet` (a diffusers ``ModelMixin``) is defined in :mod:`.hfa_model`, imported on first use, so
    that the built-in model's inference (:class:`LiteHFA`) never imports diffusers. Saved pipelines name this
    module as the HFA's library, and diffusers' loader looks up its base class ``ModelMixin`` here too."""
    if name == "HFANet":
        from .hfa_model import HFANet

        globals()["HFANet"] = HFANet
        return HFANet
    if name == "ModelMixin":
        from .hfa_model import ModelMixin

        return ModelMixin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def refine(hfa: HFABase, image: torch.Tensor, alpha: torch.Tensor, effects: torch.Tensor | None,
           foreground: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``hfa`` applied where it matters: on the box around the object and its effects (alpha or ``E``
    above :data:`REGION_FLOOR`, over the batch), grown by the network's receptive field, so inside that
    region the result equals running it on the whole image; elsewhere ``F_0``, ``B_0`` are kept (there the
    projection makes ``B`` the image, and ``F`` has no weight). Shapes as in :meth:`HFANet.forward`;
    returns ``(F, B)``."""
    hidden = alpha > REGION_FLOOR if effects is None else (alpha > REGION_FLOOR) | (effects > REGION_FLOOR)
    hidden = hidden.any(dim=0)[0]  # [H, W]
    rows, cols = torch.nonzero(hidden.any(dim=1))[:, 0], torch.nonzero(hidden.any(dim=0))[:, 0]
    if rows.numel() == 0:
        return foreground, background
    h, w = alpha.shape[-2:]
    y0, y1 = max(int(rows[0]) - hfa.radius, 0), min(int(rows[-1]) + 1 + hfa.radius, h)
    x0, x1 = max(int(cols[0]) - hfa.radius, 0), min(int(cols[-1]) + 1 + hfa.radius, w)
    crop = (..., slice(y0, y1), slice(x0, x1))
    out = hfa(image[crop], alpha[crop], None if effects is None else effects[crop], foreground[crop], background[crop])
    foreground, background = foreground.clone(), background.clone()
    foreground[crop], background[crop] = out.foreground, out.background
    return foreground, background


def hfa_loss(
    foreground_hat: torch.Tensor,
    background_hat: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor,
    alpha: torch.Tensor,
    hidden: torch.Tensor,
    foreground_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The HFA training loss (our design), in the benchmark's own terms, where the layers are unknown.

    ``background = sum(hidden (B_hat - B)^2) / sum(hidden)`` (squared error: the benchmark scores the
    hidden background by PSNR; elsewhere the projection makes ``B`` the image itself);
    ``foreground = sum(alpha |F_hat - F|) / sum(alpha)``, the benchmark's alpha-weighted L1;
    ``loss = background + foreground_weight * foreground``. Means over channels too; an empty mask gives 0.

    Args:
        foreground_hat, background_hat: the refined layers ``[N, 3, H, W]`` in ``[0, 1]``.
        foreground, background: their ground truth ``[N, 3, H, W]`` (the background without effects).
        alpha: the object's matte ``[N, 1, H, W]`` (where ``F`` is the object's colour).
        hidden: ``[N, 1, H, W]``, 1 where the object or its effects hide the background.
    Returns:
        ``{"loss", "background", "foreground"}``; ``loss`` is the one to back-propagate.
    """
    background_term = (hidden * (background_hat - background).square()).sum() / (3.0 * hidden.sum()).clamp_min(1e-8)
    foreground_term = (alpha * (foreground_hat - foreground).abs()).sum() / (3.0 * alpha.sum()).clamp_min(1e-8)
    return {"loss": background_term + foreground_weight * foreground_term, "background": background_term.detach(),
            "foreground": foreground_term.detach()}
