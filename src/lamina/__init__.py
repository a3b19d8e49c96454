"""lamina: layered image synthesis.

The core is one type, :class:`LayeredImage` (a background plus RGBA layers, back to
front), with exact compositing, editor file formats, procedural ground-truth scenes and
the metrics of the papers. The methods (FurryGAN, LayeringDiff, BFS) all produce it.
"""

from .compositing import blend, composite_stack, over, premultiply, unpremultiply
from .errors import InputFileError, LaminaError, LayerError, OutputExistsError
from .layers import Layer, LayeredImage, to_uint8

__version__ = "0.1.0"

__all__ = [
    "InputFileError",
    "LaminaError",
    "Layer",
    "LayerError",
    "LayeredImage",
    "OutputExistsError",
    "blend",
    "composite_stack",
    "over",
    "premultiply",
    "to_uint8",
    "unpremultiply",
]
