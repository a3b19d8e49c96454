"""The diffusers form of the pixel-space FBDD: :class:`FBDDPipeline` (``save_pretrained`` / ``from_pretrained``,
training, offloading) over the sampling of :class:`~lamina.layeringdiff.fbdd.FBDDSampler`. Also importable from
:mod:`lamina.layeringdiff.fbdd`; the built-in model's inference uses :class:`~lamina.layeringdiff.fbdd.LiteFBDD`
instead and never imports this module (nor diffusers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LaminaError
from ._util import step_kwargs
from .fbdd import FBDDSampler, check_prefill

try:
    from diffusers import DiffusionPipeline, SchedulerMixin, UNet2DModel
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise LaminaError("the learned LayeringDiff path (FBDD) needs diffusers: pip install 'diffusers>=0.42'") from exc

from .hfa_model import HFANet


@dataclass
class FBDDPipelineOutput(BaseOutput):
    """``foreground`` and ``background``: ``[N, H, W, 3]`` arrays (``"np"``) or ``[N, 3, H, W]`` tensors (``"pt"``);
    ``effects``: the effects' opacity ``E`` ``[N, H, W]`` (``[N, 1, H, W]``; the layer's alpha is
    ``alpha + E (1 - alpha)``), or ``None`` for a UNet without effects."""

    foreground: Any
    background: Any
    effects: Any = None


class FBDDPipeline(FBDDSampler, DiffusionPipeline):
    """Sample the foreground colours and the completed background of a composite, given alpha.

    Args:
        unet: a :class:`~diffusers.UNet2DModel` with 10 input channels (``[x_t, I, alpha]``)
            and 6 output channels (``v`` of ``[F, B]``), or 11 and 7 with the effects channel
            ``E``; see :func:`make_unet`.
        scheduler: a diffusers scheduler configured for v-prediction (:func:`make_scheduler`).
        prefill: ``"classical"`` or ``"telea"``: the UNet samples residuals over that classical
            estimate (6 or 3 more input channels, :func:`compute_prefill`, the module
            docstring); ``None``: the layers themselves.
        inference_steps: the number of denoising steps the model was trained for (the default
            of :class:`FBDDDecomposer`).
        foreground_residual: with a prefill, ``F = P_F +`` the sampled ``F`` residual (``True``) or
            ``F = P_F`` alone (``False``: the model completes ``B`` and ``E`` only; the built-in
            model's choice, as its ``F`` residual measured worse than ``P_F`` on 256 px scenes).
            Ignored without a prefill.
        hfa: the learned high-frequency alignment (:class:`~lamina.layeringdiff.hfa.HFANet`),
            applied to the full-resolution layers before the projection; ``None``: closed form only.
    """

    model_cpu_offload_seq = "unet->hfa"
    _optional_components = ["hfa"]
    output_class = FBDDPipelineOutput

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, prefill: str | None = None,
                 inference_steps: int = 4, foreground_residual: bool = True, hfa: HFANet | None = None) -> None:
        super().__init__()
        check_prefill(prefill)
        self.register_modules(unet=unet, scheduler=scheduler, hfa=hfa)
        self.register_to_config(prefill=prefill, inference_steps=int(inference_steps),
                                foreground_residual=bool(foreground_residual))

    def _noise(self, shape: tuple[int, ...], generator: Any, dtype: torch.dtype) -> torch.Tensor:
        return randn_tensor(shape, generator=generator, device=self.device, dtype=dtype) * \
            self.scheduler.init_noise_sigma

    def _timesteps(self, steps: int) -> torch.Tensor:
        self.scheduler.set_timesteps(steps, device=self.device)
        return self.scheduler.timesteps

    def _denoise(self, x: torch.Tensor, condition: torch.Tensor, t: torch.Tensor, generator: Any) -> torch.Tensor:
        model_input = torch.cat([self.scheduler.scale_model_input(x, t), condition], dim=1)
        v = self.unet(model_input, t).sample
        return self.scheduler.step(v, t, x, **step_kwargs(self.scheduler, generator)).prev_sample
