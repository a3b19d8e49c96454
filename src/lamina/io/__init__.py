"""Reading and writing layered images and single images, always safely and atomically.

Layered formats, chosen by the path:

* ``.psd``: Photoshop, via psd-tools (:mod:`lamina.io.psd`);
* ``.ora``: OpenRaster, the open layered format of GIMP, Krita and MyPaint (:mod:`lamina.io.ora`);
* a path without suffix, or an existing folder: a PNG stack folder with one RGBA PNG per
  layer, ``layers.json`` and ``composite.png`` (:mod:`lamina.io.pngstack`).

:func:`save` also writes the flattened composite to a plain image (``.png``, ``.jpg``,
``.tif``, ``.webp``, ``.bmp``), and :func:`load` reads a plain image as a one-layer
image (its only layer the background).

Names, order, offsets, opacity, visibility, blend modes and metadata survive every
format (PSD opacity to 1/255); pixels are stored as 8-bit (within 0.5/255) or, for a
16-bit image (:attr:`~lamina.LayeredImage.bit_depth`) or ``bit_depth=16``, as 16-bit.
Outputs are written to a temporary name and moved into place, and never overwrite an
existing path unless ``overwrite=True``. Reading checks the whole decoded size against
the memory budget first (:mod:`lamina.io.budget`, ``LAMINA_MEMORY_BUDGET``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..errors import InputFileError, LaminaError, LayerError
from ..layers import BIT_DEPTHS, Layer, LayeredImage
from .atomic import atomic_output, check_writable
from .budget import BUDGET_ENV, DEFAULT_MEMORY_BUDGET, memory_budget
from .images import (
    MAX_IMAGE_PIXELS,
    encode_png,
    read_image,
    read_image_depth,
    read_photo,
    read_rgb,
    read_rgba,
    to_uint16,
    write_png,
)
from .ora import load_ora, save_ora
from .plot import plot_log, read_log
from .pngstack import load_png_stack, save_png_stack
from .preview import checkerboard, contact_sheet, save_contact_sheet
from .psd import load_psd, save_psd

_SAVERS: dict[str, Callable[..., Path]] = {"psd": save_psd, "ora": save_ora, "png-stack": save_png_stack}
_LOADERS: dict[str, Callable[..., LayeredImage]] = {"psd": load_psd, "ora": load_ora, "png-stack": load_png_stack}

#: Suffixes of plain (flattened) images: :func:`save` writes the composite, :func:`load` reads one layer.
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP", ".bmp": "BMP"}
#: JPEG quality of flattened ``.jpg`` outputs.
JPEG_QUALITY = 95


def layered_format(path: str | os.PathLike[str]) -> str:
    """``"psd"``, ``"ora"`` or ``"png-stack"`` for ``path``; :class:`LaminaError` for another suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".psd", ".ora"):
        return suffix[1:]
    if suffix == "" or path.is_dir():
        return "png-stack"
    raise LaminaError(f"{path}: unknown layered format {path.suffix!r} (use .psd, .ora, or a folder path "
                      "without suffix for a PNG stack)")


