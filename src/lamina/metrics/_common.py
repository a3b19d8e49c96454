"""Input conversion shared by the metrics: NumPy or torch in, validated ``float32`` NumPy out.

NumPy arrays are channel-last (``[..., H, W, C]``), torch tensors channel-first
(``[..., C, H, W]``), as everywhere in lamina. Integer images are rescaled to ``[0, 1]``
(``uint8`` by 1/255, ``uint16`` by 1/65535), ``bool`` becomes 0/1, and float values must lie
in ``[0, 1]``; anything else raises :class:`~lamina.errors.LayerError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import LayerError
from ..layers import as_float_image


def to_numpy(x: Any, what: str) -> np.ndarray:
    """A NumPy view/copy of ``x`` (tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    if isinstance(x, np.ndarray):
        return x
    raise LayerError(f"{what}: expected a NumPy array or torch tensor, got {type(x).__name__}")


def as_unit(x: Any, what: str) -> np.ndarray:
    """Any-shape array or tensor -> ``float32`` in ``[0, 1]`` (same shape, no axis moved)."""
    array = to_numpy(x, what)
    if array.size == 0:
        raise LayerError(f"{what}: array is empty (shape {tuple(array.shape)})")
    # lamina's image validator checks dtype, NaN/Inf and range; feed it a flat [1, n, 1] view.
    return as_float_image(array.reshape(1, -1, 1), what, channels=(1,)).reshape(array.shape)


def as_maps(x: Any, what: str) -> np.ndarray:
    """Alpha maps or masks -> ``float32`` ``[..., H, W]`` in ``[0, 1]``.

    A channel axis of size 1 is dropped: the trailing one of a NumPy ``[..., H, W, 1]`` array
    or the ``C`` of a torch ``[..., 1, H, W]`` tensor.
    """
    is_tensor = isinstance(x, torch.Tensor)
    maps = as_unit(x, what)
    if maps.ndim >= 3 and is_tensor and maps.shape[-3] == 1:
        maps = maps[..., 0, :, :]
    elif maps.ndim >= 3 and not is_tensor and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.ndim < 2:
        raise LayerError(f"{what}: expected a map [H, W] or a batch [N, H, W], got shape {tuple(maps.shape)}")
    return maps


def as_images(x: Any, what: str) -> np.ndarray:
    """Images -> ``float32`` channel-last ``[..., H, W, C]`` in ``[0, 1]``.

    NumPy input is ``[..., H, W, C]``; torch input is ``[..., C, H, W]`` and gets its channel
    axis moved last. A 2-D ``[H, W]`` input is a one-channel image ``[H, W, 1]``.
    """
    is_tensor = isinstance(x, torch.Tensor)
    images = as_unit(x, what)
    if images.ndim == 2:
        return images[..., None]
    return np.moveaxis(images, -3, -1) if is_tensor else images


def as_region(mask: Any, what: str) -> np.ndarray:
    """A region mask -> ``bool`` ``[..., H, W]`` (as :func:`as_maps`): ``True`` where ``mask`` is nonzero."""
    return as_maps(mask, what) > 0.0


def check_same_shape(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape != b.shape:
        raise LayerError(f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape {tuple(b.shape)}")


def broadcast_region(region: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Broadcast a region mask ``[H, W]`` (or batch) to ``shape``; LayerError if it does not fit."""
    try:
        return np.broadcast_to(region, shape)
    except ValueError:
        raise LayerError(f"{what} has shape {tuple(region.shape)}, which does not fit images of "
                         f"shape {tuple(shape)}") from None
