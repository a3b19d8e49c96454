"""OpenRaster (``.ora``), written to the spec with :mod:`zipfile`.

Members: ``mimetype`` first and stored (exactly ``image/openraster``), ``stack.xml``
(top layer first, ``src`` paths relative to the archive root), one PNG per layer under
``data/``, ``mergedimage.png`` (the composite), ``Thumbnails/thumbnail.png`` (at most
256x256) and ``lamina.json`` (the image and per-layer metadata, which ORA has no place
for). Reading takes names, order, offsets, opacity and visibility from ``stack.xml`` and
only the metadata from ``lamina.json``, matched by layer name. Nested stacks are
flattened (their own opacity, visibility and offset are ignored); composite ops other
than normal "over" are ignored.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputFileError
from ..layers import LayeredImage
from .atomic import atomic_output
from .common import assemble, dump_json, image_record, layer_file_name, layer_metadata, load_json, stored_layer
from .images import decode_image, encode_png

MIMETYPE = b"image/openraster"
THUMBNAIL_SIZE = 256
#: Largest archive member read (uncompressed), against zip bombs.
MAX_MEMBER_BYTES = 1 << 30


def _add(archive: zipfile.ZipFile, name: str, data: bytes, compress: int = zipfile.ZIP_DEFLATED) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    archive.writestr(info, data, compress_type=compress)


def stack_xml(image: LayeredImage, sources: list[str]) -> bytes:
    """``stack.xml`` for ``image`` whose layers (background first) are stored at ``sources``."""
    root = ET.Element("image", {"version": "0.0.3", "w": str(image.width), "h": str(image.height)})
    stack = ET.SubElement(root, "stack")
    for layer, src in reversed(list(zip(image.all_layers, sources, strict=True))):  # ORA lists the top layer first
        ET.SubElement(stack, "layer", {
            "name": layer.name, "src": src, "x": str(layer.offset[0]), "y": str(layer.offset[1]),
            "opacity": repr(layer.opacity), "visibility": "visible" if layer.visible else "hidden",
            "composite-op": "svg:src-over",
        })
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def save_ora(image: LayeredImage, path: Path, overwrite: bool = False) -> Path:
    """Write ``image`` as an OpenRaster file at ``path``."""
    sources = [f"data/{layer_file_name(i, layer.name)}" for i, layer in enumerate(image.all_layers)]
    composite = Image.fromarray(image.composite_uint8())
    thumbnail = composite.copy()
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    with atomic_output(path, overwrite) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        _add(archive, "mimetype", MIMETYPE, zipfile.ZIP_STORED)
        _add(archive, "stack.xml", stack_xml(image, sources))
        for layer, src in zip(image.all_layers, sources, strict=True):  # PNG is compressed already: store it
            _add(archive, src, encode_png(layer.pixels), zipfile.ZIP_STORED)
        _add(archive, "mergedimage.png", encode_png(composite), zipfile.ZIP_STORED)
        _add(archive, "Thumbnails/thumbnail.png", encode_png(thumbnail), zipfile.ZIP_STORED)
        _add(archive, "lamina.json", dump_json(image_record(image, sources)))
    return path


def _member(archive: zipfile.ZipFile, name: Any, label: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except (KeyError, TypeError):
        raise InputFileError(f"{label}: archive member {name!r} is missing") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise InputFileError(f"{label}: archive member {name!r} is too large ({info.file_size:,} bytes)")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputFileError(f"{label}: cannot read archive member {name!r} ({exc})") from None


def _layers_top_first(stack: ET.Element | None) -> Iterator[ET.Element]:
    for child in stack if stack is not None else ():
        if child.tag == "layer":
            yield child
        elif child.tag == "stack":
            yield from _layers_top_first(child)


def _number(element: ET.Element, key: str, default: str, kind: type, label: str) -> Any:
    value = element.get(key, default)
    try:
        return kind(value)
    except ValueError:
        raise InputFileError(f"{label}: stack.xml attribute {key}={value!r} is not a valid {kind.__name__}") from None


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputFileError(f"{path}: not an OpenRaster file (not a valid zip archive: {exc})") from None


def load_ora(path: Path) -> LayeredImage:
    """Read an OpenRaster file (ours or an editor's: GIMP, Krita, MyPaint)."""
    label = str(path)
    with _open(path) as archive:
        names = set(archive.namelist())
        if "mimetype" in names and _member(archive, "mimetype", label).strip() != MIMETYPE:
            raise InputFileError(f"{label}: not an OpenRaster file (mimetype is not {MIMETYPE.decode()})")
        try:
            root = ET.fromstring(_member(archive, "stack.xml", label))
        except ET.ParseError as exc:
            raise InputFileError(f"{label}: stack.xml is not valid XML ({exc})") from None
        if root.tag != "image":
            raise InputFileError(f"{label}: stack.xml root is <{root.tag}>, expected <image>")
        size = (_number(root, "w", "", int, label), _number(root, "h", "", int, label))
        record = load_json(_member(archive, "lamina.json", label), label) if "lamina.json" in names else {}
        metadata = layer_metadata(record)
        layers = []
        for element in reversed(list(_layers_top_first(root.find("stack")))):
            src, name = element.get("src"), element.get("name") or "layer"
            pixels = decode_image(io.BytesIO(_member(archive, src, label)), f"{label}:{src}", alpha=True)
            offset = (_number(element, "x", "0", int, label), _number(element, "y", "0", int, label))
            entry = {"name": name, "offset": offset, "opacity": _number(element, "opacity", "1", float, label),
                     "visible": element.get("visibility", "visible") != "hidden", "metadata": metadata.get(name)}
            layers.append(stored_layer(pixels, entry, label))
    return assemble(layers, size, record.get("metadata"), label)
