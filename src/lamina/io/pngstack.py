"""PNG stack folder: one RGBA PNG per layer, ``layers.json`` and ``composite.png``.

``layers.json`` (see :func:`~lamina.io.common.image_record`) lists the layers back to
front (background first) with name, file, offset, opacity, visibility and metadata, plus
the canvas size and the image metadata, so a PNG stack round-trips a
:class:`~lamina.layers.LayeredImage` exactly up to 8-bit quantisation of the pixels.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputFileError
from ..layers import LayeredImage
from .atomic import atomic_output
from .common import assemble, dump_json, image_record, layer_file_name, load_json, safe_member, stored_layer
from .images import encode_png, read_rgba

LAYERS_JSON = "layers.json"
COMPOSITE_PNG = "composite.png"


def save_png_stack(image: LayeredImage, path: Path, overwrite: bool = False) -> Path:
    """Write ``image`` as a PNG stack folder at ``path`` (built in a temporary folder, then renamed)."""
    files = [layer_file_name(i, layer.name) for i, layer in enumerate(image.all_layers)]
    record = {**image_record(image, files), "composite": COMPOSITE_PNG}
    with atomic_output(path, overwrite) as tmp:
        tmp.mkdir()
        for layer, file in zip(image.all_layers, files, strict=True):
            (tmp / file).write_bytes(encode_png(layer.pixels))
        (tmp / COMPOSITE_PNG).write_bytes(encode_png(image.composite_uint8()))
        (tmp / LAYERS_JSON).write_bytes(dump_json(record))
    return path


def load_png_stack(path: Path) -> LayeredImage:
    """Read a PNG stack folder written by :func:`save_png_stack` (``composite.png`` is not needed)."""
    json_path = path / LAYERS_JSON
    if not path.is_dir():
        raise InputFileError(f"{path}: not a folder (a PNG stack is a folder with {LAYERS_JSON})")
    if not json_path.is_file():
        raise InputFileError(f"{path}: not a lamina PNG stack (no {LAYERS_JSON})")
    label = str(json_path)
    record = load_json(json_path.read_bytes(), label)
    layers = []
    for entry in record["layers"]:
        if not isinstance(entry, dict):
            raise InputFileError(f"{label}: each layer entry must be an object, got {entry!r}")
        layers.append(stored_layer(read_rgba(safe_member(path, entry.get("file"), label)), entry, label))
    size = (record.get("width"), record.get("height"))
    if not all(isinstance(v, int) for v in size):
        raise InputFileError(f"{label}: 'width' and 'height' must be integers, got {size}")
    return assemble(layers, size, record.get("metadata"), str(path))
