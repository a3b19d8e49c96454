"""Previews: a checkerboard for transparency and contact sheets of layered images.

A contact sheet has one row per layered image: every layer (background first) placed on
its canvas over a checkerboard, then the composite, each tile labelled with the layer
name (``(hidden)`` marks hidden layers), on a grey grid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import LaminaError, LayerError
from ..layers import Layer, LayeredImage, _placement, to_uint8
from .atomic import check_writable
from .images import write_png

#: Range of the default tile side of :func:`contact_sheet`, in pixels (small canvases are enlarged).
MIN_TILE, MAX_TILE = 128, 256
GAP = 4
LABEL_HEIGHT = 14
SEPARATOR_GREY = 128
CHECKER_GREYS = (0.85, 0.6)


def checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    """``float32`` ``[h, w, 3]`` in ``[0, 1]``: light and dark grey squares of ``cell`` pixels."""
    if h < 1 or w < 1 or cell < 1:
        raise LaminaError(f"checkerboard needs positive sizes, got h={h}, w={w}, cell={cell}")
    dark = (np.arange(h)[:, None] // cell + np.arange(w)[None, :] // cell) % 2 == 1
    grey = np.where(dark, CHECKER_GREYS[1], CHECKER_GREYS[0]).astype(np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _tile(rgba: np.ndarray, tile: int) -> np.ndarray:
    """Straight RGBA ``[H, W, 4]`` (float or uint8) fitted into a ``tile`` square over a checkerboard: ``uint8``."""
    height, width = rgba.shape[:2]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX  # Pillow premultiplies RGBA
    pixels = rgba if rgba.dtype == np.uint8 else to_uint8(rgba)
    pil = Image.fromarray(pixels, "RGBA")
    fitted = np.asarray(pil if pil.size == size else pil.resize(size, resample), np.float32) / 255.0
    alpha = fitted[:, :, 3:]
    shown = fitted[:, :, :3] * alpha + checkerboard(size[1], size[0]) * (1.0 - alpha)
    out = np.full((tile, tile, 3), SEPARATOR_GREY, np.uint8)
    top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = to_uint8(shown)
    return out


def _fit_label(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str,
               width: int) -> str:
    text = text.encode("latin-1", "replace").decode("latin-1")  # the bitmap default font is latin-1 only
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "~"
    return text


def _thumbnails(image: LayeredImage, limit: int) -> list[tuple[str, np.ndarray]]:
    """Each layer on its canvas, then the composite, fitted into ``limit`` (never enlarged): labelled ``uint8`` RGBA.

    A canvas whose longer side is at least ``8 * limit`` is first sampled every
    ``side // (4 * limit)`` pixels (:func:`sampled`, no copy), down to 4-8 times the thumbnail,
    which Pillow then averages; so a large image costs a few MB and touches a few percent of its
    pixels, and a smaller one is shown exactly as before.
    """
    scale = min(1.0, limit / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = sampled(image, max(1, max(image.size) // (4 * limit)))
    out = []
    for layer in image.all_layers:
        label = layer.name + ("" if layer.visible else " (hidden)")
        out.append((label, _fit(_canvas_uint8(image, layer), size)))
    out.append(("composite", _fit(image.composite_uint8(), size)))
    return out


def sampled(image: LayeredImage, step: int) -> LayeredImage:
    """The canvas pixels ``(step // 2 + step * i, step // 2 + step * j)`` of ``image``, as a layered image of views.

    Every layer becomes a strided view of its own pixels (no copy; compact layers stay compact)
    placed where its sampled pixels fall, so the result's layers, and its composite, are exactly
    those pixels of ``image``'s. ``step`` 1: ``image`` itself.
    """
    if step == 1:
        return image
    phase = step // 2

    def view(layer: Layer) -> Layer:
        left, top = layer.offset
        i0, j0 = -((phase - top) // step), -((phase - left) // step)  # first sample on or after the edge
        y, x = phase + step * i0 - top, phase + step * j0 - left
        planes = layer.stored[:, y::step, x::step]
        offset = (j0, i0)
        if planes.shape[1] == 0 or planes.shape[2] == 0:  # no sampled pixel: one clear pixel off the canvas
            planes, offset = np.zeros((4, 1, 1), np.float32), (-1, -1)
        return Layer.from_planes(planes, layer.name, offset=offset, opacity=layer.opacity, visible=layer.visible,
                                 blend_mode=layer.blend_mode)

    return LayeredImage(view(image.background), [view(layer) for layer in image.layers], bit_depth=image.bit_depth)


def _canvas_uint8(image: LayeredImage, layer: Layer) -> np.ndarray:
    """``to_uint8(image.canvas(layer))`` without the float32 canvas: only the layer's overlap is converted."""
    out = np.zeros((image.height, image.width, 4), np.uint8)
    place = _placement(layer, image.width, image.height)
    if place is not None:
        cy, cx, ly, lx = place
        region = layer.read(ly, lx)
        out[cy, cx, :3] = to_uint8(region[:3].transpose(1, 2, 0))
        out[cy, cx, 3] = to_uint8(region[3] * np.float32(layer.opacity))
    return out


def _fit(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pil = Image.fromarray(rgba, "RGBA")
    return np.asarray(pil if pil.size == size else pil.resize(size, Image.Resampling.BOX))  # Pillow premultiplies


def contact_sheet(images: LayeredImage | Iterable[LayeredImage], *, tile: int | None = None) -> np.ndarray:
    """Contact sheet of one or more layered images: ``uint8`` RGB ``[H, W, 3]``.

    Args:
        images: one layered image or an iterable of them (one row each). An iterator
            (e.g. a generator loading files) is consumed one image at a time: only small
            thumbnails are kept, so a sheet of many large files needs the memory of one.
        tile: side of the square tile each layer is fitted into; default the largest
            canvas side clamped to ``[MIN_TILE, MAX_TILE]`` (128..256).
    """
    if tile is not None and tile < 8:
        raise LaminaError(f"contact sheet tile must be at least 8 pixels, got {tile}")
    source = [images] if isinstance(images, LayeredImage) else images
    rows, largest = [], 0
    for image in source:
        if not isinstance(image, LayeredImage):
            raise LayerError("contact_sheet needs one or more LayeredImage objects")
        # fitted to the largest tile any sheet could use: exact for the final tile (see _tile)
        rows.append(_thumbnails(image, tile if tile is not None else MAX_TILE))
        largest = max(largest, *image.size)
    if not rows:
        raise LayerError("contact_sheet needs one or more LayeredImage objects")
    tile = tile if tile is not None else min(MAX_TILE, max(MIN_TILE, largest))
    columns = max(len(row) for row in rows)
    step_x, step_y = tile + GAP, tile + LABEL_HEIGHT + GAP
    sheet = np.full((GAP + len(rows) * step_y, GAP + columns * step_x, 3), SEPARATOR_GREY, np.uint8)
    labels = []
    for r, row in enumerate(rows):
        for c, (label, rgba) in enumerate(row):
            x, y = GAP + c * step_x, GAP + r * step_y
            sheet[y:y + tile, x:x + tile] = _tile(rgba, tile)
            sheet[y + tile:y + tile + LABEL_HEIGHT, x:x + tile] = 255
            labels.append((x + 2, y + tile + 1, label))
    pil = Image.fromarray(sheet)
    draw, font = ImageDraw.Draw(pil), ImageFont.load_default()
    for x, y, label in labels:
        draw.text((x, y), _fit_label(draw, font, label, tile - 4), fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()


def save_contact_sheet(
    images: LayeredImage | Iterable[LayeredImage],
    path: str | os.PathLike[str],
    *,
    tile: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`contact_sheet` of ``images`` as a PNG at ``path`` (atomically); returns the path."""
    check_writable(path, overwrite)
    return write_png(contact_sheet(images, tile=tile), path, overwrite=overwrite)
