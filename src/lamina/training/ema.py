"""EMA of network weights with the half-life measured in images (StyleGAN2-ADA / EDM style)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def ema_beta(batch_size: int, halflife_nimg: float, cur_nimg: int = 0, rampup: float | None = None) -> float:
    """Per-step EMA decay ``0.5 ** (batch_size / half-life)`` with the half-life in images.

    With ``rampup`` the half-life is capped at ``cur_nimg * rampup`` so early averages
    follow the quickly changing weights (as in StyleGAN2-ADA / EDM).
    """
    halflife = float(halflife_nimg)
    if rampup is not None:
        halflife = min(halflife, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


def ema_update_(ema: torch.nn.Module, net: torch.nn.Module, beta: float, copy_buffers: bool = True) -> None:
    """In place: ``ema = beta * ema + (1 - beta) * net`` over parameters; buffers copied if asked."""
    import torch

    with torch.no_grad():
        _ema_update(ema, net, beta, copy_buffers)


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, beta: float, copy_buffers: bool) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    if copy_buffers:
        for b_ema, b in zip(ema.buffers(), net.buffers(), strict=True):
            b_ema.copy_(b)


class EMA:
    """Exponential moving average of a model's weights, half-life measured in images (buffers copied).

    ``ema.model`` is a frozen copy in eval mode; call :meth:`update` after every optimizer step.
    """

    def __init__(self, model: torch.nn.Module, halflife_nimg: float, rampup: float | None = 0.2) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.halflife_nimg, self.rampup = halflife_nimg, rampup

    def update(self, model: torch.nn.Module, cur_nimg: int, batch_size: int) -> None:
        """One step: ``cur_nimg`` images seen so far (this step's included), ``batch_size`` per step."""
        ema_update_(self.model, model, ema_beta(batch_size, self.halflife_nimg, cur_nimg, self.rampup))
