"""Safe reading and atomic writing of single images (anything Pillow decodes; PNG out).

Reading refuses, with one-line :class:`~lamina.errors.InputFileError`, files that are
missing, not images, truncated or corrupt, and decompression bombs: images with more
than ``max_pixels`` pixels or over the memory budget (:mod:`lamina.io.budget`), both
checked from the header, before decoding, and images that trip Pillow's own limit
(``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels, which applies too).
Every mode is converted to RGB(A): CMYK, 16-bit and 32-bit greyscale (``I;16``, ``I``,
``F``), paletted (with transparency -> RGBA), greyscale ``L``/``LA`` and 1-bit; the
EXIF orientation is applied. No colour management: ICC profiles are ignored.

16-bit colour (PNG, TIFF) keeps its precision: Pillow holds only 8 bits per colour
channel, so those files are decoded by OpenCV instead, and :func:`read_image_depth`
reports the depth (16) so that writers can store 16 bits again (:func:`encode_png`
with ``bit_depth=16``).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputFileError, LaminaError
from ..layers import DEEP_GREY_MODES, as_float_image, pil_to_array, to_uint8, to_uint16
from .atomic import atomic_output
from .budget import Budget

#: Default refusal limit of :func:`read_image`: 40 megapixels (e.g. 8000 x 5000), 640 MB as float32 RGBA.
MAX_IMAGE_PIXELS = 40_000_000

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, KeyError, IndexError, TypeError,
                  zlib.error, MemoryError, RuntimeError, AttributeError, ZeroDivisionError, OverflowError)
#: EXIF orientation -> the NumPy operation on an ``[H, W, C]`` array (as :func:`PIL.ImageOps.exif_transpose`).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}

ImageLike = np.ndarray | torch.Tensor | Image.Image


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputFileError(f"{label}: {width}x{height} image has more than {max_pixels:,} pixels "
                             "(refused as a possible decompression bomb; raise max_pixels to read it)")
    if width <= 0 or height <= 0:
        raise InputFileError(f"{label}: image is empty ({width}x{height})")


def pil_to_float(image: Image.Image, alpha: bool | None = None, what: str = "image") -> np.ndarray:
    """PIL image of any mode -> ``float32`` ``[H, W, 3]`` or ``[H, W, 4]`` in ``[0, 1]``.

    Args:
        alpha: True for RGBA, False for RGB (alpha dropped), None for RGBA only when the
            image has transparency (an alpha band or a transparent palette/colour entry).
    """
    channels = (3, 4) if alpha is None else (4,) if alpha else (3,)
    return as_float_image(image, what, channels=channels)


def is_deep_colour(image: Image.Image) -> bool:
    """True for colour images stored with 16 bits per channel (Pillow would cut them to 8)."""
    if image.mode in DEEP_GREY_MODES or not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
    return isinstance(rawmode, str) and ";16" in rawmode


def _decode_16bit(source: Any, image: Image.Image, label: str, alpha: bool | None) -> np.ndarray:
    """Decode a 16-bit colour PNG/TIFF at full precision with OpenCV: ``uint16`` ``[H, W, 3|4]`` RGB(A)."""
    import cv2  # only for 16-bit colour files

    if isinstance(source, (str, os.PathLike)):
        data = np.fromfile(source, np.uint8)
    else:
        source.seek(0)
        data = np.frombuffer(source.read(), np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.shape[:2] != (image.height, image.width):
        raise InputFileError(f"{label}: cannot decode the 16-bit image (truncated or corrupt)")
    if array.dtype != np.uint16:
        array = array.astype(np.uint16) * 257 if array.dtype == np.uint8 else array
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 2:
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    else:
        array = array[:, :, [2, 1, 0, 3][:channels]]  # OpenCV keeps BGR(A)
    has_alpha = array.shape[2] == 4
    if alpha is False and has_alpha:
        array = array[:, :, :3]
    elif alpha and not has_alpha:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), 65535, np.uint16)], axis=2)
    orientation = image.getexif().get(0x0112)
    if orientation in _ORIENT:
        array = np.ascontiguousarray(_ORIENT[orientation](array))
    return array


def decode_image_depth(
    source: str | os.PathLike[str] | IO[bytes],
    label: str,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    alpha: bool | None = None,
    budget: Budget | None = None,
    memory_budget: int | None = None,
    raw: bool = False,
) -> tuple[np.ndarray, int]:
    """Safely decode a file (path or binary file object); returns the pixels and the bit depth (8 or 16).

    ``budget`` (one per layered file) counts this image before it is decoded; without one
    the image gets its own (the image plus its canvas, against ``memory_budget`` bytes,
    default :func:`~lamina.io.budget.memory_budget`). ``raw``: return the decoded array as
    it is (``uint8``, ``uint16`` or ``float32`` ``[H, W, C]``, for :class:`~lamina.layers.Layer`
    to convert straight into its planes without a float copy). See :func:`read_image`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF etc.: errors are raised, not printed
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_pixels(image.size, label, max_pixels)
                if budget is None:
                    budget = Budget(label, memory_budget)
                    budget.add(*image.size, what="canvas")
                budget.add(*image.size)
                budget.check()
                channels = (3, 4) if alpha is None else (4,) if alpha else (3,)
                if is_deep_colour(image):
                    array, depth = _decode_16bit(source, image, label, alpha), 16
                else:
                    image.load()
                    depth = 16 if image.mode in DEEP_GREY_MODES else 8
                    array = pil_to_array(ImageOps.exif_transpose(image), channels)
                return (array if raw else as_float_image(array, label, channels=channels)), depth
    except LaminaError:
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
        raise InputFileError(f"{label}: cannot decode image ({type(exc).__name__}: {_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 -- OpenCV and plugins raise their own kinds on corrupt data
        raise InputFileError(f"{label}: cannot decode image ({type(exc).__name__}: {_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def decode_image(
    source: str | os.PathLike[str] | IO[bytes],
    label: str,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    alpha: bool | None = None,
    budget: Budget | None = None,
) -> np.ndarray:
    """:func:`decode_image_depth` without the depth."""
    return decode_image_depth(source, label, max_pixels=max_pixels, alpha=alpha, budget=budget)[0]


def image_size(source: str | os.PathLike[str] | IO[bytes], label: str, max_pixels: int = MAX_IMAGE_PIXELS
               ) -> tuple[int, int]:
    """``(width, height)`` from the header only (no decoding); :class:`InputFileError` if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF etc.: errors are raised, not printed
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_pixels(image.size, label, max_pixels)
                return image.size
    except LaminaError:
        raise
    except FileNotFoundError:
        raise InputFileError(f"{label}: no such file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            *_DECODE_ERRORS) as exc:
        raise InputFileError(f"{label}: not a readable image ({type(exc).__name__}: {_one_line(exc)})") from None


def read_image_depth(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS,
                     alpha: bool | None = None) -> tuple[np.ndarray, int]:
    """:func:`read_image` plus the file's bit depth: 16 for 16-bit PNG/TIFF (colour or grey), else 8."""
    return decode_image_depth(path, str(path), max_pixels=max_pixels, alpha=alpha)


def read_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as ``float32`` in ``[0, 1]``: ``[H, W, 4]`` if it has transparency, else ``[H, W, 3]``.

    Raises :class:`~lamina.errors.InputFileError` naming the file for a missing, non-image,
    truncated or corrupt file, or one with more than ``max_pixels`` pixels or over the memory budget.
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
    pixels = _integers(image, np.uint8)
    if pixels is None:
        pixels = to_uint8(as_float_image(image, "image", channels=(1, 3, 4)))
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def _integers(image: Any, dtype: Any) -> np.ndarray | None:
    """``image`` itself (contiguous) when it is already a non-empty ``[H, W, 1|3|4]`` array of ``dtype``, else None.

    Those values are what the float round trip would give back (``k / max`` rounds to ``k``), without its
    ``float32`` copy (16 bytes a pixel): e.g. :meth:`lamina.Layer.quantised` of a large layer.
    """
    if isinstance(image, np.ndarray) and image.dtype == dtype and image.ndim == 3 and image.shape[2] in (1, 3, 4) \
            and image.size:
        return np.ascontiguousarray(image)
    return None


def encode_png(image: ImageLike, bit_depth: int = 8, **options: Any) -> bytes:
    """PNG file contents of an image (see :func:`to_pil` for what is accepted), 8 or 16 bits per channel."""
    if bit_depth == 16:
        import cv2  # Pillow cannot write 16-bit colour PNGs

        pixels = _integers(image, np.uint16)
        if pixels is None:
            pixels = to_uint16(as_float_image(image, "image", channels=(1, 3, 4)))
        if pixels.shape[2] >= 3:
            pixels = pixels[:, :, [2, 1, 0, 3][:pixels.shape[2]]]  # OpenCV writes BGR(A)
        ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels))
        if not ok:
            raise LaminaError("cannot encode a 16-bit PNG")
        return data.tobytes()
    if bit_depth != 8:
        raise LaminaError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def write_png(image: ImageLike, path: str | os.PathLike[str], *, overwrite: bool = False,
              bit_depth: int = 8) -> Path:
    """Write an image as PNG atomically (see :func:`to_pil` for accepted inputs); returns the path.

    Raises :class:`~lamina.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    data = encode_png(image, bit_depth)  # validate and encode before touching the file system
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)
