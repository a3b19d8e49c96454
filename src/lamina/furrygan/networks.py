"""FurryGAN networks in pure PyTorch: StyleGAN2 layers, the layered generator, the discriminator.

The architecture follows the official code (JeongminB/FurryGAN_official ``model.py``, itself
built on rosinality/stylegan2-pytorch), see ``shared/reference/furrygan.md`` section 1.1-1.2:

* Two StyleGAN2 generators, foreground and background, with channels split 3:1 and their
  own 2-layer mapping networks; ``z_bg`` is the front part of ``z_fg``. No skip/ToRGB
  pyramid: each branch is ``tanh(ToRGB(final features))`` at full resolution.
* The mask generator: coarse and fine heads (StyledConv 1x1 -> ReLU -> channel mean ->
  per-sample min-max) on the foreground's penultimate features, combined by Eq. 3,
  ``m = clip(m_coarse + gamma * m_fine, 0, 1)``.
* A StyleGAN2 resnet discriminator (reflection padding) with an auxiliary mask predictor
  on its first 16x16 feature map.

Images are ``[N, 3, H, W]`` in ``[-1, 1]``; masks ``[N, 1, H, W]`` in ``[0, 1]``. No custom
CUDA: resampling uses ``conv2d``/``conv_transpose2d`` with a [1, 3, 3, 1] blur.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..compositing import blend
from ..errors import InputFileError
from ..io.atomic import atomic_output
from ..layers import LayeredImage
from .config import FurryGANConfig, ModelConfig

NoiseMode = Literal["random", "const", "none"]

SQRT2 = math.sqrt(2.0)

#: File names of an inference export (:meth:`FurryGANGenerator.save_pretrained`).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: The discriminator beside an export (optional; GAN inversion uses its features as a perceptual loss).
DISCRIMINATOR_NAME = "discriminator.safetensors"


# ----------------------------------------------------------------------------- outputs
@dataclass
class ForegroundOutput:
    """Foreground branch and mask generator.

    Attributes:
        fg: foreground image ``[N, 3, H, W]`` in ``[-1, 1]``.
        alpha_coarse: m_coarse ``[N, 1, H, W]`` in ``[0, 1]`` (Eq. 2).
        alpha_fine: m_fine ``[N, 1, H, W]`` in ``[0, 1]`` before gamma (zeros without a fine head).
        alpha: final mask m ``[N, 1, H, W]`` in ``[0, 1]`` (Eq. 3).
    """

    fg: torch.Tensor
    alpha_coarse: torch.Tensor
    alpha_fine: torch.Tensor
    alpha: torch.Tensor


@dataclass
class GeneratorOutput:
    """Everything the FurryGAN generator produces for a batch of ``N`` latents.

    Attributes:
        fg: foreground image ``[N, 3, H, W]`` in ``[-1, 1]``.
        bg: background image ``[N, 3, H, W]`` in ``[-1, 1]``.
        alpha_coarse: m_coarse ``[N, 1, H, W]`` in ``[0, 1]``.
        alpha_fine: m_fine ``[N, 1, H, W]`` in ``[0, 1]`` (before gamma; zeros without a fine head).
        alpha: the final mask m ``[N, 1, H, W]`` in ``[0, 1]``.
        composite: ``alpha * fg + (1 - alpha) * bg`` ``[N, 3, H, W]`` in ``[-1, 1]`` (Eq. 1).
        w: foreground styles ``[N, num_ws, w_fg_dim]``.
        w_bg: background styles ``[N, num_ws, w_bg_dim]``.
    """

    fg: torch.Tensor
    bg: torch.Tensor
    alpha_coarse: torch.Tensor
    alpha_fine: torch.Tensor
    alpha: torch.Tensor
    composite: torch.Tensor
    w: torch.Tensor
    w_bg: torch.Tensor

    def __len__(self) -> int:
        return self.fg.shape[0]

    def to_layered(self, i: int, name: str = "foreground") -> LayeredImage:
        """Sample ``i`` as a :class:`LayeredImage`: the background plus the foreground with alpha m.

        Colours are mapped from ``[-1, 1]`` to ``[0, 1]``; the layered composite equals
        ``(composite[i] + 1) / 2`` up to float rounding.
        """
        def unit(x: torch.Tensor) -> torch.Tensor:
            return ((x.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)

        return LayeredImage.from_foreground(
            unit(self.bg[i]), unit(self.fg[i]), self.alpha[i].detach().float().cpu().clamp(0.0, 1.0),
            name=name, metadata={"method": "furrygan"},
        )


@dataclass
class DiscriminatorOutput:
    """Attributes:
        logits: realness logits ``[N]``.
        mask: predicted mask ``[N, 1, 16, 16]`` in ``[0, 1]``, or None without a mask predictor.
    """

    logits: torch.Tensor
    mask: torch.Tensor | None


# ----------------------------------------------------------------------------- basic layers
def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, slope: float = 0.2, gain: float = SQRT2
                    ) -> torch.Tensor:
    """``leaky_relu(x + bias) * sqrt(2)`` with ``bias`` ``[C]`` on axis 1 (rosinality's fused_leaky_relu)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, slope) * gain


def minmax_normalize(m: torch.Tensor, margin: float = 0.0, eps: float = 1e-10) -> torch.Tensor:
    """Per-sample ``(m - min) / (max - min + eps) * (1 + margin)`` over all but the batch axis."""
    dims = tuple(range(1, m.ndim))
    lo = m.amin(dim=dims, keepdim=True)
    hi = m.amax(dim=dims, keepdim=True)
    return (m - lo) / (hi - lo + eps) * (1.0 + margin)


class PixelNorm(nn.Module):
    """``x / sqrt(mean(x^2) + 1e-8)`` over the feature axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights ``N(0, 1) / lr_mul``, scaled at runtime)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.weight_gain), bias)
        return F.linear(x, self.weight * self.weight_gain, bias)


class Blur(nn.Module):
    """Depthwise FIR low-pass filter: pad by ``pad`` then convolve with ``outer(k, k) / sum * gain``.

    One depthwise conv with the 2-D kernel: measured faster on CPU, forward and backward,
    than two 1-D passes of the separable kernel.
    """

    def __init__(self, taps: Sequence[int], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        k = torch.tensor(taps, dtype=torch.float32)
        k = torch.outer(k, k)
        k = k / k.sum() * gain
        self.register_buffer("kernel", k.flip(0, 1), persistent=False)  # flipped: a true convolution
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, [self.pad[0], self.pad[1], self.pad[0], self.pad[1]])
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, -1, -1), groups=c)


def resolve_modconv(mode: str, device: torch.device) -> str:
    """``"auto"`` -> ``"grouped"`` on CUDA, ``"activations"`` elsewhere (measured faster on CPU)."""
    if mode == "auto":
        return "grouped" if device.type == "cuda" else "activations"
    return mode


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (Karras et al. 2020, Eq. 1-3) with optional 2x upsampling.

    ``w'_ijk = s_i * w_ijk`` (modulation), ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8)``
    (demodulation). Two equivalent formulations, chosen by ``modconv``:

    * ``"grouped"``: build per-sample weights ``[N * out, in, k, k]`` and run one grouped conv;
    * ``"activations"``: ``conv(x * s, w) * d`` with the shared weight (no per-sample weights).

    Upsampling is a stride-2 transposed convolution followed by the blur (rosinality).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1), modconv: str = "auto") -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample
        self.modconv = modconv
        if upsample:
            # After the stride-2 transposed conv (size 2H + k - 2), blur back to exactly 2H.
            p = len(blur_kernel) - 2 - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, in, H, W]``, ``w`` ``[N, w_dim]`` -> ``[N, out, H', W']`` (H' = 2H when upsampling)."""
        styles = self.affine(w)  # [N, in]
        weight = self.weight * self.weight_gain  # [out, in, k, k]
        dcoefs = None
        if self.demodulate:  # d_j = 1 / sqrt(sum_ik (s_i w_ijk)^2 + eps), [N, out]
            dcoefs = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
        if resolve_modconv(self.modconv, x.device) == "grouped":
            x = self._grouped(x, weight, styles, dcoefs)
        else:
            x = self._activations(x, weight, styles, dcoefs)
        return self.blur(x) if self.upsample else x

    def _activations(self, x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     dcoefs: torch.Tensor | None) -> torch.Tensor:
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        return x * dcoefs[:, :, None, None].to(x.dtype) if dcoefs is not None else x

    def _grouped(self, x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                 dcoefs: torch.Tensor | None) -> torch.Tensor:
        n, _, h, w_ = x.shape
        k = self.kernel_size
        weight = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [N, out, in, k, k]
        if dcoefs is not None:
            weight = weight * dcoefs[:, :, None, None, None]
        x = x.reshape(1, n * self.in_channels, h, w_)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * self.in_channels, self.out_channels, k, k)
            x = F.conv_transpose2d(x, weight.to(x.dtype), stride=2, groups=n)
        else:
            weight = weight.reshape(n * self.out_channels, self.in_channels, k, k)
            x = F.conv2d(x, weight.to(x.dtype), padding=k // 2, groups=n)
        return x.reshape(n, self.out_channels, *x.shape[2:])


class NoiseInjection(nn.Module):
    """``x + strength * noise`` with per-pixel Gaussian noise shared across channels.

    ``noise_mode``: ``"random"`` draws new noise, ``"const"`` uses a fixed buffer drawn at
    construction, ``"none"`` adds nothing.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        else:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        return x + self.strength * noise


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU * sqrt(2) (rosinality StyledConv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, resolution: int,
                 upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1), modconv: str = "auto") -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, w_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, modconv=modconv)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        return bias_leaky_relu(self.noise(self.conv(x, w), noise_mode), self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias, then tanh (FurryGAN keeps outputs in [-1, 1])."""

    def __init__(self, in_channels: int, w_dim: int, modconv: str = "auto") -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False, modconv=modconv)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x, w) + self.bias.view(1, -1, 1, 1))


