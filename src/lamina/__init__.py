"""lamina: layered image synthesis.

The core is one type, :class:`LayeredImage` (a background plus RGBA layers, back to
front), with exact compositing, editor file formats, procedural ground-truth scenes and
the metrics of the papers. The methods (FurryGAN, LayeringDiff, BFS) all produce it.

The names below are imported on first use (module ``__getattr__``), so ``import lamina``
and ``lamina --help`` do not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InputFileError, LaminaError, LayerError, OutputExistsError

__version__ = "0.1.0"

#: ``name -> submodule`` of the lazily imported public names.
_LAZY = {
    "blend": "compositing",
    "composite_stack": "compositing",
    "over": "compositing",
    "premultiply": "compositing",
    "unpremultiply": "compositing",
    "Layer": "layers",
    "LayeredImage": "layers",
    "to_uint8": "layers",
    "load": "io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "InputFileError",
    "LaminaError",
    "Layer",
    "LayerError",
    "LayeredImage",
    "OutputExistsError",
    "blend",
    "composite_stack",
    "load",
    "over",
    "premultiply",
    "to_uint8",
    "unpremultiply",
]
