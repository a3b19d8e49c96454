"""The learned HFA as a diffusers model (``save_pretrained`` / ``from_pretrained``, part of a saved
:class:`~lamina.layeringdiff.fbdd.FBDDPipeline`); the network itself is :class:`~lamina.layeringdiff.hfa.HFABase`.
Also importable as ``lamina.layeringdiff.hfa.HFANet`` (the name saved models give)."""

from __future__ import annotations

from ..errors import LaminaError
from .hfa import HFABase

try:
    from diffusers import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise LaminaError("the learned HFA needs diffusers: pip install 'diffusers>=0.42'") from exc


class HFANet(HFABase, ModelMixin, ConfigMixin):
    """The learned high-frequency alignment of FBDD's upsampled layers (:mod:`lamina.layeringdiff.hfa`).

    Args:
        channels: width of the convolutions.
        dilations: one residual block per entry, its first convolution with that dilation.
        max_scale: the largest ratio of output size to FBDD working size it was trained for
            (``None``: any); :class:`~lamina.layeringdiff.fbdd.FBDDPipeline` skips it beyond that
            (a photo's object window is often many times the 64 px working size: there the
            network would run far outside what it learned, and cost the most).
    """

    @register_to_config
    def __init__(self, channels: int = 24, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 max_scale: float | None = None) -> None:
        super().__init__()
        self._build(channels, tuple(dilations))


# Saved pipelines name the HFA's module ``lamina.layeringdiff.hfa`` (where it was defined until 2026-12-07).
HFANet.__module__ = "lamina.layeringdiff.hfa"