class MappingNetwork(nn.Module):
    """z ``[N, z_dim]`` -> w ``[N, z_dim]``: PixelNorm then ``num_layers`` EqualLinear + lrelu, lr_mul 0.01."""

    def __init__(self, dim: int, num_layers: int, lr_mul: float) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.layers = nn.Sequential(*[EqualLinear(dim, dim, lr_mul=lr_mul, activate=True) for _ in range(num_layers)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(self.norm(z))


class SynthesisNetwork(nn.Module):
    """StyleGAN2 synthesis without the skip pyramid: const 4x4, two StyledConvs per resolution, ToRGB.

    Style ``ws[:, i]`` drives the i-th StyledConv; the last style drives ToRGB (and the mask heads).
    """

    def __init__(self, cfg: ModelConfig, channels: dict[int, int], w_dim: int) -> None:
        super().__init__()
        res = cfg.resolutions()
        self.const = nn.Parameter(torch.randn(1, channels[4], 4, 4))
        self.convs = nn.ModuleList([StyledConv(channels[4], channels[4], 3, w_dim, 4, modconv=cfg.modconv)])
        for prev, cur in zip(res[:-1], res[1:], strict=True):
            self.convs.append(StyledConv(channels[prev], channels[cur], 3, w_dim, cur, upsample=True,
                                         blur_kernel=cfg.blur_kernel, modconv=cfg.modconv))
            self.convs.append(StyledConv(channels[cur], channels[cur], 3, w_dim, cur, modconv=cfg.modconv))
        self.to_rgb = ToRGB(channels[cfg.resolution], w_dim, modconv=cfg.modconv)
        self.num_ws = len(self.convs) + 1
        self.out_channels = channels[cfg.resolution]

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "random") -> tuple[torch.Tensor, torch.Tensor]:
        """``ws`` ``[N, num_ws, w_dim]`` -> (image ``[N, 3, H, W]`` in [-1, 1], penultimate features ``[N, C, H, W]``).
        """
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i], noise_mode)
        return self.to_rgb(x, ws[:, -1]), x


