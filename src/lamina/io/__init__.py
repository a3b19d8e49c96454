"""Reading and writing layered images and single images, always safely and atomically.

Layered formats, chosen by the path:

* ``.psd``: Photoshop, via psd-tools (:mod:`lamina.io.psd`);
* ``.ora``: OpenRaster, the open layered format of GIMP, Krita and MyPaint (:mod:`lamina.io.ora`);
* a path without suffix, or an existing folder: a PNG stack folder with one RGBA PNG per
  layer, ``layers.json`` and ``composite.png`` (:mod:`lamina.io.pngstack`).

Names, order, offsets, opacity, visibility and metadata survive every format (PSD
opacity to 1/255); pixels are stored as 8-bit, so they come back within 0.5/255.
Outputs are written to a temporary name and moved into place, and never overwrite an
existing path unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import InputFileError, LaminaError, LayerError
from ..layers import LayeredImage
from .atomic import atomic_output, check_writable
from .images import MAX_IMAGE_PIXELS, read_image, read_rgb, read_rgba, write_png
from .ora import load_ora, save_ora
from .plot import plot_log, read_log
from .pngstack import load_png_stack, save_png_stack
from .preview import checkerboard, contact_sheet, save_contact_sheet
from .psd import load_psd, save_psd

_SAVERS: dict[str, Callable[[LayeredImage, Path, bool], Path]] = {
    "psd": save_psd, "ora": save_ora, "png-stack": save_png_stack,
}
_LOADERS: dict[str, Callable[[Path], LayeredImage]] = {"psd": load_psd, "ora": load_ora, "png-stack": load_png_stack}


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


def save(image: LayeredImage, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a layered image as PSD, ORA or PNG stack (by ``path``, see :func:`layered_format`).

    Raises :class:`~lamina.errors.OutputExistsError` if ``path`` exists and not ``overwrite``,
    :class:`~lamina.errors.LayerError` for a malformed image. Returns ``path``.
    """
    if not isinstance(image, LayeredImage):
        raise LayerError(f"save expects a LayeredImage, got {type(image).__name__}")
    image.validate()
    fmt = layered_format(path)
    return _SAVERS[fmt](image, check_writable(path, overwrite), overwrite)


def load(path: str | os.PathLike[str]) -> LayeredImage:
    """Read a PSD, ORA or PNG stack; the bottom layer becomes the background.

    A bottom layer that is not canvas-sized at offset ``(0, 0)`` is placed on a transparent
    canvas-sized layer of the same name. Raises :class:`~lamina.errors.InputFileError`
    naming the file for anything unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or folder")
    return _LOADERS[layered_format(path)](path)


__all__ = [
    "MAX_IMAGE_PIXELS",
    "atomic_output",
    "checkerboard",
    "contact_sheet",
    "layered_format",
    "load",
    "plot_log",
    "read_image",
    "read_rgb",
    "read_log",
    "read_rgba",
    "save",
    "save_contact_sheet",
    "write_png",
]
