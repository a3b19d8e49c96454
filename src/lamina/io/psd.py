"""Photoshop ``.psd`` through psd-tools.

Written as an 8-bit RGBA document (alpha stays layer transparency, not a mask): one pixel
layer per :class:`~lamina.layers.Layer`, background first, with name, offset, opacity
(stored as 0..255, so it comes back to within 1/255) and visibility, plus a transparent
merged preview. The image and per-layer metadata go into the document's XMP packet as a
``lamina:record`` JSON string (matched back to layers by name).

Reading takes every non-group layer back to front: pixel layers exactly, other kinds
(text, shapes, smart objects) rendered by psd-tools. A pixel mask multiplies the alpha
(psd-tools keeps layer transparency there in RGB and CMYK documents); vector masks, clipping,
blend modes, effects and group opacity are ignored; a layer inside a hidden group reads as hidden.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from psd_tools import PSDImage
from psd_tools.constants import Resource
from psd_tools.psd.image_resources import ImageResource

from ..errors import InputFileError
from ..layers import Layer, LayeredImage, to_uint8
from .atomic import atomic_output
from .common import assemble, dump_json, image_record, layer_metadata, load_json, stored_layer
from .images import MAX_IMAGE_PIXELS, pil_to_float

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


def save_psd(image: LayeredImage, path: Path, overwrite: bool = False) -> Path:
    """Write ``image`` as a layered RGBA PSD at ``path``."""
    psd = PSDImage.new("RGBA", image.size)
    psd.background_color = None  # merged preview over transparency, not black
    for layer in image.all_layers:
        left, top = layer.offset
        added = psd.create_pixel_layer(Image.fromarray(to_uint8(layer.pixels), "RGBA"), name=layer.name,
                                       top=top, left=left, opacity=round(layer.opacity * 255))
        added.visible = layer.visible
    record = dump_json(image_record(image)).decode("utf-8")
    xmp = _XMP_TEMPLATE.format(namespace=XMP_NAMESPACE, record=escape(record)).encode("utf-8")
    psd.image_resources[Resource.XMP_METADATA] = ImageResource(key=Resource.XMP_METADATA, data=xmp)
    with atomic_output(path, overwrite) as tmp:
        psd.save(tmp)
    return path


def _xmp_record(psd: PSDImage, label: str) -> dict[str, Any]:
    """The lamina record in the XMP packet, or ``{}`` when there is none."""
    xmp = psd.image_resources.get_data(Resource.XMP_METADATA)
    if not isinstance(xmp, bytes):
        return {}
    try:
        node = ET.fromstring(xmp.strip(b"\x00 \r\n\t")).find(f".//{{{XMP_NAMESPACE}}}record")
    except ET.ParseError:
        return {}  # another program's malformed XMP: ignore it, it is not ours
    return load_json((node.text or "").encode("utf-8"), f"{label} (XMP lamina:record)") if node is not None else {}


def _apply_mask(psd_layer: Any, pixels: np.ndarray, left: int, top: int) -> None:
    """Multiply alpha by the layer's pixel mask (where RGB/CMYK documents keep layer transparency)."""
    mask = psd_layer.mask if psd_layer.has_mask() else None
    if mask is None or mask.disabled:
        return
    canvas = Image.new("L", (pixels.shape[1], pixels.shape[0]), mask.background_color)
    image = mask.topil()
    if image is not None:
        canvas.paste(image.convert("L"), (mask.left - left, mask.top - top))
    pixels[:, :, 3] *= np.asarray(canvas, np.float32) / 255.0


def _layer(psd_layer: Any, metadata: dict[str, Any], label: str) -> Layer | None:
    what = f"{label}: layer {psd_layer.name!r}"
    try:
        if psd_layer.kind == "pixel":
            pil, left, top = psd_layer.topil(), psd_layer.left, psd_layer.top
        else:
            pil, (left, top) = psd_layer.composite(layer_filter=lambda _: True), psd_layer.bbox[:2]
        if pil is None or pil.width * pil.height == 0:
            return None  # an empty layer: nothing to keep
        if pil.width * pil.height > MAX_IMAGE_PIXELS:
            raise InputFileError(f"{what}: more than {MAX_IMAGE_PIXELS:,} pixels")
        pixels = pil_to_float(pil, alpha=True, what=what)
        if psd_layer.kind == "pixel":
            _apply_mask(psd_layer, pixels, left, top)
    except InputFileError:
        raise
    except Exception as exc:  # psd-tools raises many kinds on malformed data
        raise InputFileError(f"{what}: cannot decode ({type(exc).__name__}: {exc})") from None
    entry = {"name": psd_layer.name, "offset": (left, top), "opacity": psd_layer.opacity / 255,
             "visible": psd_layer.is_visible(), "metadata": metadata.get(psd_layer.name)}
    return stored_layer(pixels, entry, label)


def load_psd(path: Path) -> LayeredImage:
    """Read a PSD (ours or an editor's); a document without layers gives its merged image as background."""
    label = str(path)
    try:
        psd = PSDImage.open(path)
    except FileNotFoundError:
        raise InputFileError(f"{label}: no such file") from None
    except Exception as exc:  # psd-tools raises many kinds on malformed data
        raise InputFileError(f"{label}: not a readable PSD file ({type(exc).__name__}: {exc})") from None
    if psd.width * psd.height > MAX_IMAGE_PIXELS:
        raise InputFileError(f"{label}: {psd.width}x{psd.height} canvas has more than {MAX_IMAGE_PIXELS:,} pixels")
    record = _xmp_record(psd, label)
    metadata = layer_metadata(record)
    layers = [layer for psd_layer in psd.descendants() if not psd_layer.is_group()
              if (layer := _layer(psd_layer, metadata, label)) is not None]
    if not layers:
        try:
            layers = [Layer(pil_to_float(psd.composite(), alpha=True), name="background")]
        except Exception as exc:
            raise InputFileError(f"{label}: cannot render the merged image ({type(exc).__name__}: {exc})") from None
    return assemble(layers, psd.size, record.get("metadata"), label)
