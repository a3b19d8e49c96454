"""The layered image: one type for the output of every lamina method.

A :class:`LayeredImage` is a canvas of ``width x height`` pixels holding a background
:class:`Layer` and an ordered list of foreground layers, **back to front** (``layers[0]``
sits directly on the background, ``layers[-1]`` is the top). Each layer holds straight
(non-premultiplied) RGBA in ``[0, 1]``, read as ``float32`` channel-last ``[h, w, 4]``
(:attr:`Layer.pixels`), placed on the canvas at an integer ``offset`` ``(left, top)`` and
drawn with an ``opacity``. Layers made from ``uint8`` / ``uint16`` pixels keep those integers
(4 or 8 bytes a pixel instead of 16) until their float pixels are asked for; compositing and
the writers read them in bands (:class:`Layer`, "compact storage").

Conventions shared by the whole library:

* NumPy arrays are channel-last ``[H, W, C]``; torch tensors are channel-first
  ``[N, C, H, W]``. Both hold values in ``[0, 1]``.
* The composite is the exact Porter-Duff "over" of the layers, back to front
  (:mod:`lamina.compositing`).
* ``metadata`` is free JSON-serialisable data: ``method``, ``prompt``, ``seed``, ``box``...
  Each layer has its own ``metadata`` too (e.g. the caption of the object it holds).
* Each layer has a ``blend_mode``: ``"normal"``, ``"multiply"`` or ``"screen"`` (W3C
  Compositing and Blending, separable modes), stored by every file format.
* :attr:`LayeredImage.bit_depth` (8 or 16) is the precision of the source and the depth
  the writers use by default: a 16-bit PNG/TIFF/PSD reads back as 16 and is written as
  16-bit PSD/PNG again. Float pixels are float32, which holds 16-bit values exactly.
* Every image input (:func:`as_float_image`) may be a PIL image, a NumPy ``[H, W, C]``
  array (uint8, uint16, bool or float in ``[0, 1]``) or a torch ``[C, H, W]`` /
  ``[1, C, H, W]`` float tensor in ``[0, 1]``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .compositing import BLEND_MODES, UNPREMULTIPLY_EPS, blend_function, blended_source
from .errors import LayerError

#: Tolerance on the ``[0, 1]`` range check of float pixels (rounding from other libraries).
RANGE_TOLERANCE = 1e-4


#: Scale from an integer dtype to ``[0, 1]``.
_INTEGER_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
#: What :attr:`Layer.stored` may hold.
_STORED_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.uint16))

#: Bit depths a layered image records and its writers store.
BIT_DEPTHS = (8, 16)

#: Pillow modes holding more than 8 bits of grey; ``I`` is read as 16-bit (clipped to 0..65535).
DEEP_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def pil_to_array(image: Image.Image, channels: Sequence[int] = (3, 4)) -> np.ndarray:
    """PIL image of any mode -> ``[H, W, C]`` array (uint8, uint16 for deep grey, float32 for ``F``).

    ``C`` is 4 when 4 is allowed and the image has transparency (an alpha band or a
    transparent palette/colour entry), or when 3 is not allowed; else 3, or 1 when only 1 is allowed.
    """
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    want = 4 if 4 in channels and (has_alpha or 3 not in channels) else 3 if 3 in channels else 1
    if image.mode in DEEP_GREY_MODES:
        grey = np.asarray(image)
        if image.mode == "F":
            grey = np.clip(np.nan_to_num(grey.astype(np.float32)), 0.0, 1.0)
            opaque: Any = np.float32(1.0)
        else:
            grey, opaque = np.clip(grey, 0, 65535).astype(np.uint16), np.uint16(65535)
        if want == 1:
            return grey[:, :, None]
        planes = [grey] * 3 + ([np.full_like(grey, opaque)] if want == 4 else [])
        return np.stack(planes, axis=2)
    if want == 1:
        return np.asarray(image.convert("L"))[:, :, None]
    return np.asarray(image.convert("RGBA" if want == 4 else "RGB"))


def _as_hwc_array(array: Any, what: str, channels: Sequence[int]) -> np.ndarray:
    """Shape check shared by the float and planar converters: PIL images and tensors become HWC arrays."""
    if isinstance(array, Image.Image):
        if array.width == 0 or array.height == 0:
            raise LayerError(f"{what}: image is empty ({array.width}x{array.height})")
        array = pil_to_array(array, channels)
    if isinstance(array, torch.Tensor):
        shape = tuple(array.shape)
        if array.ndim == 4 and shape[0] == 1:
            array = array[0]
        if array.ndim != 3 or array.shape[0] not in channels:
            want = " or ".join(f"[{c}, H, W]" for c in channels)
            raise LayerError(f"{what}: expected a tensor {want} (or with a batch of 1 in front), got shape {shape}")
        if array.is_complex() or not (array.is_floating_point() or array.dtype in (torch.uint8, torch.bool)):
            raise LayerError(f"{what}: unsupported tensor dtype {array.dtype} (use float in [0, 1] or uint8)")
        array = array.detach().to("cpu").permute(1, 2, 0).numpy()
        if array.dtype == np.float16 or array.dtype == np.float64:
            array = array.astype(np.float32)
    if not isinstance(array, np.ndarray):
        raise LayerError(f"{what}: expected a PIL image, NumPy array or torch tensor, got {type(array).__name__}")
    if array.ndim == 2 and 1 in channels:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in channels:
        want = " or ".join(f"[H, W, {c}]" for c in channels)
        raise LayerError(f"{what}: expected shape {want} (channel-last), got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise LayerError(f"{what}: image is empty (shape {tuple(array.shape)})")
    return array


def as_float_image(array: Any, what: str, channels: Sequence[int] = (4,)) -> np.ndarray:
    """Validate any image input and return it as ``float32`` ``[H, W, C]`` in ``[0, 1]``.

    The one converter of image inputs in lamina. Accepts a PIL image of any mode, a NumPy
    array ``[H, W, C]`` (``uint8`` scaled by 1/255, ``uint16`` by 1/65535, ``bool``, or
    float in ``[0, 1]``), or a torch tensor ``[C, H, W]`` / ``[1, C, H, W]`` (float in
    ``[0, 1]``, or uint8), with ``C`` one of ``channels``. Raises :class:`LayerError`
    naming ``what`` for a wrong type, shape, dtype, NaN/Inf or out-of-range value.
    """
    array = _as_hwc_array(array, what, channels)
    if array.dtype in _INTEGER_SCALE:
        return array.astype(np.float32) / np.float32(_INTEGER_SCALE[array.dtype])
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise LayerError(f"{what}: unsupported dtype {array.dtype} (use uint8, uint16, bool or float)")
    out = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        raise LayerError(f"{what}: contains {int((~finite).sum())} NaN/Inf values")
    lo, hi = float(out.min()), float(out.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise LayerError(f"{what}: values must lie in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
    if lo < 0.0 or hi > 1.0:
        out = np.clip(out, 0.0, 1.0)  # a new array: never edit the caller's pixels
    return out


def _as_planes(array: Any, what: str) -> np.ndarray:
    """Validate RGB/RGBA pixels and return planar ``float32`` ``[4, H, W]`` (opaque alpha for RGB)."""
    stored = _as_stored(array, what)
    return _to_float_planes(stored) if stored.dtype != np.float32 else stored


def _as_stored(array: Any, what: str) -> np.ndarray:
    """Validate RGB/RGBA pixels and return the planes a :class:`Layer` stores: ``[4, H, W]``.

    ``uint8`` / ``uint16`` input (arrays, 8-bit PIL images) stays integer (exact, 4 or 8 bytes a
    pixel), anything else becomes ``float32`` in ``[0, 1]``; RGB gets an opaque alpha.
    """
    array = _as_hwc_array(array, what, (4, 3))
    channels = array.shape[2]
    if array.dtype in _INTEGER_SCALE:
        planes = np.empty((4,) + array.shape[:2], array.dtype)
        planes[:channels] = array.transpose(2, 0, 1)
        if channels == 3:
            planes[3] = int(_INTEGER_SCALE[array.dtype])
        return planes
    planes = np.empty((4,) + array.shape[:2], np.float32)
    planes[:channels] = as_float_image(array, what, channels=(channels,)).transpose(2, 0, 1)
    if channels == 3:
        planes[3] = 1.0
    return planes


def integer_scale(dtype: Any) -> float | None:
    """255.0 for ``uint8``, 65535.0 for ``uint16`` (the integers a compact layer stores), else ``None``."""
    return _INTEGER_SCALE.get(np.dtype(dtype))


def _to_float_planes(stored: np.ndarray) -> np.ndarray:
    """Integer planes -> ``float32`` in ``[0, 1]``: ``k * float32(1 / max)``, one fused pass (a new array)."""
    out = np.empty(stored.shape, np.float32)
    np.multiply(stored, np.float32(1.0 / _INTEGER_SCALE[stored.dtype]), out=out)
    return out


def _check_json(metadata: Any, what: str) -> dict[str, Any]:
    """A copy of ``metadata`` (None -> ``{}``) after checking it is a JSON-serialisable dict."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise LayerError(f"{what}: metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise LayerError(f"{what}: metadata is not JSON-serialisable ({reason})") from None
    return dict(metadata)


