"""Photoshop ``.psd`` through psd-tools.

Written as an RGBA document of 8 or 16 bits per channel (``bit_depth``; alpha stays layer
transparency, not a mask): one pixel layer per :class:`~lamina.layers.Layer`, background
first, with name, offset, opacity (stored as 0..255, so it comes back to within 1/255),
visibility and blend mode (``'norm'``, ``'mul '``, ``'scrn'``), plus a transparent merged
preview. The image and per-layer metadata go into the document's XMP packet as a
``lamina:record`` JSON string (matched back to layers by name).

Reading takes every non-group layer back to front: pixel layers exactly (16-bit documents
at full precision), other kinds (text, shapes, smart objects) rendered by psd-tools. A
pixel mask multiplies the alpha (psd-tools keeps layer transparency there in RGB and CMYK
documents); normal, multiply and screen blend modes are kept, other modes read as normal
(the mode is kept in the layer's metadata as ``psd_blend_mode``); vector masks, clipping,
effects and group opacity are ignored; a layer inside a hidden group reads as hidden.
Every layer's size (and mask) is counted against the memory budget before any is decoded
(:mod:`lamina.io.budget`); a channel that fails to decompress is an error, not black pixels.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from psd_tools import PSDImage
from psd_tools.compression import PSDDecompressionWarning
from psd_tools.constants import BlendMode, Compression, Resource
from psd_tools.psd.image_resources import ImageResource

from ..errors import InputFileError, LaminaError
from ..layers import QUANTISE_CHUNK, Layer, LayeredImage, as_float_image, integer_scale, pil_to_array
from .atomic import atomic_output
from .budget import Budget
from .common import MAX_JSON_BYTES, assemble, dump_json, image_record, layer_metadata, load_json, stored_layer
from .images import MAX_IMAGE_PIXELS, pil_to_float

#: PSD blend key of each blend mode.
BLEND_KEYS = {"normal": BlendMode.NORMAL, "multiply": BlendMode.MULTIPLY, "screen": BlendMode.SCREEN}
_BLEND_MODES = {key: mode for mode, key in BLEND_KEYS.items()}

XMP_NAMESPACE = "urn:lamina:xmp:1.0/"
_XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:lamina="{namespace}">
   <lamina:record>{record}</lamina:record>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def save_psd(image: LayeredImage, path: Path, overwrite: bool = False, bit_depth: int | None = None) -> Path:
    """Write ``image`` as a layered RGBA PSD at ``path``, 16 bits per channel when ``bit_depth`` is 16."""
    depth = bit_depth or image.bit_depth
    psd = PSDImage.new("RGBA", image.size, depth=depth)
    psd.background_color = None  # merged preview over transparency, not black
    for layer in image.all_layers:
        added = _add_layer(psd, layer, depth)
        added.opacity = round(layer.opacity * 255)
        added.blend_mode = BLEND_KEYS[layer.blend_mode]
        added.visible = layer.visible
    record = dump_json(image_record(image, bit_depth=depth)).decode("utf-8")
    xmp = _XMP_TEMPLATE.format(namespace=XMP_NAMESPACE, record=escape(record)).encode("utf-8")
    psd.image_resources[Resource.XMP_METADATA] = ImageResource(key=Resource.XMP_METADATA, data=xmp)
    with atomic_output(path, overwrite) as tmp:
        _write(psd, tmp, image, depth)
    return path


def _add_layer(psd: PSDImage, layer: Layer, depth: int) -> Any:
    """Append ``layer`` as a pixel layer, its channels encoded from its integers one plane at a time.

    The same channels as ``psd.create_pixel_layer_from_array(layer.quantised(depth))``, without the
    ``float32`` copy of the whole layer (16 bytes a pixel) that psd-tools makes of an integer array;
    that public call is the fallback where this psd-tools lacks the internals used here.
    """
    left, top = layer.offset
    try:
        from psd_tools.api.layers import PixelLayer

        planes = (_plane_bytes(layer, c, depth) for c in range(3))  # one uncompressed plane at a time
        record, channels = PixelLayer._assemble(
            _plane_bytes(layer, 3, depth), planes, layer.name, left, top, layer.width, layer.height,
            Compression.RLE, psd._record.header.version, depth)
        added = PixelLayer(psd, record, channels)
        psd.append(added)
        return added
    except (AttributeError, TypeError, ImportError):
        return psd.create_pixel_layer_from_array(np.ascontiguousarray(layer.quantised(depth)), name=layer.name,
                                                 top=top, left=left)


def _plane_bytes(layer: Layer, channel: int, depth: int) -> bytes:
    """One channel of ``layer.quantised(depth)`` as the big-endian bytes PSD stores (converted in blocks of rows)."""
    stored = layer.stored[channel]
    order = ">u2" if depth == 16 else ">u1"
    if stored.dtype == (np.uint16 if depth == 16 else np.uint8):
        return np.ascontiguousarray(stored, order).tobytes()
    if stored.dtype == np.uint8:  # 8 -> 16 bits: level k is k * 257 (k / 255 = 257 k / 65535 exactly)
        out = np.empty(stored.shape, order)
        np.multiply(stored, 257, out=out, dtype=np.uint16, casting="unsafe")
        return out.tobytes()
    out = np.empty(stored.shape, order)
    rows = max(1, QUANTISE_CHUNK // max(1, layer.width))
    scale = 65535.0 if depth == 16 else 255.0
    unit = integer_scale(stored.dtype)
    for r0 in range(0, layer.height, rows):
        part = stored[r0:r0 + rows]
        values = part if unit is None else part * np.float32(1.0 / unit)  # the values layer.read gives
        out[r0:r0 + rows] = np.floor(np.clip(values, 0.0, 1.0) * scale + 0.5)  # as to_uint8 / to_uint16
    return out.tobytes()


def _write(psd: PSDImage, path: Path, image: LayeredImage, depth: int) -> None:
    """Write the document, with our composite of ``image`` as its merged image (:func:`write_merged`).

    The merged image is the last section of a PSD (a compression code, then the raw planes), so
    psd-tools writes everything before it and the planes go to the file a band at a time; its
    re-render of the preview is skipped. Without the psd-tools internals used here: psd-tools'
    own ``save`` (which renders the preview itself).
    """
    try:
        image_data = psd._record.image_data
        image_data.compression = Compression.RAW
        image_data.data = b""
    except AttributeError:
        psd.save(path)
        return
    with open(path, "wb") as file:
        psd._record.write(file)
        write_merged(file, image, depth)


#: Rows of the merged image encoded at a time (bounded float temporaries).
MERGED_BAND_ROWS = 256


def write_merged(file: BinaryIO, image: LayeredImage, depth: int) -> None:
    """Write the merged image's raw planes (R, G, B, A, ``depth`` bits, big-endian) at ``file``'s position.

    psd-tools' ``save()`` re-renders the preview with its own compositor, which costs several
    float64 canvases; ours is exact for our blend modes. The planes are R, G, B, A at the
    document's depth, colour matted over white where alpha > 0 (how Photoshop stores the
    merged image of a transparent document, and how psd-tools and Pillow undo it), composited and
    encoded a band of rows at a time (:meth:`~lamina.LayeredImage.iter_composite`) and written
    in place (each band's rows of each plane at their offset): no full-size canvas of any kind.
    """
    scale, dtype = (65535.0, ">u2") if depth == 16 else (255.0, ">u1")
    start, row_bytes = file.tell(), image.width * np.dtype(dtype).itemsize
    plane_bytes = row_bytes * image.height
    for r0, band in image.iter_composite(rows=MERGED_BAND_ROWS):
        alpha = band[:, :, 3]
        for c in range(4):
            plane = band[:, :, c]
            if c < 3:
                plane = np.where(alpha > 0, plane * alpha + (1.0 - alpha), plane)
            file.seek(start + c * plane_bytes + r0 * row_bytes)
            file.write(np.rint(np.clip(plane, 0.0, 1.0) * scale).astype(dtype).tobytes())
    file.seek(start + 4 * plane_bytes)


def _xmp_record(psd: PSDImage, label: str) -> dict[str, Any]:
    """The lamina record in the XMP packet, or ``{}`` when there is none."""
    xmp = psd.image_resources.get_data(Resource.XMP_METADATA)
    if not isinstance(xmp, bytes) or len(xmp) > 2 * MAX_JSON_BYTES:
        return {}
    try:
        node = ET.fromstring(xmp.strip(b"\x00 \r\n\t")).find(f".//{{{XMP_NAMESPACE}}}record")
    except (ET.ParseError, ValueError, SyntaxError):
        return {}  # another program's malformed XMP: ignore it, it is not ours
    return load_json((node.text or "").encode("utf-8"), f"{label} (XMP lamina:record)") if node is not None else {}


def _enabled_mask(psd_layer: Any) -> Any:
    """The layer's pixel mask, or ``None`` when it has none or it is disabled."""
    mask = psd_layer.mask if psd_layer.has_mask() else None
    return None if mask is None or mask.disabled else mask


def _apply_mask(psd_layer: Any, pixels: np.ndarray, left: int, top: int) -> None:
    """Multiply alpha by the layer's pixel mask (where RGB/CMYK documents keep layer transparency)."""
    mask = _enabled_mask(psd_layer)
    if mask is None:
        return
    canvas = Image.new("L", (pixels.shape[1], pixels.shape[0]), mask.background_color)
    image = mask.topil()
    if image is not None:
        canvas.paste(image.convert("L"), (mask.left - left, mask.top - top))
    pixels[:, :, 3] *= np.asarray(canvas, np.float32) / 255.0


def _blend_mode(psd_layer: Any) -> tuple[str, dict[str, Any]]:
    """Our blend mode of a PSD layer and extra metadata (the PSD mode when we read it as normal)."""
    key = psd_layer.blend_mode
    if key in _BLEND_MODES:
        return _BLEND_MODES[key], {}
    return "normal", {"psd_blend_mode": getattr(key, "name", str(key)).lower()}


def _layer(psd_layer: Any, metadata: dict[str, Any], label: str, depth: int) -> Layer | None:
    what = f"{label}: layer {str(psd_layer.name)[:80]!r}"
    try:
        if psd_layer.kind == "pixel":
            left, top = psd_layer.left, psd_layer.top
            if psd_layer.width * psd_layer.height == 0:
                return None  # an empty layer: nothing to keep
            if depth == 16:  # full precision: PIL would cut it to 8 bits
                array = psd_layer.numpy()
                if array.ndim == 2:
                    array = array[:, :, None]
                if array.shape[2] in (1, 2):  # greyscale documents
                    array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
                if array.shape[2] == 3:
                    array = np.concatenate([array, np.ones_like(array[:, :, :1])], axis=2)
                pixels = as_float_image(np.clip(array[:, :, :4], 0.0, 1.0), what, channels=(4,))
            else:
                pil = psd_layer.topil()
                if pil is None or pil.width * pil.height == 0:
                    return None
                pixels = pil_to_array(pil, (4,))  # uint8: a compact layer (4 bytes a pixel)
            if _enabled_mask(psd_layer) is not None:  # the mask multiplies alpha in float
                pixels = as_float_image(pixels, what, channels=(4,))
                _apply_mask(psd_layer, pixels, left, top)
        else:
            pil, (left, top) = psd_layer.composite(layer_filter=lambda _: True), psd_layer.bbox[:2]
            if pil is None or pil.width * pil.height == 0:
                return None  # an empty layer: nothing to keep
            if pil.width * pil.height > MAX_IMAGE_PIXELS:
                raise InputFileError(f"{what}: more than {MAX_IMAGE_PIXELS:,} pixels")
            pixels = pil_to_float(pil, alpha=True, what=what)
    except LaminaError:
        raise
    except Exception as exc:  # noqa: BLE001 -- psd-tools raises many kinds on malformed data
        raise InputFileError(f"{what}: cannot decode ({type(exc).__name__}: {_one_line(exc)})") from None
    blend_mode, extra = _blend_mode(psd_layer)
    layer_metadata_ = metadata.get(psd_layer.name)
    if extra:
        layer_metadata_ = {**(layer_metadata_ if isinstance(layer_metadata_, dict) else {}), **extra}
    entry = {"name": psd_layer.name, "offset": (left, top), "opacity": psd_layer.opacity / 255,
             "visible": psd_layer.is_visible(), "metadata": layer_metadata_, "blend_mode": blend_mode}
    return stored_layer(pixels, entry, label)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _count(psd: PSDImage, budget: Budget, label: str) -> list[Any]:
    """The non-group layers, each counted (with its mask) against ``budget`` before anything is decoded."""
    budget.add(psd.width, psd.height, what="canvas")
    layers = []
    for psd_layer in psd.descendants():
        if psd_layer.is_group():
            continue
        left, top, right, bottom = psd_layer.bbox if psd_layer.kind != "pixel" else (
            psd_layer.left, psd_layer.top, psd_layer.right, psd_layer.bottom)
        if right > left and bottom > top:
            budget.add(right - left, bottom - top, what=f"layer {str(psd_layer.name)[:80]!r}")
        mask = psd_layer.mask if psd_layer.has_mask() else None
        if mask is not None and mask.width > 0 and mask.height > 0:
            budget.add(mask.width, mask.height, what=f"mask of layer {str(psd_layer.name)[:80]!r}")
        layers.append(psd_layer)
    budget.check()  # the whole file, before decoding any layer
    return layers


def load_psd(path: Path, memory_budget: int | None = None) -> LayeredImage:
    """Read a PSD (ours or an editor's); a document without layers gives its merged image as background."""
    label = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # problems are raised as errors below, not printed
            psd = PSDImage.open(path)
    except FileNotFoundError:
        raise InputFileError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{label}: is a folder, not a PSD file") from None
    except Exception as exc:  # noqa: BLE001 -- psd-tools raises many kinds on malformed data
        raise InputFileError(f"{label}: not a readable PSD file ({type(exc).__name__}: {_one_line(exc)})") from None
    if psd.width * psd.height > MAX_IMAGE_PIXELS:
        raise InputFileError(f"{label}: {psd.width}x{psd.height} canvas has more than {MAX_IMAGE_PIXELS:,} pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", PSDDecompressionWarning)  # corrupt channel data: an error, not black
        try:
            record = _xmp_record(psd, label)
            metadata = layer_metadata(record)
            depth = 16 if psd.depth == 16 else 8
            layers = [layer for psd_layer in _count(psd, Budget(label, memory_budget), label)
                      if (layer := _layer(psd_layer, metadata, label, depth)) is not None]
            if not layers:
                layers = [Layer(pil_to_float(psd.composite(), alpha=True), name="background")]
        except LaminaError:
            raise
        except Exception as exc:  # noqa: BLE001 -- psd-tools raises many kinds on malformed data
            raise InputFileError(f"{label}: cannot decode ({type(exc).__name__}: {_one_line(exc)})") from None
    return assemble(layers, psd.size, record.get("metadata"), label, bit_depth=depth)