class MaskHead(nn.Module):
    """One mask network of Eq. 2: StyledConv(C -> hidden, 1x1) -> ReLU -> channel mean -> min-max."""

    def __init__(self, in_channels: int, hidden: int, w_dim: int, resolution: int, margin: float,
                 modconv: str = "auto") -> None:
        super().__init__()
        self.conv = StyledConv(in_channels, hidden, 1, w_dim, resolution, modconv=modconv)
        self.margin = margin

    def forward(self, features: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        """``features`` ``[N, C, H, W]``, ``w`` ``[N, w_dim]`` -> mask ``[N, 1, H, W]`` spanning [0, 1]."""
        m = F.relu(self.conv(features, w, noise_mode)).mean(dim=1, keepdim=True)
        return minmax_normalize(m, self.margin)


# ----------------------------------------------------------------------------- generator
class FurryGANGenerator(nn.Module):
    """Foreground, background and mask generators (Fig. 2).

    Args:
        cfg: architecture; see :class:`~lamina.furrygan.config.ModelConfig`.

    ``z`` is ``[N, z_dim]`` with ``z_dim = cfg.z_fg_dim``; the background uses ``z[:, :cfg.z_bg_dim]``.
    Buffers ``w_avg_fg``/``w_avg_bg`` hold the truncation centres (:meth:`update_w_avg`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.z_bg_dim = cfg.z_fg_dim, cfg.z_bg_dim
        res = cfg.resolutions()
        self.mapping_fg = MappingNetwork(cfg.z_fg_dim, cfg.mapping_layers, cfg.mapping_lr_mul)
        self.mapping_bg = MappingNetwork(cfg.z_bg_dim, cfg.mapping_layers, cfg.mapping_lr_mul)
        self.synthesis_fg = SynthesisNetwork(cfg, {r: cfg.fg_channels(r) for r in res}, cfg.z_fg_dim)
        self.synthesis_bg = SynthesisNetwork(cfg, {r: cfg.bg_channels(r) for r in res}, cfg.z_bg_dim)
        c = self.synthesis_fg.out_channels
        self.mask_coarse = MaskHead(c, cfg.mask_channels, cfg.z_fg_dim, cfg.resolution, cfg.mask_margin, cfg.modconv)
        self.mask_fine = (MaskHead(c, cfg.mask_channels, cfg.z_fg_dim, cfg.resolution, cfg.mask_margin, cfg.modconv)
                          if cfg.fine_mask else None)
        self.num_ws = self.synthesis_fg.num_ws
        self.register_buffer("w_avg_fg", torch.zeros(cfg.z_fg_dim))
        self.register_buffer("w_avg_bg", torch.zeros(cfg.z_bg_dim))
        self.update_w_avg()

    @torch.no_grad()
    def update_w_avg(self, n: int = 1024, seed: int = 0) -> None:
        """Set the truncation centres to the mean w of ``n`` latents through the current mapping networks.

        Call it on the network you sample from (the EMA generator) after training; the
        official code never does (furrygan.md 1.8.2). Uses its own random stream.
        """
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen).to(self.w_avg_fg.device)
        self.w_avg_fg.copy_(self.mapping_fg(z).mean(dim=0))
        self.w_avg_bg.copy_(self.mapping_bg(z[:, : self.z_bg_dim]).mean(dim=0))

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``[N, z_dim]`` -> (ws_fg ``[N, num_ws, z_dim]``, ws_bg ``[N, num_ws, z_bg_dim]``), truncated.

        Truncation: ``w = w_avg + psi * (w - w_avg)`` on both layers.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {tuple(z.shape)}")
        w_fg = self.mapping_fg(z)
        w_bg = self.mapping_bg(z[:, : self.z_bg_dim])
        if truncation_psi != 1.0:
            w_fg = self.w_avg_fg.lerp(w_fg, truncation_psi)
            w_bg = self.w_avg_bg.lerp(w_bg, truncation_psi)
        return self._broadcast(w_fg), self._broadcast(w_bg)

    def _broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return w.unsqueeze(1).expand(-1, self.num_ws, -1) if w.ndim == 2 else w

    def foreground(self, ws: torch.Tensor, fine_gamma: float = 1.0, noise_mode: NoiseMode = "random"
                   ) -> ForegroundOutput:
        """Foreground image and masks from ``ws`` ``[N, num_ws, z_dim]`` (or ``[N, z_dim]``).

        ``fine_gamma`` is gamma of Eq. 3 (the training loop fades it in; 1 after training).
        """
        ws = self._broadcast(ws)
        fg, features = self.synthesis_fg(ws, noise_mode)
        w_last = ws[:, -1]
        coarse = self.mask_coarse(features, w_last, noise_mode)
        if self.mask_fine is None:
            fine, alpha = torch.zeros_like(coarse), coarse
        else:
            fine = self.mask_fine(features, w_last, noise_mode)
            alpha = (coarse + fine_gamma * fine).clamp(0.0, 1.0)  # Eq. 3
        return ForegroundOutput(fg=fg, alpha_coarse=coarse, alpha_fine=fine, alpha=alpha)

    def background(self, ws_bg: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        """Background ``[N, 3, H, W]`` in [-1, 1] from ``ws_bg`` ``[N, num_ws, z_bg_dim]`` (or ``[N, z_bg_dim]``)."""
        return self.synthesis_bg(self._broadcast(ws_bg), noise_mode)[0]

    def synthesis(self, ws_fg: torch.Tensor, ws_bg: torch.Tensor, fine_gamma: float = 1.0,
                  noise_mode: NoiseMode = "random") -> GeneratorOutput:
        """Both layers, the masks and the composite (Eq. 1) from styles (e.g. optimised w+ in inversion)."""
        ws_fg, ws_bg = self._broadcast(ws_fg), self._broadcast(ws_bg)
        out = self.foreground(ws_fg, fine_gamma, noise_mode)
        bg = self.background(ws_bg, noise_mode)
        return GeneratorOutput(fg=out.fg, bg=bg, alpha_coarse=out.alpha_coarse, alpha_fine=out.alpha_fine,
                               alpha=out.alpha, composite=blend(out.fg, out.alpha, bg), w=ws_fg, w_bg=ws_bg)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, fine_gamma: float = 1.0,
                noise_mode: NoiseMode = "random") -> GeneratorOutput:
        """Generate ``N`` layered samples from z ``[N, z_dim]``."""
        ws_fg, ws_bg = self.mapping(z, truncation_psi)
        return self.synthesis(ws_fg, ws_bg, fine_gamma, noise_mode)

    # ------------------------------------------------------------------ inference export
    def save_pretrained(self, directory: str | os.PathLike[str], config: FurryGANConfig | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (weights and buffers, float32) to ``directory``.

        ``config`` (the run's full configuration) is stored when given, else only the model
        section. Each file is written to a temporary name and moved into place.
        """
        directory = Path(directory)
        data = config.to_dict() if config is not None else {"model": FurryGANConfig(model=self.cfg).to_dict()["model"]}
        if config is not None and config.model != self.cfg:
            raise ValueError("config.model does not describe this generator")
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        with atomic_output(directory / WEIGHTS_NAME, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "lamina.furrygan.generator", "version": "1"})
        with atomic_output(directory / CONFIG_NAME, overwrite=True) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                        ) -> FurryGANGenerator:
        """Load a generator written by :meth:`save_pretrained` (in eval mode, no gradients)."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise InputFileError(f"{directory}: not a FurryGAN export (missing {name})")
        cfg = FurryGANConfig.load_json(directory / CONFIG_NAME).model
        G = cls(cfg)
        state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
        try:
            G.load_state_dict(state)
        except RuntimeError as exc:
            raise InputFileError(f"{directory}: weights do not match config.json ({exc})") from None
        return G.to(map_location).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- discriminator
class ConvLayer(nn.Module):
    """Equalized-lr conv; ``downsample``: blur then stride 2; otherwise reflection (or zero) padding.

    ``activate`` adds a bias + leaky ReLU * sqrt(2); otherwise an optional plain bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True, reflection_pad: bool = True,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.activate = activate
        self.downsample = downsample
        self.blur = None
        self.pad = kernel_size // 2
        self.reflection_pad = reflection_pad
        if downsample:
            p = len(blur_kernel) - 2 + kernel_size - 1
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        if self.blur is not None:
            x = F.conv2d(self.blur(x), weight, stride=2)
        elif self.pad and self.reflection_pad:
            x = F.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"), weight)
        else:
            x = F.conv2d(x, weight, padding=self.pad)
        if self.activate:
            return bias_leaky_relu(x, self.bias)
        return x + self.bias.view(1, -1, 1, 1) if self.bias is not None else x


