"""Alpha compositing: the Porter-Duff "over" operator and premultiplication.

Every function here works on torch tensors with the colour channels on one axis
(``dim``, default ``-3`` for ``[..., 4, H, W]``; pass ``dim=-1`` for channel-last
``[..., H, W, 4]`` arrays viewed with ``torch.from_numpy``). Values are in ``[0, 1]``.
"Straight" RGBA stores colour independent of alpha; "premultiplied" stores ``rgb * alpha``.
All functions are differentiable, so the methods use them inside their losses too.

The over operator (Porter & Duff 1984), premultiplied form, for source ``s`` over ``d``::

    C'_o = C'_s + C'_d (1 - a_s)          a_o = a_s + a_d (1 - a_s)

i.e. the same affine update for all four premultiplied channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Alpha below this is treated as fully transparent when un-premultiplying (colour = 0).
UNPREMULTIPLY_EPS = 1e-8


def _split(rgba: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if rgba.shape[dim] != 4:
        raise ValueError(f"expected 4 channels (RGBA) on axis {dim}, got shape {tuple(rgba.shape)}")
    return rgba.narrow(dim, 0, 3), rgba.narrow(dim, 3, 1)


def premultiply(rgba: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Straight ``[..., 4, H, W]`` RGBA -> premultiplied (``rgb * a``, ``a``)."""
    rgb, a = _split(rgba, dim)
    return torch.cat([rgb * a, a], dim=dim)


def unpremultiply(rgba: torch.Tensor, dim: int = -3, eps: float = UNPREMULTIPLY_EPS) -> torch.Tensor:
    """Premultiplied ``[..., 4, H, W]`` -> straight RGBA; colour is 0 where ``a <= eps``.

    Colours are clamped to ``[0, 1]`` so rounding in the premultiplied values cannot push
    them out of range.
    """
    rgb_p, a = _split(rgba, dim)
    safe = torch.where(a > eps, a, torch.ones_like(a))
    rgb = torch.where(a > eps, rgb_p / safe, torch.zeros_like(rgb_p)).clamp(0.0, 1.0)
    return torch.cat([rgb, a], dim=dim)


def over_premultiplied(src: torch.Tensor, dst: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``src`` over ``dst``, both premultiplied ``[..., 4, H, W]``; returns premultiplied."""
    _, a_s = _split(src, dim)
    return src + dst * (1.0 - a_s)


def over(src: torch.Tensor, dst: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``src`` over ``dst``, both straight RGBA ``[..., 4, H, W]``; returns straight RGBA."""
    out = over_premultiplied(premultiply(src, dim), premultiply(dst, dim), dim)
    return unpremultiply(out, dim)


def composite_stack(layers: torch.Tensor | Sequence[torch.Tensor], dim: int = -3) -> torch.Tensor:
    """Composite straight-RGBA layers back to front (index 0 is the bottom).

    Args:
        layers: ``[L, ..., 4, H, W]`` tensor or a sequence of ``[..., 4, H, W]`` tensors.
        dim: channel axis of each layer.
    Returns:
        Straight RGBA ``[..., 4, H, W]``.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("composite_stack needs at least one layer")
    acc = premultiply(layers[0], dim)
    for layer in layers[1:]:
        acc = over_premultiplied(premultiply(layer, dim), acc, dim)
    return unpremultiply(acc, dim)


def blend(foreground: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The matting equation ``I = alpha * F + (1 - alpha) * B`` (opaque background).

    Args:
        foreground: ``[N, C, H, W]`` straight colour.
        alpha: ``[N, 1, H, W]`` in ``[0, 1]``.
        background: ``[N, C, H, W]``.
    Returns:
        ``[N, C, H, W]``; works for any value range (e.g. tanh outputs in ``[-1, 1]``).
    """
    return alpha * foreground + (1.0 - alpha) * background
