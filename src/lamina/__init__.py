"""lamina: layered image synthesis.

The core is one type, :class:`LayeredImage` (a background plus RGBA layers, back to
front), with exact compositing, editor file formats, procedural ground-truth scenes and
the metrics of the papers. The methods (FurryGAN, LayeringDiff, BFS) all produce it.

``import lamina`` is cheap: the names below are imported on first use (torch, NumPy and
the file formats load only then), so ``lamina --help`` stays fast.

>>> image = lamina.load("photo.psd")          # or .ora, a PNG-stack folder, .png, .jpg
>>> image.save("photo.ora")                   # format by suffix; .png writes the composite
>>> image.to_pil()                            # the composite as a PIL RGBA image
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import InputFileError, LaminaError, LayerError, OutputExistsError

__version__ = "0.1.0"

#: Public name -> submodule that defines it (imported lazily by :func:`__getattr__`).
_LAZY = {
    "blend": "compositing",
    "composite_stack": "compositing",
    "over": "compositing",
    "premultiply": "compositing",
    "unpremultiply": "compositing",
    "BLEND_MODES": "compositing",
    "Layer": "layers",
    "LayeredImage": "layers",
    "as_float_image": "layers",
    "to_uint8": "layers",
    "load": "io",
    "save": "io",
}

if TYPE_CHECKING:  # pragma: no cover
    from .compositing import BLEND_MODES, blend, composite_stack, over, premultiply, unpremultiply
    from .io import load, save
    from .layers import Layer, LayeredImage, as_float_image, to_uint8


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BLEND_MODES",
    "InputFileError",
    "LaminaError",
    "Layer",
    "LayerError",
    "LayeredImage",
    "OutputExistsError",
    "as_float_image",
    "blend",
    "composite_stack",
    "load",
    "over",
    "premultiply",
    "save",
    "to_uint8",
    "unpremultiply",
]