class ResBlock(nn.Module):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)``; conv2 and the bias-free linear skip change width."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, downsample: bool = True,
                 reflection_pad: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        kw = dict(reflection_pad=reflection_pad, blur_kernel=blur_kernel)
        self.conv1 = ConvLayer(in_channels, in_channels, kernel_size, **kw)
        self.conv2 = ConvLayer(in_channels, out_channels, kernel_size, downsample=downsample, **kw)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=downsample, bias=False, activate=False, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int, channels: int) -> torch.Tensor:
    """Append the minibatch standard deviation as ``channels`` extra feature maps (StyleGAN2).

    Samples ``n, n + N/G, n + 2N/G, ...`` form a group of ``G``; ``G`` is the largest divisor
    of ``N`` not above ``group`` (rosinality requires ``N % group == 0``).
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    y = x.reshape(g, -1, channels, c // channels, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # [N/G, F, C/F, H, W]
    y = y.mean(dim=(2, 3, 4))  # [N/G, F]
    y = y.reshape(-1, channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class FurryGANDiscriminator(nn.Module):
    """StyleGAN2 resnet discriminator with FurryGAN's auxiliary 16x16 mask predictor (Sec. 3.2).

    ``forward(x)`` with ``x`` ``[N, 3, H, W]`` in [-1, 1] returns logits ``[N]`` and, with the
    predictor, the mask ``[N, 1, 16, 16]`` in [0, 1] regressed from the first 16x16 features.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kw = dict(reflection_pad=cfg.reflection_pad, blur_kernel=cfg.blur_kernel)
        res = cfg.resolutions()[::-1]  # [R, R/2, ..., 4]
        self.from_rgb = ConvLayer(3, cfg.channels(cfg.resolution), 1, **kw)
        self.blocks = nn.ModuleList([ResBlock(cfg.channels(r), cfg.channels(r // 2), **kw) for r in res[:-1]])
        self.mask_block = res.index(32)  # the block whose output is the first 16x16 feature map
        self.mask_head = (ResBlock(cfg.channels(16), cfg.mask_predictor_channels, kernel_size=1, downsample=False,
                                   **kw) if cfg.mask_predictor else None)
        c4 = cfg.channels(4)
        self.final_conv = ConvLayer(c4 + cfg.mbstd_channels, c4, 3, **kw)
        self.final_linear = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)

    def _predict(self, features16: torch.Tensor) -> torch.Tensor:
        m = F.relu(self.mask_head(features16)).mean(dim=1, keepdim=True)
        return minmax_normalize(m)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        h = self.from_rgb(x)
        mask = None
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.mask_block and self.mask_head is not None:
                mask = self._predict(h)
        h = minibatch_stddev(h, self.cfg.mbstd_group, self.cfg.mbstd_channels)
        h = self.final_conv(h)
        logits = self.out(self.final_linear(h.flatten(1)))
        return DiscriminatorOutput(logits=logits.squeeze(1), mask=mask)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after ``from_rgb`` and each resolution block (used as a perceptual distance)."""
        h = self.from_rgb(x)
        feats = [h]
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return feats

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``discriminator.safetensors`` (float32) to ``directory``, beside a generator export."""
        path = Path(directory) / DISCRIMINATOR_NAME
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        with atomic_output(path, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "lamina.furrygan.discriminator", "version": "1"})
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                        ) -> FurryGANDiscriminator:
        """Load the discriminator of an export folder (``config.json`` + ``discriminator.safetensors``)."""
        directory = Path(directory)
        for name in (CONFIG_NAME, DISCRIMINATOR_NAME):
            if not (directory / name).is_file():
                raise InputFileError(f"{directory}: no FurryGAN discriminator (missing {name})")
        D = cls(FurryGANConfig.load_json(directory / CONFIG_NAME).model)
        try:
            D.load_state_dict(load_file(str(directory / DISCRIMINATOR_NAME), device=str(map_location)))
        except RuntimeError as exc:
            raise InputFileError(f"{directory}: discriminator weights do not match config.json ({exc})") from None
        return D.to(map_location).eval().requires_grad_(False)

    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Only the auxiliary mask predictor D_aux: ``[N, 3, H, W]`` -> ``[N, 1, 16, 16]`` (stops at 16x16)."""
        if self.mask_head is None:
            raise RuntimeError("this discriminator has no mask predictor (model.mask_predictor=False)")
        h = self.from_rgb(x)
        for block in self.blocks[: self.mask_block + 1]:
            h = block(h)
        return self._predict(h)