def file_format(path: str | os.PathLike[str]) -> str:
    """:func:`layered_format`, or ``"image"`` for a plain image suffix (``.png``, ``.jpg``, ...)."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir():
        return "image"
    try:
        return layered_format(path)
    except LaminaError:
        raise LaminaError(f"{path}: unknown format {path.suffix!r} (use .psd, .ora, a folder path without "
                          f"suffix for a PNG stack, or {', '.join(IMAGE_SUFFIXES)} for the flattened image)") from None


def save(
    image: LayeredImage, path: str | os.PathLike[str], *, overwrite: bool = False, bit_depth: int | None = None
) -> Path:
    """Write a layered image as PSD, ORA, PNG stack or a flattened image (by ``path``, see :func:`file_format`).

    ``bit_depth`` (8 or 16) defaults to ``image.bit_depth``; 16 gives a 16-bit PSD and
    16-bit PNGs (JPEG, WebP and BMP are 8-bit whatever it says). Raises
    :class:`~lamina.errors.OutputExistsError` if ``path`` exists and not ``overwrite``,
    :class:`~lamina.errors.LayerError` for a malformed image. Returns ``path``.
    """
    if not isinstance(image, LayeredImage):
        raise LayerError(f"save expects a LayeredImage, got {type(image).__name__}")
    if bit_depth is not None and (bit_depth not in BIT_DEPTHS or isinstance(bit_depth, bool)):
        raise LayerError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    image.validate()
    fmt = file_format(path)
    path = check_writable(path, overwrite)
    if fmt == "image":
        return _save_flat(image, path, overwrite, bit_depth or image.bit_depth)
    return _SAVERS[fmt](image, path, overwrite, bit_depth)


def _save_flat(image: LayeredImage, path: Path, overwrite: bool, bit_depth: int) -> Path:
    """The composite as one plain image; JPEG and BMP (no alpha) get it over white where it is not opaque."""
    kind = IMAGE_SUFFIXES[path.suffix.lower()]
    if kind == "PNG":
        data = encode_png(image.composite() if bit_depth == 16 else image.composite_uint8(), bit_depth)
        with atomic_output(path, overwrite) as tmp:
            tmp.write_bytes(data)
        return path
    if kind == "TIFF" and bit_depth == 16:
        import cv2  # Pillow cannot write 16-bit colour TIFF

        pixels = to_uint16(image.composite())[:, :, [2, 1, 0, 3]]
        with atomic_output(path, overwrite) as tmp:
            if not cv2.imwrite(str(tmp), pixels):
                raise LaminaError(f"{path}: cannot write a 16-bit TIFF")
        return path
    pil = image.to_pil()
    options: dict[str, object] = {}
    if kind in ("JPEG", "BMP"):
        white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, pil).convert("RGB")
        options = {"quality": JPEG_QUALITY} if kind == "JPEG" else {}
    with atomic_output(path, overwrite) as tmp:
        pil.save(tmp, format=kind, **options)
    return path


def load(path: str | os.PathLike[str], *, memory_budget: int | None = None) -> LayeredImage:
    """Read a PSD, ORA, PNG stack or plain image; the bottom layer becomes the background.

    A bottom layer that is not canvas-sized at offset ``(0, 0)`` is placed on a transparent
    canvas-sized layer of the same name. A plain image (``.png``, ``.jpg``, any file Pillow
    reads) is one background layer named ``"background"``; a 16-bit file gives
    ``bit_depth == 16``. The whole decoded size is checked against ``memory_budget``
    bytes (default: ``LAMINA_MEMORY_BUDGET`` or 2 GiB) before decoding. Raises
    :class:`~lamina.errors.InputFileError` naming the file for anything unreadable.
    """
    path = Path(path)
    memory_budget_ = memory_budget  # validated by the readers' Budget
    if not path.exists():
        raise InputFileError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".psd", ".ora", ""):
        return _LOADERS[layered_format(path)](path, memory_budget_)
    return _load_flat(path, memory_budget_)


def _load_flat(path: Path, memory_budget_: int | None) -> LayeredImage:
    from .images import decode_image_depth

    pixels, depth = decode_image_depth(path, str(path), memory_budget=memory_budget_, raw=True)
    return LayeredImage(Layer(pixels, name="background"), bit_depth=depth)


__all__ = [
    "BUDGET_ENV",
    "DEFAULT_MEMORY_BUDGET",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "file_format",
    "memory_budget",
    "read_image_depth",
    "atomic_output",
    "checkerboard",
    "contact_sheet",
    "layered_format",
    "load",
    "plot_log",
    "read_image",
    "read_photo",
    "read_rgb",
    "read_log",
    "read_rgba",
    "save",
    "save_contact_sheet",
    "write_png",
]
