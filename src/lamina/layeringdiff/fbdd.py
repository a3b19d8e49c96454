"""FBDD, Foreground-Background Diffusion Decomposition: the learned disassembly of LayeringDiff.

Given a composite ``I`` and the foreground's alpha, FBDD samples the foreground colours
``F`` and the completed background ``B`` so that ``alpha F + (1 - alpha) B`` reproduces ``I``.
This module holds the pixel-space model for small networks trained from scratch: a
diffusers :class:`~diffusers.UNet2DModel`, the :class:`FBDDPipeline` that samples it (with
``save_pretrained`` / ``from_pretrained``), the training loss :func:`fbdd_loss`, and
:class:`FBDDDecomposer`, which plugs the pipeline into the common
:class:`~lamina.layeringdiff.decompose.Decomposer` interface.

What the paper says (abstract and third-party summaries; its method sections are not
public): FBDD adapts a large pretrained generative prior to estimate ``F`` and ``B`` from
the composite and the foreground estimate; alpha comes from matting, not from the diffusion
model; HFA modules then restore high-frequency detail. Everything below is **our design**:

* **One joint sample.** ``F`` and ``B`` are denoised together as one 6-channel image
  ``x = [F, B]`` (each in ``[-1, 1]``), so the network decides the split of every pixel of
  ``I`` between the two layers in one place, rather than in two separate passes.
* **Conditioning by concatenation.** The UNet input is ``[x_t (6), I (3), alpha (1)]``, 10
  channels, ``I`` and ``alpha`` also in ``[-1, 1]``; the same scheme as Stable Diffusion's
  inpainting UNet (noisy latent + masked image + mask), so the latent variant for
  pretrained backbones (still to do) can start from an inpainting UNet with ``conv_in``
  widened by zero-initialised channels.
* **v-prediction** on a cosine schedule rescaled to zero terminal SNR, sampled with DDIM on
  "trailing" timesteps (Lin et al. 2024): the first step starts from pure noise and a few
  steps suffice. Samples are clipped to ``[-1, 1]``.
* **Loss.** v-MSE; the ``F`` channels count only where ``alpha > 0`` (grown by 2 px), since
  a transparent pixel has no foreground colour. Optionally a **recomposition term**: the
  ``x_0`` predicted from ``v`` must satisfy ``alpha F + (1 - alpha) B = I``.
* **Working resolution and recomposition projection.** The UNet runs at its
  ``sample_size``: inputs of any size are resized to it, ``F`` and ``B`` resized back, then
  projected onto the recomposition constraint at full resolution
  (:func:`~lamina.layeringdiff.decompose.project_recomposition`). The projection copies the
  composite's full-resolution detail into whichever layer shows it: a closed-form stand-in
  for the paper's learned HFA modules (still to do), which is why FBDD can run at a lower
  resolution than the output.
* **Effects.** Trained on scenes whose ground-truth background has no shadows or
  reflections of the object (they belong to the foreground layer), FBDD learns to remove
  them from ``B``; :func:`~lamina.layeringdiff.decompose.finish_decomposition` then moves
  the difference between the image and ``B`` into the foreground layer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from ..errors import LaminaError
from .decompose import Decomposition, check_alpha, finish_decomposition, project_recomposition
from .foreground import as_rgb

try:
    from diffusers import DDIMScheduler, DiffusionPipeline, SchedulerMixin, UNet2DModel
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise LaminaError("the learned LayeringDiff path (FBDD) needs diffusers: pip install 'diffusers>=0.42'") from exc

#: Channels of the sample (F, B), of the conditioning (I, alpha) and of the UNet input.
SAMPLE_CHANNELS, CONDITION_CHANNELS = 6, 4
IN_CHANNELS = SAMPLE_CHANNELS + CONDITION_CHANNELS

#: UNet sizes: ``tiny`` for tests; ``small`` (4.2 M parameters, 17 MB in float32) for the built-in model.
FBDD_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")),
    "small": dict(block_out_channels=(32, 64, 96, 96), layers_per_block=2, norm_num_groups=8,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                  attention_head_dim=32),
}


def make_unet(preset: str = "small", sample_size: int = 64) -> UNet2DModel:
    """A randomly initialised FBDD UNet (``[x_t, I, alpha]`` 10 channels in, ``v`` 6 channels out)."""
    if preset not in FBDD_PRESETS:
        raise LaminaError(f"unknown FBDD preset {preset!r}; choose from {', '.join(FBDD_PRESETS)}")
    return UNet2DModel(sample_size=sample_size, in_channels=IN_CHANNELS, out_channels=SAMPLE_CHANNELS,
                       **FBDD_PRESETS[preset])


def make_scheduler(num_train_timesteps: int = 1000) -> DDIMScheduler:
    """DDIM, v-prediction, cosine schedule rescaled to zero terminal SNR, trailing timesteps."""
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                         clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=False)


# ------------------------------------------------------------------ tensors
def _to_nchw(array: Any, channels: int, what: str) -> torch.Tensor:
    """``[H, W(, C)]`` / ``[N, H, W(, C)]`` arrays or ``[N, C, H, W]`` tensors -> float ``[N, C, H, W]`` in [0, 1]."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().float()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[1] != channels:
            raise LaminaError(f"{what}: expected a [N, {channels}, H, W] tensor, got {tuple(tensor.shape)}")
        return tensor
    array = np.asarray(array)
    if channels == 1 and array.ndim in (2, 3) and array.shape[-1] != 1:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != channels:
        raise LaminaError(f"{what}: expected [H, W, {channels}] or [N, H, W, {channels}], got {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).permute(0, 3, 1, 2)


def _resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return nnf.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def _grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation of ``[N, 1, H, W]`` by a ``(2 p + 1)^2`` square."""
    return nnf.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels) if pixels else mask


# ---------------------------------------------------------------- the loss
def fbdd_loss(
    unet: UNet2DModel,
    scheduler: DDIMScheduler,
    image: torch.Tensor,
    alpha: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor,
    generator: torch.Generator | None = None,
    recomposition_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One training loss of FBDD on a batch.

    Args:
        image: ``[N, 3, H, W]`` composite in ``[0, 1]``; alpha ``[N, 1, H, W]``;
            foreground ``[N, 3, H, W]`` colours; background ``[N, 3, H, W]`` effect-free.
        generator: for the timesteps and the noise (reproducible losses in tests).
        recomposition_weight: weight of ``|alpha F0 + (1 - alpha) B0 - I|^2`` on the predicted ``x_0``.
    Returns:
        ``{"loss", "v", "recomposition"}``; ``loss`` is the one to back-propagate.
    """
    x0 = torch.cat([_signed(foreground), _signed(background)], dim=1)
    n = x0.shape[0]
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(x0.device)
    xt = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    v = unet(torch.cat([xt, _signed(image), _signed(alpha)], dim=1), t).sample
    # F has no colour where alpha = 0: its channels count only on the (grown) object.
    weight = torch.cat([_grow((alpha > 0).float(), 2).expand(-1, 3, -1, -1), torch.ones_like(image)], dim=1)
    v_loss = (weight * (v - target).square()).sum() / weight.sum()
    ab = scheduler.alphas_cumprod.to(x0.device)[t].view(n, 1, 1, 1)
    x0_hat = ab.sqrt() * xt - (1.0 - ab).sqrt() * v
    recomposed = alpha * x0_hat[:, :3] + (1.0 - alpha) * x0_hat[:, 3:]
    recomposition = (recomposed - _signed(image)).square().mean()
    return {"loss": v_loss + recomposition_weight * recomposition, "v": v_loss.detach(),
            "recomposition": recomposition.detach()}


# ---------------------------------------------------------------- pipeline
@dataclass
class FBDDPipelineOutput(BaseOutput):
    """``foreground`` and ``background``: ``[N, H, W, 3]`` arrays (``"np"``) or ``[N, 3, H, W]`` tensors (``"pt"``)."""

    foreground: Any
    background: Any


class FBDDPipeline(DiffusionPipeline):
    """Sample the foreground colours and the completed background of a composite, given alpha.

    Args:
        unet: a :class:`~diffusers.UNet2DModel` with 10 input channels (``[x_t, I, alpha]``)
            and 6 output channels (``v`` of ``[F, B]``), see :func:`make_unet`.
        scheduler: a diffusers scheduler configured for v-prediction (:func:`make_scheduler`).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def working_size(self) -> tuple[int, int]:
        """``(height, width)`` the UNet runs at: its ``sample_size``."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % factor or width % factor:
            raise LaminaError(f"the FBDD UNet's sample_size {height}x{width} must be a multiple of {factor}")
        return height, width

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        alpha: Any,
        num_inference_steps: int = 20,
        generator: torch.Generator | list[torch.Generator] | None = None,
        projection: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> FBDDPipelineOutput | tuple[Any, Any]:
        """Decompose ``image`` (``[H, W, 3]``, ``[N, H, W, 3]`` or ``[N, 3, H, W]`` in ``[0, 1]``) given ``alpha``.

        Args:
            alpha: ``[H, W]``, ``[N, H, W]`` or ``[N, 1, H, W]`` in ``[0, 1]``.
            num_inference_steps: denoising steps.
            generator: makes the sample reproducible.
            projection: project ``(F, B)`` onto ``alpha F + (1 - alpha) B = I`` at full resolution.
            output_type: ``"np"`` (``[N, H, W, 3]`` float32 arrays) or ``"pt"`` (``[N, 3, H, W]`` tensors).
        """
        if output_type not in ("np", "pt"):
            raise LaminaError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        image_t = _to_nchw(image, 3, "image").to(self.device)
        alpha_t = _to_nchw(alpha, 1, "alpha").to(self.device)
        if image_t.shape[0] != alpha_t.shape[0] or image_t.shape[-2:] != alpha_t.shape[-2:]:
            raise LaminaError(f"image {tuple(image_t.shape)} and alpha {tuple(alpha_t.shape)} do not match")
        size = self.working_size()
        condition = torch.cat([_signed(_resize(image_t, size)), _signed(_resize(alpha_t, size))], dim=1)
        dtype = self.unet.dtype
        condition = condition.to(dtype)

        # Denoise [F, B] from pure noise.
        x = randn_tensor((image_t.shape[0], SAMPLE_CHANNELS, *size), generator=generator, device=self.device,
                         dtype=dtype) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([self.scheduler.scale_model_input(x, t), condition], dim=1)
            v = self.unet(model_input, t).sample
            x = self.scheduler.step(v, t, x, **step_kwargs).prev_sample

        # Back to [0, 1] at the input's resolution, then onto the recomposition constraint.
        full = tuple(image_t.shape[-2:])
        layers = _resize(((x.float() + 1.0) / 2.0).clamp(0.0, 1.0), full)
        foreground, background = layers[:, :3], layers[:, 3:]
        if projection:
            foreground, background = project_recomposition(image_t, alpha_t, foreground, background)
        if output_type == "np":
            foreground = foreground.permute(0, 2, 3, 1).cpu().numpy()
            background = background.permute(0, 2, 3, 1).cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return foreground, background
        return FBDDPipelineOutput(foreground=foreground, background=background)


def load_pipeline(model: str | Path, **kwargs: Any) -> FBDDPipeline:
    """:meth:`FBDDPipeline.from_pretrained` of a local folder or hub id, with a one-line error on failure.

    A folder never touches the network; a hub id is looked up in the local cache and, unless
    ``HF_HUB_OFFLINE=1``, on the hub.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        kwargs.setdefault("local_files_only", True)
        model = path
    elif path.exists() or path.is_absolute() or str(model).startswith((".", "~")):
        raise LaminaError(f"FBDD model {model}: not a folder saved by FBDDPipeline.save_pretrained")
    try:
        return FBDDPipeline.from_pretrained(str(model), **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LaminaError(f"cannot load the FBDD model {str(model)!r}: {first}") from None


# -------------------------------------------------------------- decomposer
class FBDDDecomposer:
    """FBDD behind the common :class:`~lamina.layeringdiff.decompose.Decomposer` interface.

    Args:
        pipeline: the sampler.
        num_inference_steps: denoising steps per image.
        seed: seed of the sampling noise (each call starts from the same seed).
        effects_threshold: as in :class:`~lamina.layeringdiff.classical.ClassicalConfig`.
    """

    name = "layeringdiff"

    def __init__(self, pipeline: FBDDPipeline, num_inference_steps: int = 20, seed: int = 0,
                 effects_threshold: float = 0.1) -> None:
        self.pipeline = pipeline
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self.effects_threshold = effects_threshold

    @classmethod
    def load(cls, model: FBDDPipeline | str | Path, **options: Any) -> FBDDDecomposer:
        """From a pipeline object, or a folder / hub id saved by :meth:`FBDDPipeline.save_pretrained`."""
        pipeline = model if isinstance(model, FBDDPipeline) else load_pipeline(model)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, **options)

    def decompose(self, image: Any, alpha: Any, effects_region: np.ndarray | None = None) -> Decomposition:
        """Split ``image`` ``[H, W, 3]`` with object ``alpha`` ``[H, W]`` into foreground and background."""
        image = as_rgb(image)
        alpha = check_alpha(alpha, *image.shape[:2])
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        out = self.pipeline(image, alpha, num_inference_steps=self.num_inference_steps, generator=generator,
                            projection=False)
        return finish_decomposition(image, alpha, out.foreground[0], out.background[0], effects_region,
                                    self.effects_threshold)
