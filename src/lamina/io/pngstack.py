"""PNG stack folder: one RGBA PNG per layer, ``layers.json`` and ``composite.png``.

``layers.json`` (see :func:`~lamina.io.common.image_record`) lists the layers back to
front (background first) with name, file, offset, opacity, visibility, blend mode and
metadata, plus the canvas size, the bit depth and the image metadata, so a PNG stack
round-trips a :class:`~lamina.layers.LayeredImage` exactly up to the quantisation of the
pixels to 8 (or 16) bits.

Reading checks every layer's size from its PNG header and the sum against the memory
budget (:mod:`lamina.io.budget`) before decoding any of them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputFileError
from ..layers import LayeredImage
from .atomic import atomic_output
from .budget import Budget
from .common import (
    MAX_JSON_BYTES,
    assemble,
    dump_json,
    image_record,
    layer_file_name,
    load_json,
    record_bit_depth,
    safe_member,
    stored_layer,
)
from .images import decode_image_depth, encode_png, image_size

LAYERS_JSON = "layers.json"
COMPOSITE_PNG = "composite.png"


def save_png_stack(image: LayeredImage, path: Path, overwrite: bool = False, bit_depth: int | None = None) -> Path:
    """Write ``image`` as a PNG stack folder at ``path`` (built in a temporary folder, then renamed).

    ``bit_depth`` 16 writes 16-bit PNGs (default: the image's :attr:`~lamina.LayeredImage.bit_depth`).
    """
    depth = bit_depth or image.bit_depth
    files = [layer_file_name(i, layer.name) for i, layer in enumerate(image.all_layers)]
    record = {**image_record(image, files, depth), "composite": COMPOSITE_PNG}
    with atomic_output(path, overwrite) as tmp:
        tmp.mkdir()
        for layer, file in zip(image.all_layers, files, strict=True):
            (tmp / file).write_bytes(encode_png(layer.quantised(depth), depth))
        composite = image.composite() if depth == 16 else image.composite_uint8()
        (tmp / COMPOSITE_PNG).write_bytes(encode_png(composite, depth))
        (tmp / LAYERS_JSON).write_bytes(dump_json(record))
    return path


def load_png_stack(path: Path, memory_budget: int | None = None) -> LayeredImage:
    """Read a PNG stack folder written by :func:`save_png_stack` (``composite.png`` is not needed)."""
    json_path = path / LAYERS_JSON
    if not path.is_dir():
        raise InputFileError(f"{path}: not a folder (a PNG stack is a folder with {LAYERS_JSON})")
    if not json_path.is_file():
        raise InputFileError(f"{path}: not a lamina PNG stack (no {LAYERS_JSON})")
    label = str(json_path)
    try:
        if (nbytes := json_path.stat().st_size) > MAX_JSON_BYTES:
            raise InputFileError(f"{label}: too large ({nbytes:,} bytes, at most {MAX_JSON_BYTES:,})")
        data = json_path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{label}: cannot read ({exc.strerror or exc})") from None
    record = load_json(data, label)
    size = (record.get("width"), record.get("height"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise InputFileError(f"{label}: 'width' and 'height' must be integers, got {size}")
    depth = record_bit_depth(record, label)
    budget = Budget(str(path), memory_budget)
    budget.add(*size, what="canvas")
    files = []
    for entry in record["layers"]:  # sizes from the headers, all counted before any decoding
        if not isinstance(entry, dict):
            raise InputFileError(f"{label}: each layer entry must be an object, got {str(entry)[:80]}")
        file = safe_member(path, entry.get("file"), label)
        budget.add(*image_size(file, str(file)), what=f"layer file {file.name}")
        files.append(file)
    budget.check()  # the whole file, before decoding any layer
    layers, depths = [], [8]
    for entry, file in zip(record["layers"], files, strict=True):
        pixels, file_depth = decode_image_depth(file, str(file), alpha=True, raw=True)
        layers.append(stored_layer(pixels, entry, label))
        depths.append(file_depth)
    return assemble(layers, size, record.get("metadata"), str(path), bit_depth=depth or max(depths))