class Layer:
    """One RGBA layer.

    Args:
        pixels: straight RGBA ``[h, w, 4]`` in ``[0, 1]`` (float, or ``uint8``/``uint16``
            rescaled), or a torch tensor ``[4, h, w]``. RGB input gets an opaque alpha.
        name: shown in editors (PSD/ORA layer name, PNG-stack file name).
        offset: ``(left, top)`` of the layer on the canvas, in pixels; may be negative.
        opacity: layer opacity in ``[0, 1]``, multiplied into alpha when compositing.
        visible: hidden layers are kept in files but skipped by :meth:`LayeredImage.composite`.
        metadata: free JSON-serialisable data about this layer (caption, box, ...).
        blend_mode: ``"normal"`` (source-over), ``"multiply"`` or ``"screen"``: how the
            layer's colour mixes with what is below it (W3C separable blending, then over).

    The pixels are stored planar (``[4, h, w]``, :attr:`planes`) because every per-pixel
    operation on planes vectorises; :attr:`pixels` is a channel-last view of them.

    **Compact storage.** ``uint8`` / ``uint16`` pixels (arrays or 8-bit PIL images) are kept as
    they are (:attr:`stored`, :attr:`is_compact`: 4 or 8 bytes a pixel instead of 16), and every
    reader that can (:meth:`read`, :meth:`quantised`, compositing, the writers, contact sheets)
    works from them a band at a time. The first access to :attr:`planes` / :attr:`pixels` /
    :attr:`rgb` / :attr:`alpha` converts the layer to ``float32`` for good (the values
    ``k / 255`` or ``k / 65535`` exactly as a float input would give), so those stay writable
    views, as for any layer.
    """

    def __init__(
        self,
        pixels: np.ndarray | torch.Tensor,
        name: str = "layer",
        offset: tuple[int, int] = (0, 0),
        opacity: float = 1.0,
        visible: bool = True,
        metadata: dict[str, Any] | None = None,
        blend_mode: str = "normal",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise LayerError(f"layer name must be a non-empty string, got {name!r}")
        self.name = name
        what = f"layer {name!r}"
        self.pixels = pixels
        try:
            left, top = offset
            if any(isinstance(v, float) and not float(v).is_integer() for v in (left, top)):
                raise ValueError
            self.offset = (int(left), int(top))
        except (TypeError, ValueError, OverflowError):
            raise LayerError(f"{what}: offset must be (left, top) integers, got {offset!r}") from None
        _check_offset(self)
        if isinstance(opacity, bool) or not (isinstance(opacity, (int, float)) and 0.0 <= float(opacity) <= 1.0):
            raise LayerError(f"{what}: opacity must be a number in [0, 1], got {opacity!r}")
        self.opacity = float(opacity)
        self.visible = bool(visible)
        self.metadata = _check_json(metadata, what)
        self.blend_mode = check_blend_mode(blend_mode, what)

    @classmethod
    def from_planes(cls, planes: np.ndarray, name: str = "layer", offset: tuple[int, int] = (0, 0),
                    opacity: float = 1.0, visible: bool = True, metadata: dict[str, Any] | None = None,
                    blend_mode: str = "normal") -> Layer:
        """A layer holding ``planes`` themselves (no copy, no conversion): the form :attr:`stored` has.

        ``planes``: ``[4, h, w]``, ``float32`` in ``[0, 1]`` or ``uint8`` / ``uint16`` (a compact layer);
        a view is kept as a view. The other arguments are those of :class:`Layer`.
        """
        if not isinstance(planes, np.ndarray) or planes.ndim != 3 or planes.shape[0] != 4 or (
                planes.dtype != np.float32 and integer_scale(planes.dtype) is None):
            raise LayerError(f"layer planes must be float32, uint8 or uint16 [4, h, w], got "
                             f"{getattr(planes, 'dtype', type(planes).__name__)} {getattr(planes, 'shape', '')}")
        layer = cls(np.zeros((1, 1, 4), planes.dtype), name=name, offset=offset, opacity=opacity, visible=visible,
                    metadata=metadata, blend_mode=blend_mode)
        layer._stored = planes
        _check_offset(layer)  # against the real size
        return layer

    @property
    def planes(self) -> np.ndarray:
        """Straight RGBA ``float32`` ``[4, h, w]`` in ``[0, 1]`` (a compact layer becomes ``float32`` here)."""
        if self._stored.dtype != np.float32:
            self._stored = _to_float_planes(self._stored)
        return self._stored

    @planes.setter
    def planes(self, value: np.ndarray) -> None:
        self._stored = value

    @property
    def stored(self) -> np.ndarray:
        """The planes as stored, ``[4, h, w]``: ``float32`` in ``[0, 1]``, or ``uint8`` / ``uint16`` (compact)."""
        return self._stored

    @property
    def is_compact(self) -> bool:
        """Whether the pixels are stored as integers (:attr:`stored` is ``uint8`` / ``uint16``)."""
        return self._stored.dtype != np.float32

    def read(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """``float32`` planes ``[4, r, c]`` of the layer's ``rows`` and ``cols``, without converting the layer.

        A view of :attr:`planes` for a float layer; for a compact one, a new array with the
        values :attr:`planes` would hold.
        """
        part = self._stored[:, rows, cols]
        return part if part.dtype == np.float32 else _to_float_planes(part)

    def quantised(self, bits: int = 8) -> np.ndarray:
        """Straight RGBA ``[h, w, 4]`` as ``uint8`` (``bits`` 8) or ``uint16`` (16), rounded as :func:`to_uint8` does.

        A compact layer of that depth gives its own values (a channel-last view); otherwise
        the conversion goes a block of rows at a time.
        """
        dtype = {8: np.uint8, 16: np.uint16}.get(bits)
        if dtype is None:
            raise LayerError(f"bits must be 8 or 16, got {bits!r}")
        if self._stored.dtype == dtype:
            return self._stored.transpose(1, 2, 0)
        out = np.empty((self.height, self.width, 4), dtype)
        rows = max(1, QUANTISE_CHUNK // max(1, 4 * self.width))
        for r0 in range(0, self.height, rows):
            band = slice(r0, r0 + rows)
            out[band] = _quantise(self.read(band).transpose(1, 2, 0), float(np.iinfo(dtype).max), dtype)
        return out

    def opaque(self) -> bool:
        """Whether every pixel's alpha is 1 (opacity not counted)."""
        alpha = self._stored[3]
        full = 1.0 if alpha.dtype == np.float32 else _INTEGER_SCALE[alpha.dtype]
        return bool(alpha.min() >= full)

    @property
    def pixels(self) -> np.ndarray:
        """Straight RGBA ``float32`` ``[h, w, 4]`` in ``[0, 1]`` (a view of :attr:`planes`)."""
        return self.planes.transpose(1, 2, 0)

    @pixels.setter
    def pixels(self, value: np.ndarray | torch.Tensor) -> None:
        self._stored = _as_stored(value, f"layer {self.name!r}")

    @property
    def width(self) -> int:
        return int(self._stored.shape[2])

    @property
    def height(self) -> int:
        return int(self._stored.shape[1])

    @property
    def rgb(self) -> np.ndarray:
        """``[h, w, 3]`` straight colour (a view)."""
        return self.pixels[:, :, :3]

    @property
    def alpha(self) -> np.ndarray:
        """``[h, w]`` alpha in ``[0, 1]`` (a view, opacity not applied)."""
        return self.planes[3]

    def bbox(self, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
        """Canvas box ``(x0, y0, x1, y1)`` (exclusive end) of pixels with alpha > threshold."""
        alpha = self.alpha if not self.is_compact else _to_float_planes(self._stored[3:])[0]
        ys, xs = np.nonzero(alpha > threshold)
        if ys.size == 0:
            return None
        left, top = self.offset
        return (left + int(xs.min()), top + int(ys.min()), left + int(xs.max()) + 1, top + int(ys.max()) + 1)

    def copy(self) -> Layer:
        return copy.deepcopy(self)

    def to_pil(self) -> Image.Image:
        """The layer's own pixels (not placed on the canvas) as a PIL ``RGBA`` image, straight alpha."""
        return Image.fromarray(np.ascontiguousarray(self.quantised(8)), "RGBA")

    def __repr__(self) -> str:
        blend = f", blend_mode={self.blend_mode!r}" if self.blend_mode != "normal" else ""
        return (f"Layer({self.name!r}, {self.width}x{self.height}, offset={self.offset}, "
                f"opacity={self.opacity:g}, visible={self.visible}{blend})")


#: Rows of the canvas composited at a time (:meth:`LayeredImage.composite`): the scratch memory of one band.
COMPOSITE_BAND_ROWS = 256

#: Offsets and layer edges must fit the int32 fields of the PSD writer.
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _check_offset(layer: Layer) -> None:
    (left, top), (w, h) = layer.offset, (layer.width, layer.height)
    if not (INT32_MIN <= left and left + w <= INT32_MAX and INT32_MIN <= top and top + h <= INT32_MAX):
        raise LayerError(f"layer {layer.name!r}: offset {layer.offset} out of range "
                         "(the layer's edges must fit in 32-bit integers, as PSD stores them)")


def check_blend_mode(mode: Any, what: str = "layer") -> str:
    """``mode`` if it is one of :data:`~lamina.compositing.BLEND_MODES`, else :class:`LayerError`."""
    if mode not in BLEND_MODES:
        raise LayerError(f"{what}: blend_mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    return str(mode)


def check_box(box: Sequence[Any], width: int, height: int) -> tuple[int, int, int, int]:
    """Validate a pixel box ``(x0, y0, x1, y1)`` (exclusive end) on a ``width x height`` image.

    Raises :class:`LayerError` when it is malformed, empty or not inside the image.
    """
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
        if any(float(v) != int(v) for v in box):
            raise ValueError
    except (TypeError, ValueError):
        raise LayerError(f"box must be four integers x0,y0,x1,y1, got {box!r}") from None
    if x1 <= x0 or y1 <= y0:
        raise LayerError(f"box {x0},{y0},{x1},{y1} is empty (need x0 < x1 and y0 < y1)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise LayerError(f"box {x0},{y0},{x1},{y1} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Parse ``"x0,y0,x1,y1"`` into integers (validated against an image by :func:`check_box`)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        raise LayerError(f"box must be four integers x0,y0,x1,y1, got {text!r}")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


def _unpremultiply_(acc: torch.Tensor) -> torch.Tensor:
    """In-place :func:`~lamina.compositing.unpremultiply` of planar ``[4, H, W]`` (one extra plane of memory)."""
    alpha = acc[3:]
    covered = alpha > UNPREMULTIPLY_EPS
    acc[:3].div_(torch.where(covered, alpha, torch.ones_like(alpha)))
    acc[:3].mul_(covered).clamp_(0.0, 1.0)
    return acc


def _placement(layer: Layer, width: int, height: int, rows: tuple[int, int] | None = None
               ) -> tuple[slice, slice, slice, slice] | None:
    """Canvas and layer slices where ``layer`` overlaps a ``width x height`` canvas.

    With ``rows`` ``(r0, r1)``, only the canvas rows ``r0..r1``, and the canvas slice counts rows from ``r0``.
    """
    r0, r1 = rows if rows is not None else (0, height)
    left, top = layer.offset
    x0, y0 = max(left, 0), max(top, r0)
    x1, y1 = min(left + layer.width, width), min(top + layer.height, r1)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0 - r0, y1 - r0), slice(x0, x1), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)


class LayeredImage:
    """A background plus foreground layers, back to front, on one canvas.

    Args:
        background: the bottom layer. A :class:`Layer` of exactly the canvas size at offset
            ``(0, 0)``, or an array ``[H, W, 3|4]`` (uint8 or float in ``[0, 1]``). It is
            usually opaque; a transparent background is allowed (e.g. a PSD read back).
        layers: foreground layers, back to front. Arrays are wrapped as full-canvas layers
            named ``layer_1``, ``layer_2``...
        metadata: free JSON-serialisable data (``method``, ``prompt``, ``seed``, ``box``...).
        bit_depth: 8 or 16, the precision of the source; the writers store this depth
            unless told otherwise (16-bit PSD, 16-bit PNGs in ORA / PNG stacks).
    """

    def __init__(
        self,
        background: Layer | np.ndarray | torch.Tensor | Image.Image,
        layers: Iterable[Layer | np.ndarray | torch.Tensor | Image.Image] = (),
        metadata: dict[str, Any] | None = None,
        bit_depth: int = 8,
    ) -> None:
        if not isinstance(background, Layer):
            background = Layer(background, name="background")
        if background.offset != (0, 0):
            raise LayerError(f"background layer {background.name!r} must be at offset (0, 0), got {background.offset}")
        self.background = background
        self.layers: list[Layer] = []
        for i, layer in enumerate(layers):
            self.layers.append(layer if isinstance(layer, Layer) else Layer(layer, name=f"layer_{i + 1}"))
        self.metadata = _check_json(metadata, "layered image")
        self.bit_depth = bit_depth
        self.validate()

    # ------------------------------------------------------------------ basics
    @property
    def width(self) -> int:
        return self.background.width

    @property
    def height(self) -> int:
        return self.background.height

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the canvas."""
        return (self.width, self.height)

    @property
    def all_layers(self) -> list[Layer]:
        """Background followed by the foreground layers (back to front)."""
        return [self.background, *self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        names = ", ".join(layer.name for layer in self.layers)
        return f"LayeredImage({self.width}x{self.height}, background={self.background.name!r}, layers=[{names}])"

    def validate(self) -> None:
        """Check every layer again (after in-place edits); raises :class:`LayerError`."""
        for layer in self.all_layers:
            if not isinstance(layer, Layer):
                raise LayerError(f"layers must be lamina.Layer objects, got {type(layer).__name__}")
            planes = layer.stored
            if planes.dtype not in _STORED_DTYPES or planes.ndim != 3 or planes.shape[0] != 4:
                raise LayerError(f"layer {layer.name!r}: planes must be float32 (or uint8/uint16) [4, h, w], got "
                                 f"{planes.dtype} {tuple(planes.shape)}")
            if planes.dtype == np.float32 and not np.isfinite(planes.sum()):  # one reduction: NaN/Inf poison the sum
                raise LayerError(f"layer {layer.name!r}: contains NaN/Inf values")
        if self.background.offset != (0, 0):
            raise LayerError(f"background layer {self.background.name!r} must be at offset (0, 0)")
        if self.bit_depth not in BIT_DEPTHS or isinstance(self.bit_depth, bool):
            raise LayerError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        for layer in self.all_layers:
            check_blend_mode(layer.blend_mode, f"layer {layer.name!r}")
            _check_offset(layer)
        names = [layer.name for layer in self.all_layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LayerError(f"layer names must be unique, repeated: {', '.join(duplicates)}")

    def index(self, key: int | str) -> int:
        """Index into :attr:`layers` of a foreground layer given by index or name."""
        if isinstance(key, str):
            for i, layer in enumerate(self.layers):
                if layer.name == key:
                    return i
            raise LayerError(f"no layer named {key!r} (layers: {[layer.name for layer in self.layers]})")
        if not -len(self.layers) <= key < len(self.layers):
            raise LayerError(f"layer index {key} out of range for {len(self.layers)} layers")
        return key % len(self.layers)

    def copy(self) -> LayeredImage:
        return copy.deepcopy(self)

    # ------------------------------------------------------------- compositing
    def canvas(self, key: int | str | None = None) -> np.ndarray:
        """One layer placed on a transparent canvas, opacity folded into alpha.

        Args:
            key: foreground index or name; ``None`` for the background.
        Returns:
            ``float32`` ``[H, W, 4]`` straight RGBA.
        """
        layer = self.background if key is None else self.layers[self.index(key)]
        return self._canvas_planes(layer).transpose(1, 2, 0)

    def _canvas_planes(self, layer: Layer, rows: tuple[int, int] | None = None) -> np.ndarray:
        r0, r1 = rows if rows is not None else (0, self.height)
        out = np.zeros((4, r1 - r0, self.width), np.float32)
        place = _placement(layer, self.width, self.height, rows)
        if place is not None:
            cy, cx, ly, lx = place
            out[:, cy, cx] = layer.read(ly, lx)
            out[3, cy, cx] *= layer.opacity
        return out

    def composite(
        self,
        layers: Sequence[int | str] | None = None,
        background: bool = True,
        include_hidden: bool = False,
    ) -> np.ndarray:
        """Flatten to one image with the exact "over" operator, back to front.

        Args:
            layers: foreground layers to include (indices or names); all when ``None``.
                They are always drawn in stack order, whatever order they are given in.
            background: draw the background first; otherwise start from transparency.
            include_hidden: also draw layers whose ``visible`` is False.
        Returns:
            ``float32`` ``[H, W, 4]`` straight RGBA in ``[0, 1]`` (alpha is 1 everywhere
            when the background is opaque).
        """
        return self._composite_bands(layers, background, include_hidden, np.float32, lambda band: band)

    def composite_uint8(
        self,
        layers: Sequence[int | str] | None = None,
        background: bool = True,
        include_hidden: bool = False,
    ) -> np.ndarray:
        """:meth:`composite` rounded half-up to ``uint8`` ``[H, W, 4]``."""
        return self._composite_bands(layers, background, include_hidden, np.uint8,
                                     lambda band: band.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8))

    def iter_composite(
        self,
        layers: Sequence[int | str] | None = None,
        background: bool = True,
        include_hidden: bool = False,
        rows: int = COMPOSITE_BAND_ROWS,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`composite` a band of ``rows`` canvas rows at a time: ``(first row, float32 [r, W, 4])``.

        Every operation is per pixel, so the bands hold exactly the rows of :meth:`composite`, while
        the memory is one band (writers encode a large canvas this way).
        """
        for r0, band in self._iter_bands(layers, background, include_hidden, rows):
            yield r0, band.permute(1, 2, 0).numpy()

    def _iter_bands(self, layers: Sequence[int | str] | None, background: bool, include_hidden: bool,
                    band_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        if band_rows < 1:
            raise LayerError(f"composite bands need at least one row, got {band_rows}")
        chosen = range(len(self.layers)) if layers is None else sorted({self.index(k) for k in layers})
        draw = [self.layers[i] for i in chosen if self.layers[i].visible or include_hidden]
        use_bg = background and (include_hidden or self.background.visible)
        opaque = use_bg and self.background.opacity == 1.0 and self.background.opaque()
        for r0 in range(0, self.height, band_rows):
            yield r0, self._composite(draw, use_bg, opaque, (r0, min(r0 + band_rows, self.height)))

    def _composite_bands(self, layers: Sequence[int | str] | None, background: bool, include_hidden: bool,
                         dtype: Any, convert: Any) -> np.ndarray:
        """The channel-last composite ``[H, W, 4]`` of ``dtype``, made :data:`COMPOSITE_BAND_ROWS` rows at a time.

        The scratch memory is one band instead of a planar copy of the canvas.
        """
        out = np.empty((self.height, self.width, 4), dtype)
        for r0, band in self._iter_bands(layers, background, include_hidden, COMPOSITE_BAND_ROWS):
            out[r0:r0 + band.shape[1]] = convert(band).permute(1, 2, 0).numpy()
        return out

    def _composite(self, draw: list[Layer], use_bg: bool, opaque: bool, rows: tuple[int, int]) -> torch.Tensor:
        """Planar ``[4, r, W]`` straight-RGBA composite of the canvas rows ``rows``."""
        if opaque:
            return self._composite_opaque(self.background, draw, rows)
        if use_bg:
            acc = torch.from_numpy(self._canvas_planes(self.background, rows))
            acc[:3].mul_(acc[3:])  # premultiply in place
        else:
            acc = torch.zeros((4, rows[1] - rows[0], self.width), dtype=torch.float32)
        # General case, premultiplied and in place, on each layer's region (backdrop c_b, a_b
        # premultiplied; source C_s straight with alpha a_s): C' <- a_s C'_s + c_b (1 - a_s),
        # where C'_s = (1 - a_b) C_s + a_b B(C_b, C_s) is the blended source (W3C compositing);
        # see lamina.compositing.blended_source for C'_s without division.
        for cy, cx, src, a, mode in self._regions(draw, rows):
            region = acc[:, cy, cx]
            if mode == "normal":
                region.mul_(1.0 - a)
                region[:3].addcmul_(src[:3], a)
            else:
                source = blended_source(src[:3], region[:3], region[3:], mode)
                region.mul_(1.0 - a)
                region[:3].addcmul_(source, a)
            region[3:].add_(a)
        return _unpremultiply_(acc)

    def _composite_opaque(self, bg: Layer, draw: list[Layer], rows: tuple[int, int]) -> torch.Tensor:
        # Over an opaque destination the result stays opaque and "over" reduces to a lerp
        # of straight colour, C <- C + a_s (B(C, C_s) - C): one fused pass per layer with no
        # premultiplication or division (B(C_b, C_s) = C_s for normal).
        band = bg.read(slice(rows[0], rows[1]))
        acc = torch.from_numpy(band.copy() if bg.stored.dtype == np.float32 else band)
        for cy, cx, src, a, mode in self._regions(draw, rows):
            region = acc[:3, cy, cx]
            target = src[:3] if mode == "normal" else blend_function(mode)(region, src[:3])
            region.lerp_(target, a)
        return acc

    def _regions(self, draw: list[Layer], rows: tuple[int, int]
                 ) -> Iterable[tuple[slice, slice, torch.Tensor, torch.Tensor, str]]:
        """For each drawn layer: band slices, its overlapping ``[4, h, w]`` planes, effective alpha, blend mode."""
        for layer in draw:
            place = _placement(layer, self.width, self.height, rows)
            if place is None:
                continue
            cy, cx, ly, lx = place
            src = torch.from_numpy(layer.read(ly, lx))
            a = src[3:] * layer.opacity if layer.opacity != 1.0 else src[3:]
            yield cy, cx, src, a, layer.blend_mode

    def to_pil(self) -> Image.Image:
        """The composite (:meth:`composite_uint8`) as a PIL ``RGBA`` image."""
        return Image.fromarray(self.composite_uint8(), "RGBA")

    def save(
        self,
        path: str | os.PathLike[str],
        overwrite: bool = False,
        *,
        bit_depth: int | None = None,
    ) -> Path:
        """Write to ``path``, the format chosen by its suffix (atomically; see :func:`lamina.io.save`).

        ``.psd`` / ``.ora`` layered files, a path without suffix (or an existing folder) for a
        PNG stack, ``.png`` / ``.jpg`` / ``.tif`` / ``.webp`` for the flattened composite.
        ``bit_depth`` (8 or 16) defaults to :attr:`bit_depth`. Raises
        :class:`~lamina.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
        """
        from .io import save  # lamina.io imports psd-tools: only when writing

        return save(self, path, overwrite=overwrite, bit_depth=bit_depth)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, memory_budget: int | None = None) -> LayeredImage:
        """Read a layered file (PSD, ORA, PNG stack) or a plain image (one opaque-or-not background layer).

        The whole decoded size is checked against ``memory_budget`` bytes first (default
        :func:`lamina.io.memory_budget`, set by ``LAMINA_MEMORY_BUDGET``). Raises
        :class:`~lamina.errors.InputFileError` naming the file for anything unreadable.
        """
        from .io import load

        return load(path, memory_budget=memory_budget)

    def merge(self, keys: Sequence[int | str], name: str | None = None) -> LayeredImage:
        """Return a copy with the given foreground layers merged into one full-canvas layer.

        The merged layer takes the place of the top-most merged layer (as Photoshop's
        "Merge Layers" does); the other layers keep their order.
        """
        idx = sorted({self.index(k) for k in keys})
        if not idx:
            raise LayerError("merge needs at least one layer")
        merged = Layer(
            self.composite(layers=idx, background=False, include_hidden=True),
            name=name or self.layers[idx[-1]].name,
            metadata={"merged_from": [self.layers[i].name for i in idx]},
        )
        out = self.copy()
        out.layers = [merged if i == idx[-1] else layer for i, layer in enumerate(out.layers) if i not in idx[:-1]]
        out.validate()
        return out

    def crop(self, box: Sequence[int]) -> LayeredImage:
        """Return a copy cropped to the canvas box ``(x0, y0, x1, y1)`` (exclusive end).

        Layers keep their own pixels; only offsets move, so nothing outside the box is lost
        from layers that extend past it. The background is cropped to the new canvas.
        """
        x0, y0, x1, y1 = check_box(box, self.width, self.height)
        out = self.copy()
        out.background.pixels = self.background.stored[:, y0:y1, x0:x1].transpose(1, 2, 0)  # compact stays compact
        for layer in out.layers:
            layer.offset = (layer.offset[0] - x0, layer.offset[1] - y0)
        out.metadata = {**self.metadata, "crop_box": [x0, y0, x1, y1]}
        return out

    # --------------------------------------------------------------- conversion
    def to_numpy(self) -> np.ndarray:
        """All layers on the canvas, background first: ``float32`` ``[L + 1, H, W, 4]``."""
        return np.ascontiguousarray(self._stack_planes().transpose(0, 2, 3, 1))

    def to_tensor(self) -> torch.Tensor:
        """All layers on the canvas, background first: ``[L + 1, 4, H, W]`` in ``[0, 1]``."""
        return torch.from_numpy(self._stack_planes())

    def _stack_planes(self) -> np.ndarray:
        return np.stack([self._canvas_planes(layer) for layer in self.all_layers])

    @classmethod
    def from_numpy(
        cls,
        stack: np.ndarray,
        names: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LayeredImage:
        """Inverse of :meth:`to_numpy`: ``[L + 1, H, W, 3|4]``, background first."""
        if not isinstance(stack, np.ndarray) or stack.ndim != 4:
            raise LayerError(f"expected a [L + 1, H, W, 4] array, got {getattr(stack, 'shape', type(stack))}")
        return cls._from_list(list(stack), names, metadata)

    @classmethod
    def from_tensor(
        cls,
        stack: torch.Tensor,
        names: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LayeredImage:
        """Inverse of :meth:`to_tensor`: ``[L + 1, 3|4, H, W]`` in ``[0, 1]``, background first."""
        if not isinstance(stack, torch.Tensor) or stack.ndim != 4:
            raise LayerError(f"expected a [L + 1, 4, H, W] tensor, got {getattr(stack, 'shape', type(stack))}")
        return cls._from_list(list(stack), names, metadata)

    @classmethod
    def _from_list(
        cls, arrays: list[Any], names: Sequence[str] | None, metadata: dict[str, Any] | None
    ) -> LayeredImage:
        if not arrays:
            raise LayerError("a layered image needs at least a background")
        names = list(names) if names is not None else ["background"] + [f"layer_{i}" for i in range(1, len(arrays))]
        if len(names) != len(arrays):
            raise LayerError(f"got {len(names)} names for {len(arrays)} layers")
        layers = [Layer(a, name=n) for a, n in zip(arrays, names, strict=True)]
        return cls(layers[0], layers[1:], metadata)

    @classmethod
    def from_foreground(
        cls,
        background: np.ndarray | torch.Tensor,
        foreground: np.ndarray | torch.Tensor,
        alpha: np.ndarray | torch.Tensor | None = None,
        name: str = "foreground",
        metadata: dict[str, Any] | None = None,
    ) -> LayeredImage:
        """Build the two-layer image of a matting/GAN output: ``I = a F + (1 - a) B``.

        Args:
            background: ``[H, W, 3]`` array or ``[3, H, W]`` tensor in ``[0, 1]``.
            foreground: ``[H, W, 3|4]`` array or ``[3|4, H, W]`` tensor in ``[0, 1]``.
            alpha: ``[H, W]``/``[H, W, 1]`` array or ``[1, H, W]`` tensor; required when the
                foreground has 3 channels, and replaces its alpha otherwise.
        """
        fg = as_float_image(foreground, f"foreground {name!r}", channels=(3, 4))
        if alpha is not None:
            a = as_float_image(alpha, f"alpha of {name!r}", channels=(1,))
            if a.shape[:2] != fg.shape[:2]:
                raise LayerError(f"alpha of {name!r} is {a.shape[1]}x{a.shape[0]}, "
                                 f"foreground is {fg.shape[1]}x{fg.shape[0]}")
            fg = np.concatenate([fg[:, :, :3], a], axis=2)
        elif fg.shape[2] == 3:
            raise LayerError(f"foreground {name!r} has no alpha: pass alpha= or an RGBA foreground")
        bg = Layer(as_float_image(background, "background", channels=(3, 4)), name="background")
        if bg.pixels.shape[:2] != fg.shape[:2]:
            raise LayerError(f"background is {bg.width}x{bg.height} but foreground {name!r} is "
                             f"{fg.shape[1]}x{fg.shape[0]}")
        return cls(bg, [Layer(fg, name=name)], metadata)


#: Elements quantised at a time by :func:`to_uint8` / :func:`to_uint16`: float temporaries stay ~16 MB.
QUANTISE_CHUNK = 1 << 22


def _quantise(image: np.ndarray, scale: float, dtype: type) -> np.ndarray:
    """``floor(clip(x, 0, 1) * scale + 0.5)`` as ``dtype``, a block of rows at a time (bounded temporaries)."""
    image = np.asarray(image)
    if image.ndim == 0 or image.size <= QUANTISE_CHUNK:
        return np.floor(np.clip(image, 0.0, 1.0) * scale + 0.5).astype(dtype)
    out = np.empty(image.shape, dtype)
    rows = max(1, QUANTISE_CHUNK // max(1, image[0].size))
    for start in range(0, image.shape[0], rows):
        chunk = np.clip(image[start:start + rows], 0.0, 1.0).astype(np.float32, copy=False)
        chunk *= scale
        chunk += 0.5
        np.floor(chunk, out=chunk)
        out[start:start + rows] = chunk
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in ``[0, 1]`` -> ``uint8`` with round-half-up (``floor(x * 255 + 0.5)``)."""
    return _quantise(image, 255.0, np.uint8)


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Float image in ``[0, 1]`` -> ``uint16`` with round-half-up (``floor(x * 65535 + 0.5)``)."""
    return _quantise(image, 65535.0, np.uint16)
