"""OpenRaster (``.ora``), written to the spec with :mod:`zipfile`.

Members: ``mimetype`` first and stored (exactly ``image/openraster``), ``stack.xml``
(top layer first, ``src`` paths relative to the archive root), one PNG per layer under
``data/``, ``mergedimage.png`` (the composite), ``Thumbnails/thumbnail.png`` (at most
256x256) and ``lamina.json`` (the image and per-layer metadata, which ORA has no place
for). Reading takes names, order, offsets, opacity and visibility from ``stack.xml`` and
only the metadata from ``lamina.json``, matched by layer name. Nested stacks are
flattened (their own opacity, visibility and offset are ignored). The blend mode is the
layer's ``composite-op``: ``svg:src-over``, ``svg:multiply`` and ``svg:screen`` are read;
other ops are read as normal (the op is kept in the layer's metadata as ``ora_composite_op``).
With ``bit_depth=16`` the layer PNGs are 16-bit.

Reading is bounded (:mod:`lamina.io.budget`): every layer's size comes from its PNG
header and the sum is checked against the memory budget before any layer is decoded;
members are read with a cap derived from their declared size (zip bombs), and a corrupt
archive or deflate stream is one :class:`~lamina.errors.InputFileError`.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputFileError, LaminaError
from ..layers import LayeredImage
from .atomic import atomic_output
from .budget import Budget
from .common import (
    MAX_JSON_BYTES,
    assemble,
    dump_json,
    image_record,
    layer_file_name,
    layer_metadata,
    load_json,
    record_bit_depth,
    stored_layer,
)
from .images import decode_image_depth, encode_png, image_size

MIMETYPE = b"image/openraster"
THUMBNAIL_SIZE = 256
#: Largest archive member read (uncompressed), against zip bombs.
MAX_MEMBER_BYTES = 1 << 30
#: Largest ``stack.xml`` read.
MAX_XML_BYTES = 16 << 20
#: Bytes read from a layer member to find its image size (PNG keeps it in the first 33 bytes, JPEG
#: after its EXIF block of at most 64 KB).
HEADER_BYTES = 256 << 10
#: Slack allowed above the raw pixel size of a layer PNG (chunks, an ICC profile, text).
MEMBER_SLACK_BYTES = 8 << 20
#: ``composite-op`` of each blend mode (OpenRaster spec).
COMPOSITE_OPS = {"normal": "svg:src-over", "multiply": "svg:multiply", "screen": "svg:screen"}
_BLEND_MODES = {op: mode for mode, op in COMPOSITE_OPS.items()}


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
            "composite-op": COMPOSITE_OPS[layer.blend_mode],
        })
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def save_ora(image: LayeredImage, path: Path, overwrite: bool = False, bit_depth: int | None = None) -> Path:
    """Write ``image`` as an OpenRaster file at ``path`` (16-bit layer PNGs when ``bit_depth`` is 16)."""
    depth = bit_depth or image.bit_depth
    sources = [f"data/{layer_file_name(i, layer.name)}" for i, layer in enumerate(image.all_layers)]
    composite8 = image.composite_uint8()
    thumbnail = Image.fromarray(composite8)
    thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    merged = encode_png(image.composite() if depth == 16 else composite8, depth)
    del composite8
    with atomic_output(path, overwrite) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        _add(archive, "mimetype", MIMETYPE, zipfile.ZIP_STORED)
        _add(archive, "stack.xml", stack_xml(image, sources))
        for layer, src in zip(image.all_layers, sources, strict=True):  # PNG is compressed already: store it
            _add(archive, src, encode_png(layer.quantised(depth), depth), zipfile.ZIP_STORED)
        _add(archive, "mergedimage.png", merged, zipfile.ZIP_STORED)
        _add(archive, "Thumbnails/thumbnail.png", encode_png(thumbnail), zipfile.ZIP_STORED)
        _add(archive, "lamina.json", dump_json(image_record(image, sources, depth)))
    return path


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error,
               NotImplementedError, RuntimeError, KeyError, OverflowError, IndexError)


def _info(archive: zipfile.ZipFile, name: Any, label: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(name)
    except (KeyError, TypeError):
        raise InputFileError(f"{label}: archive member {str(name)[:120]!r} is missing") from None


def _member(archive: zipfile.ZipFile, name: Any, label: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """The bytes of member ``name``, refused when its declared or actual size passes ``limit``."""
    info = _info(archive, name, label)
    if info.file_size > limit:
        raise InputFileError(f"{label}: archive member {name!r} is too large ({info.file_size:,} bytes declared, "
                             f"at most {limit:,} expected)")
    try:
        with archive.open(info) as stream:
            data = stream.read(limit + 1)  # stream-read with a cap, whatever the header declares
    except _ZIP_ERRORS as exc:
        raise InputFileError(f"{label}: cannot read archive member {name!r} ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
    if len(data) > limit:
        raise InputFileError(f"{label}: archive member {name!r} is larger than {limit:,} bytes")
    return data


def _member_size(archive: zipfile.ZipFile, name: Any, label: str) -> tuple[int, int]:
    """``(width, height)`` of a layer image member from its first bytes (no decoding)."""
    info = _info(archive, name, label)
    try:
        with archive.open(info) as stream:
            head = stream.read(HEADER_BYTES)
    except _ZIP_ERRORS as exc:
        raise InputFileError(f"{label}: cannot read archive member {name!r} ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
    return image_size(io.BytesIO(head), f"{label}:{name}")


def _layer_limit(width: int, height: int) -> int:
    """Most bytes a PNG of ``width x height`` needs: 16-bit RGBA rows stored uncompressed, plus chunk slack."""
    raw = height * (1 + width * 8)
    return raw + raw // 100 + MEMBER_SLACK_BYTES


def _layers_top_first(stack: ET.Element | None) -> Iterator[ET.Element]:
    """Layer elements, top first, nested stacks flattened (iteratively: deep nesting is no recursion)."""
    pending = [iter(stack if stack is not None else ())]
    while pending:
        child = next(pending[-1], None)
        if child is None:
            pending.pop()
        elif child.tag == "layer":
            yield child
        elif child.tag == "stack":
            pending.append(iter(child))


def _number(element: ET.Element, key: str, default: str, kind: type, label: str) -> Any:
    value = element.get(key, default)
    try:
        number = kind(value)
    except (ValueError, OverflowError):
        number = None
    if number is None or (kind is float and not np.isfinite(number)):
        raise InputFileError(f"{label}: stack.xml attribute {key}={value[:40]!r} is not a valid {kind.__name__}")
    return number


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a folder, not an OpenRaster file") from None
    except _ZIP_ERRORS as exc:
        raise InputFileError(f"{path}: not an OpenRaster file (not a valid zip archive: {exc})") from None


def load_ora(path: Path, memory_budget: int | None = None) -> LayeredImage:
    """Read an OpenRaster file (ours or an editor's: GIMP, Krita, MyPaint)."""
    label = str(path)
    with _open(path) as archive:
        try:
            return _load(archive, label, memory_budget)
        except LaminaError:
            raise
        except _ZIP_ERRORS as exc:
            raise InputFileError(f"{label}: corrupt OpenRaster file ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:160]})") from None


def _load(archive: zipfile.ZipFile, label: str, memory_budget: int | None) -> LayeredImage:
    names = set(archive.namelist())
    if "mimetype" in names and _member(archive, "mimetype", label, 256).strip() != MIMETYPE:
        raise InputFileError(f"{label}: not an OpenRaster file (mimetype is not {MIMETYPE.decode()})")
    try:
        root = ET.fromstring(_member(archive, "stack.xml", label, MAX_XML_BYTES))
    except ET.ParseError as exc:
        raise InputFileError(f"{label}: stack.xml is not valid XML ({exc})") from None
    if root.tag != "image":
        raise InputFileError(f"{label}: stack.xml root is <{root.tag[:40]}>, expected <image>")
    size = (_number(root, "w", "", int, label), _number(root, "h", "", int, label))
    record = load_json(_member(archive, "lamina.json", label, MAX_JSON_BYTES), label) if "lamina.json" in names else {}
    metadata = layer_metadata(record)
    elements = list(reversed(list(_layers_top_first(root.find("stack")))))
    budget = Budget(label, memory_budget)
    budget.add(*size, what="canvas")
    sizes = []
    for element in elements:  # every layer's size from its header, counted before any decoding
        src = element.get("src")
        sizes.append(_member_size(archive, src, label))
        budget.add(*sizes[-1], what=f"layer {src}")
    budget.check()  # the whole file, before decoding any layer
    layers, depths = [], [8]
    for element, (width, height) in zip(elements, sizes, strict=True):
        src, name = element.get("src"), element.get("name") or "layer"
        data = _member(archive, src, label, _layer_limit(width, height))
        pixels, depth = decode_image_depth(io.BytesIO(data), f"{label}:{src}", alpha=True, raw=True)
        del data
        if pixels.shape[:2] != (height, width):
            raise InputFileError(f"{label}:{src}: image size changed while reading")
        op = element.get("composite-op", "svg:src-over")
        layer_metadata_ = metadata.get(name)
        if op not in _BLEND_MODES:
            layer_metadata_ = {**(layer_metadata_ if isinstance(layer_metadata_, dict) else {}),
                               "ora_composite_op": op[:80]}
        offset = (_number(element, "x", "0", int, label), _number(element, "y", "0", int, label))
        entry = {"name": name, "offset": offset, "opacity": _number(element, "opacity", "1", float, label),
                 "visible": element.get("visibility", "visible") != "hidden", "metadata": layer_metadata_,
                 "blend_mode": _BLEND_MODES.get(op, "normal")}
        layers.append(stored_layer(pixels, entry, label))
        depths.append(depth)
    depth = record_bit_depth(record, label) if record else None
    return assemble(layers, size, record.get("metadata"), label, bit_depth=depth or max(depths))
