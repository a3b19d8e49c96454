"""Pieces shared by the layered formats: layer file names, the lamina JSON record, and
turning the layers read from a file back into a :class:`~lamina.layers.LayeredImage`."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputFileError, LayerError
from ..layers import BIT_DEPTHS, Layer, LayeredImage, _placement
from .budget import check_size
from .images import MAX_IMAGE_PIXELS

#: Version of the JSON record written next to the layers (``layers.json``, ORA ``lamina.json``).
FORMAT_VERSION = 1
#: Largest JSON record read (``layers.json``, ``lamina.json``, a PSD's XMP record).
MAX_JSON_BYTES = 16 << 20


def layer_file_name(index: int, name: str) -> str:
    """Safe, unique PNG file name for layer ``index`` (background = 0): ``"01_my_layer.png"``.

    The layer name is reduced to ASCII letters, digits, ``.``, ``_`` and ``-`` (at most
    40 characters); the index prefix keeps names unique, also on case-insensitive disks.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._-")[:40] or "layer"
    return f"{index:02d}_{slug}.png"


def layer_record(layer: Layer, file: str | None = None) -> dict[str, Any]:
    """JSON description of one layer (everything but its pixels, which live in ``file`` if given)."""
    record = {"name": layer.name, "file": file, "offset": list(layer.offset), "opacity": layer.opacity,
              "visible": layer.visible, "blend_mode": layer.blend_mode, "metadata": layer.metadata}
    return record if file is not None else {k: v for k, v in record.items() if k != "file"}


def image_record(image: LayeredImage, files: Sequence[str] | None = None, bit_depth: int | None = None
                 ) -> dict[str, Any]:
    """JSON description of a layered image whose layers (background first) are stored in ``files``."""
    files = files if files is not None else [None] * len(image.all_layers)
    return {
        "format": "lamina-layers",
        "version": FORMAT_VERSION,
        "width": image.width,
        "height": image.height,
        "bit_depth": bit_depth or image.bit_depth,
        "metadata": image.metadata,
        "layers": [layer_record(layer, file) for layer, file in zip(image.all_layers, files, strict=True)],
    }


def layer_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """Per-layer metadata of a record by layer name (for formats whose own layer list is authoritative)."""
    layers = record.get("layers", [])
    entries = [e for e in (layers if isinstance(layers, list) else []) if isinstance(e, dict)]
    return {e["name"]: e.get("metadata") for e in entries if isinstance(e.get("name"), str)}


def dump_json(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def load_json(data: bytes, label: str) -> dict[str, Any]:
    """Parse a lamina JSON record; :class:`InputFileError` naming ``label`` when it is not one."""
    if len(data) > MAX_JSON_BYTES:
        raise InputFileError(f"{label}: JSON record too large ({len(data):,} bytes, at most {MAX_JSON_BYTES:,})")
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise InputFileError(f"{label}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InputFileError(f"{label}: JSON nested too deeply") from None
    if not isinstance(record, dict) or not isinstance(record.get("layers"), list):
        raise InputFileError(f"{label}: not a lamina layer record (no 'layers' list)")
    version = record.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputFileError(f"{label}: unsupported format version {version!r} (this lamina reads {FORMAT_VERSION})")
    if record.get("metadata") is not None and not isinstance(record["metadata"], dict):
        raise InputFileError(f"{label}: 'metadata' must be an object, got {type(record['metadata']).__name__}")
    return record


def record_bit_depth(record: dict[str, Any], label: str) -> int | None:
    """The ``bit_depth`` a record names (8 or 16), None if it names none."""
    depth = record.get("bit_depth")
    if depth is not None and (depth not in BIT_DEPTHS or isinstance(depth, bool)):
        raise InputFileError(f"{label}: 'bit_depth' must be 8 or 16, got {depth!r}")
    return depth


def _unique_names(layers: list[Layer]) -> None:
    """Rename repeated layer names (editors allow them, :class:`LayeredImage` does not): ``"x"``, ``"x (2)"``."""
    seen: set[str] = set()
    for layer in layers:
        name, n = layer.name, 1
        while name in seen:
            n += 1
            name = f"{layer.name} ({n})"
        layer.name = name
        seen.add(name)


def _as_background(layer: Layer, width: int, height: int) -> Layer:
    """The bottom layer padded/cropped onto a transparent canvas-size layer (name, opacity... kept)."""
    if layer.offset == (0, 0) and (layer.width, layer.height) == (width, height):
        return layer
    planes = np.zeros((4, height, width), np.float32)
    place = _placement(layer, width, height)
    if place is not None:
        cy, cx, ly, lx = place
        planes[:, cy, cx] = layer.planes[:, ly, lx]
    return Layer(planes.transpose(1, 2, 0), name=layer.name, opacity=layer.opacity, visible=layer.visible,
                 metadata=layer.metadata, blend_mode=layer.blend_mode)


def assemble(
    layers: list[Layer], size: tuple[int, int], metadata: Any, label: str, bit_depth: int = 8
) -> LayeredImage:
    """Build a :class:`LayeredImage` from layers read back to front on a ``(width, height)`` canvas.

    The bottom layer becomes the background (see :func:`_as_background`); repeated names get
    a suffix. Any problem becomes an :class:`InputFileError` naming ``label``.
    """
    width, height = size
    if not layers:
        raise InputFileError(f"{label}: the file holds no layers")
    check_size(width, height, f"{label}: canvas")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputFileError(f"{label}: bad canvas size {width}x{height} (at most {MAX_IMAGE_PIXELS:,} pixels)")
    try:
        _unique_names(layers)
        return LayeredImage(_as_background(layers[0], width, height), layers[1:], metadata, bit_depth=bit_depth)
    except LayerError as exc:
        raise InputFileError(f"{label}: {exc}") from None


def stored_layer(pixels: np.ndarray, entry: dict[str, Any], label: str) -> Layer:
    """A :class:`Layer` from its pixels and a :func:`layer_record`-like dict (missing keys get defaults)."""
    try:
        name = entry.get("name") or "layer"
        if not isinstance(name, str):
            raise LayerError(f"name must be a string, got {type(name).__name__}")
        offset = entry.get("offset", (0, 0))
        if not isinstance(offset, (list, tuple)) or len(offset) != 2:
            raise LayerError(f"offset must be [left, top], got {offset!r}")
        return Layer(pixels, name=name, offset=tuple(offset),
                     opacity=entry.get("opacity", 1.0), visible=entry.get("visible", True),
                     metadata=entry.get("metadata"), blend_mode=entry.get("blend_mode", "normal"))
    except (LayerError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InputFileError(f"{label}: bad layer entry {str(entry.get('name'))[:80]!r} ({exc})") from None


def safe_member(base: Path, name: Any, label: str) -> Path:
    """``base / name`` for a plain file name from a record; refuses paths that could leave ``base``."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise InputFileError(f"{label}: bad layer file name {name!r} (must be a plain file name)")
    return base / name
