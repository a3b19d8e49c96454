"""Tensor helpers shared by the methods: layouts, value ranges, resizing, masks.

Conventions of the whole library: NumPy images are channel-last ``[H, W, C]`` (or batched
``[N, H, W, C]``), torch tensors channel-first ``[N, C, H, W]``, values in ``[0, 1]`` unless a
function says ``[-1, 1]`` (the range diffusion models sample in).

User-facing image inputs (PIL, NumPy, torch) are converted by :func:`lamina.layers.as_float_image`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from .errors import LaminaError


def to_nchw(array: Any, channels: int, what: str) -> torch.Tensor:
    """``[H, W(, C)]`` / ``[N, H, W(, C)]`` arrays or ``[N, C, H, W]`` tensors -> float ``[N, C, H, W]`` in [0, 1].

    uint8 arrays are scaled by 1/255; float arrays and tensors are taken as they are.
    Raises :class:`LaminaError` naming ``what`` for a wrong shape.
    """
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


def image_and_alpha(image: Any, alpha: Any, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Checked model inputs: image ``[N, 3, H, W]`` and alpha ``[N, 1, H, W]`` (see :func:`to_nchw`) on ``device``."""
    image_t = to_nchw(image, 3, "image").to(device)
    alpha_t = to_nchw(alpha, 1, "alpha").to(device)
    if image_t.shape[0] != alpha_t.shape[0] or image_t.shape[-2:] != alpha_t.shape[-2:]:
        raise LaminaError(f"image {tuple(image_t.shape)} and alpha {tuple(alpha_t.shape)} do not match")
    return image_t, alpha_t


def resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, *size]``, bilinear, antialiased when shrinking; unchanged when the size matches."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return nnf.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` -> ``[h, w(, C)]`` ``float32``, bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = nnf.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t[0, 0].numpy() if array.ndim == 2 else t[0].permute(1, 2, 0).numpy()


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` -> ``[-1, 1]``."""
    return x * 2.0 - 1.0


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation of a ``[N, 1, H, W]`` float mask by a ``(2 p + 1)^2`` square."""
    return nnf.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels) if pixels else mask
