"""Safe reading and atomic writing of single images (anything Pillow decodes; PNG out).

Reading refuses, with one-line :class:`~lamina.errors.InputFileError`, files that are
missing, not images, truncated or corrupt, and decompression bombs: images with more
than ``max_pixels`` pixels (checked from the header, before decoding) or that trip
Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels, which applies too).
Every mode is converted to RGB(A): CMYK, 16-bit and 32-bit greyscale (``I;16``, ``I``,
``F``), paletted (with transparency -> RGBA), greyscale ``L``/``LA`` and 1-bit; the
EXIF orientation is applied. No colour management: ICC profiles are ignored.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputFileError
from ..layers import as_float_image, to_uint8
from .atomic import atomic_output

#: Default refusal limit of :func:`read_image`: 40 megapixels (e.g. 8000 x 5000), 640 MB as float32 RGBA.
MAX_IMAGE_PIXELS = 40_000_000

#: Pillow modes holding more than 8 bits of grey; ``I`` is read as 16-bit (clipped to 0..65535).
_DEEP_GREY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, KeyError, IndexError, TypeError)

ImageLike = np.ndarray | torch.Tensor | Image.Image


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputFileError(f"{label}: {width}x{height} image has more than {max_pixels:,} pixels "
                             "(refused as a possible decompression bomb; raise max_pixels to read it)")


def pil_to_float(image: Image.Image, alpha: bool | None = None, what: str = "image") -> np.ndarray:
    """PIL image of any mode -> ``float32`` ``[H, W, 3]`` or ``[H, W, 4]`` in ``[0, 1]``.

    Args:
        alpha: True for RGBA, False for RGB (alpha dropped), None for RGBA only when the
            image has transparency (an alpha band or a transparent palette/colour entry).
    """
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    want_alpha = has_alpha if alpha is None else alpha
    if image.mode in _DEEP_GREY_MODES:
        grey = np.asarray(image)
        grey = np.clip(grey, 0.0, 1.0) if image.mode == "F" else np.clip(grey, 0, 65535).astype(np.uint16)
        grey = as_float_image(grey, what, channels=(1,))
        planes = [grey] * 3 + ([np.ones_like(grey)] if want_alpha else [])
        return np.concatenate(planes, axis=2)
    return as_float_image(np.asarray(image.convert("RGBA" if want_alpha else "RGB")), what, channels=(3, 4))


def decode_image(
    source: str | os.PathLike[str] | IO[bytes],
    label: str,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    alpha: bool | None = None,
) -> np.ndarray:
    """Safely decode a file (path or binary file object) named ``label`` in errors; see :func:`read_image`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_pixels(image.size, label, max_pixels)
                image.load()
                return pil_to_float(ImageOps.exif_transpose(image), alpha, label)
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputFileError(f"{label}: refused as a decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise InputFileError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{label}: is a folder, not an image file") from None
    except PermissionError:
        raise InputFileError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise InputFileError(f"{label}: not an image file (or a format Pillow cannot read)") from None
    except _DECODE_ERRORS as exc:
        raise InputFileError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None


def read_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as ``float32`` in ``[0, 1]``: ``[H, W, 4]`` if it has transparency, else ``[H, W, 3]``.

    Raises :class:`~lamina.errors.InputFileError` naming the file for a missing, non-image,
    truncated or corrupt file, or one with more than ``max_pixels`` pixels.
    """
    return decode_image(path, str(path), max_pixels=max_pixels)


def read_rgb(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """:func:`read_image` as ``float32`` ``[H, W, 3]`` (any alpha is dropped, not composited)."""
    return decode_image(path, str(path), max_pixels=max_pixels, alpha=False)


def read_rgba(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """:func:`read_image` as straight ``float32`` ``[H, W, 4]`` (opaque alpha when the file has none)."""
    return decode_image(path, str(path), max_pixels=max_pixels, alpha=True)


def to_pil(image: ImageLike) -> Image.Image:
    """Array ``[H, W]``/``[H, W, 1|3|4]`` (uint8, uint16 or float in ``[0, 1]``), tensor ``[C, H, W]`` or PIL image.

    Raises :class:`~lamina.errors.LayerError` for a bad shape, dtype, range or NaN.
    """
    if isinstance(image, Image.Image):
        return image
    pixels = to_uint8(as_float_image(image, "image", channels=(1, 3, 4)))
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def encode_png(image: ImageLike, **options: Any) -> bytes:
    """PNG file contents of an image (see :func:`to_pil` for what is accepted)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def write_png(image: ImageLike, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write an image as 8-bit PNG atomically (see :func:`to_pil` for accepted inputs); returns the path.

    Raises :class:`~lamina.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    pil = to_pil(image)  # validate before touching the file system
    with atomic_output(path, overwrite) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)
