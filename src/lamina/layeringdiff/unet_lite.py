"""A pure-PyTorch inference forward of the built-in FBDD UNet and its DDIM step (no diffusers import).

Issue 23 (the 10 s target of a 12 Mpx decompose): importing diffusers costs ~7 CPU s; the built-in FBDD
needs from it only ``UNet2DModel``'s forward and one DDIM step. This module computes both from the same
files (``unet/config.json`` + ``diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``),
checked against diffusers in ``tests/test_unet_lite.py``; :class:`~lamina.layeringdiff.fbdd.LiteFBDD` samples
with them (and :class:`~lamina.layeringdiff.hfa.LiteHFA`), which is what ``lamina decompose`` runs.

Supported configs: what the built-in uses (``DownBlock2D`` / ``AttnDownBlock2D``, ``UpBlock2D`` /
``AttnUpBlock2D``, ``UNetMidBlock2D``, positional time embedding, conv up/down sampling, SiLU, default
resnet time-embedding norm); anything else is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..errors import LaminaError

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")


class AttrDict(dict):
    """A dict whose keys are also attributes, as a diffusers config (``config.sample_size``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Resnet(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nnf.silu(self.norm1(x)))
        h = h + self.time_emb_proj(nnf.silu(temb))[:, :, None, None]
        h = self.conv2(nnf.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class _Attention(nn.Module):
    def __init__(self, channels: int, head_dim: int, groups: int, eps: float) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        out = nnf.scaled_dot_product_attention(split(self.to_q(tokens)), split(self.to_k(tokens)),
                                               split(self.to_v(tokens)))
        out = self.to_out[0](out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class _Sampler(nn.Module):
    def __init__(self, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if self.down else nnf.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Block(nn.Module):
    def __init__(self, resnets: list[_Resnet], attentions: list[_Attention] | None, sampler: _Sampler | None,
                 down: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if attentions is not None:
            self.attentions = nn.ModuleList(attentions)
        if sampler is not None:
            setattr(self, "downsamplers" if down else "upsamplers", nn.ModuleList([sampler]))

    @property
    def sampler(self) -> _Sampler | None:
        samplers = getattr(self, "downsamplers", None) or getattr(self, "upsamplers", None)
        return samplers[0] if samplers else None


class _TimeEmbedding(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nnf.silu(self.linear_1(x)))


class LiteUNet(nn.Module):
    """``UNet2DModel``'s inference forward for the configs the built-in FBDD uses; same state-dict names.

    ``forward(sample [N, in, H, W], timestep)`` -> ``[N, out, H, W]``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        _check_config(config)
        self.config = AttrDict(config)
        channels = list(config["block_out_channels"])
        groups, eps = int(config["norm_num_groups"]), float(config["norm_eps"])
        head_dim = int(config["attention_head_dim"] or channels[-1])
        layers = int(config["layers_per_block"])
        temb = channels[0] * 4
        self.flip_sin_to_cos, self.freq_shift = bool(config["flip_sin_to_cos"]), float(config["freq_shift"])
        self.conv_in = nn.Conv2d(int(config["in_channels"]), channels[0], 3, padding=1)
        self.time_embedding = _TimeEmbedding(channels[0], temb)
        self.down_blocks = nn.ModuleList()
        cout = channels[0]
        for i, kind in enumerate(config["down_block_types"]):
            cin, cout = cout, channels[i]
            final = i == len(channels) - 1
            resnets = [_Resnet(cin if j == 0 else cout, cout, temb, groups, eps) for j in range(layers)]
            attns = [_Attention(cout, head_dim, groups, eps) for _ in range(layers)] if kind.startswith("Attn") \
                else None
            self.down_blocks.append(_Block(resnets, attns, None if final else _Sampler(cout, True), True))
        self.mid_block = _Block([_Resnet(channels[-1], channels[-1], temb, groups, eps) for _ in range(2)],
                                [_Attention(channels[-1], head_dim, groups, eps)], None, True)
        reversed_channels = channels[::-1]
        self.up_blocks = nn.ModuleList()
        cout = reversed_channels[0]
        for i, kind in enumerate(config["up_block_types"]):
            prev, cout = cout, reversed_channels[i]
            skip_in = reversed_channels[min(i + 1, len(channels) - 1)]
            final = i == len(channels) - 1
            resnets = []
            for j in range(layers + 1):
                res_skip = skip_in if j == layers else cout
                resnets.append(_Resnet((prev if j == 0 else cout) + res_skip, cout, temb, groups, eps))
            attns = [_Attention(cout, head_dim, groups, eps) for _ in range(layers + 1)] \
                if kind.startswith("Attn") else None
            self.up_blocks.append(_Block(resnets, attns, None if final else _Sampler(cout, False), False))
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=eps)
        self.conv_out = nn.Conv2d(channels[0], int(config["out_channels"]), 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def time_features(self, timestep: torch.Tensor, batch: int) -> torch.Tensor:
        """Sinusoidal features [N, C0] of the timestep (``get_timestep_embedding`` with the config's options)."""
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(batch)
        half = self.conv_in.out_channels // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - self.freq_shift)
        angles = t[:, None].float() * torch.exp(exponent)[None, :]
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        if self.flip_sin_to_cos:
            features = torch.cat([features[:, half:], features[:, :half]], dim=-1)
        return features

    @torch.no_grad()
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
        dtype = self.conv_in.weight.dtype
        features = self.time_features(torch.as_tensor(timestep), sample.shape[0])
        temb = self.time_embedding(features.to(self.device, dtype))
        x = self.conv_in(sample.to(dtype))
        skips = [x]
        for block in self.down_blocks:
            for k, resnet in enumerate(block.resnets):
                x = resnet(x, temb)
                if hasattr(block, "attentions"):
                    x = block.attentions[k](x)
                skips.append(x)
            if block.sampler is not None:
                x = block.sampler(x)
                skips.append(x)
        x = self.mid_block.resnets[0](x, temb)
        x = self.mid_block.resnets[1](self.mid_block.attentions[0](x), temb)
        for block in self.up_blocks:
            for k, resnet in enumerate(block.resnets):
                x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
                if hasattr(block, "attentions"):
                    x = block.attentions[k](x)
            if block.sampler is not None:
                x = block.sampler(x)
        return self.conv_out(nnf.silu(self.conv_norm_out(x)))

    @classmethod
    def from_folder(cls, folder: str | Path) -> LiteUNet:
        """The UNet saved in ``folder`` (``config.json`` + ``diffusion_pytorch_model.safetensors``), strictly."""
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(json.loads((folder / "config.json").read_text()))
        model.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"), strict=True)
        return model.eval()


def _check_config(config: dict[str, Any]) -> None:
    wanted = {"act_fn": "silu", "time_embedding_type": "positional", "resnet_time_scale_shift": "default",
              "downsample_type": "conv", "upsample_type": "conv", "mid_block_type": "UNetMidBlock2D",
              "class_embed_type": None, "num_class_embeds": None, "center_input_sample": False,
              "downsample_padding": 1, "mid_block_scale_factor": 1, "add_attention": True,
              "attn_norm_num_groups": None, "time_embedding_dim": None}
    for key, value in wanted.items():
        if config.get(key, value) != value:
            raise LaminaError(f"LiteUNet supports {key}={value!r} only, the config has {config.get(key)!r}")
    if any(k not in DOWN_BLOCKS for k in config["down_block_types"]) or \
            any(k not in UP_BLOCKS for k in config["up_block_types"]):
        raise LaminaError(f"LiteUNet supports down blocks {DOWN_BLOCKS} and up blocks {UP_BLOCKS} only")


class LiteDDIM:
    """DDIM with ``eta = 0`` for the built-in scheduler config (``squaredcos_cap_v2`` betas, optionally rescaled
    to zero terminal SNR; ``trailing`` / ``leading`` spacing; ``sample`` / ``epsilon`` / ``v_prediction``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        if config.get("beta_schedule") != "squaredcos_cap_v2" or config.get("thresholding"):
            raise LaminaError("LiteDDIM supports beta_schedule squaredcos_cap_v2 without thresholding only")
        self.config = dict(config)
        n = int(config["num_train_timesteps"])

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                             dtype=torch.float32)
        if config.get("rescale_betas_zero_snr"):
            root = torch.cumprod(1.0 - betas, dim=0).sqrt()
            first, last = root[0].clone(), root[-1].clone()
            root -= last
            root *= first / (first - last)
            bars = root ** 2
            betas = 1 - torch.cat([bars[0:1], bars[1:] / bars[:-1]])
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if config.get("set_alpha_to_one", True) else \
            self.alphas_cumprod[0]
        self.timesteps = torch.tensor([], dtype=torch.long)
        self.num_inference_steps = 0

    def set_timesteps(self, steps: int) -> None:
        n = int(self.config["num_train_timesteps"])
        spacing = self.config.get("timestep_spacing", "leading")
        if spacing == "trailing":
            t = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
        elif spacing == "leading":
            t = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(np.int64)
            t += int(self.config.get("steps_offset", 0))
        else:
            raise LaminaError(f"LiteDDIM: timestep_spacing {spacing!r} not supported")
        self.timesteps = torch.from_numpy(t)
        self.num_inference_steps = steps

    def step(self, output: torch.Tensor, t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = int(t)
        prev = t - int(self.config["num_train_timesteps"]) // self.num_inference_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        kind = self.config.get("prediction_type", "epsilon")
        if kind == "sample":
            x0 = output
            eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        elif kind == "epsilon":
            x0 = (x - b_t ** 0.5 * output) / a_t ** 0.5
            eps = output
        elif kind == "v_prediction":
            x0 = a_t ** 0.5 * x - b_t ** 0.5 * output
            eps = a_t ** 0.5 * output + b_t ** 0.5 * x
        else:
            raise LaminaError(f"LiteDDIM: prediction_type {kind!r} not supported")
        if self.config.get("clip_sample"):
            r = float(self.config.get("clip_sample_range", 1.0))
            x0 = x0.clamp(-r, r)
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    @classmethod
    def from_folder(cls, folder: str | Path) -> LiteDDIM:
        return cls(json.loads((Path(folder) / "scheduler_config.json").read_text()))
