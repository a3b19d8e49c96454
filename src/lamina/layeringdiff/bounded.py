"""Bounded memory for large photos: each object is decomposed in a window, at a bounded resolution.

:func:`~lamina.layeringdiff.decompose.decompose_image` on a photo whose longer side is at most
:attr:`BoundedConfig.max_side` runs the foreground stage and the decomposer on the whole photo
(the exact path). A larger photo goes through :func:`peel_bounded` instead, so that memory and
time no longer grow like the photo (about 340 bytes per pixel before: 4 GB for 12 Mpx):

* the photo stays in its 8-bit (or 16-bit) form, and so does the background layer: a compact
  :class:`~lamina.Layer` (``uint8`` RGBA planes, 4 bytes per pixel; ``uint16`` for 16-bit
  photos) that starts as the photo and is edited in place. Its values under an object are
  rounded to those integers, and the object's layer is solved again on the soft pixels
  (``0 < t < 1``) from the rounded background, ``F = (I - (1 - t) B) / t``, so the layers
  still recompose the photo exactly (:func:`quantise_background`);
* the foreground layer holds only its box (a :class:`~lamina.Layer` with an offset), stored as
  ``uint16`` (8 bytes per pixel): its alpha is rounded to 1/65535 before ``F`` is solved, and
  ``F``'s own rounding changes the composite by at most ``t / 131070`` (recomposition PSNR above
  100 dB, the cap);
* each object gets a **window**: its box (a mask's or saliency's box; for a prompt, the whole
  photo) grown to a square of :attr:`BoundedConfig.window` times its longer side, centred and
  shifted inside the photo, which holds the effects region (half an object height below) and
  the FBDD window; the window is cut out of the current background and downscaled to at most
  ``max_side`` (area averaging);
* the usual chain runs on that crop: the foreground stage (GrabCut / matting, SAM with a
  grounder), the decomposer (FBDD or classical) -- the same code as the exact path;
* back at full resolution, only over the box where the layer's alpha is non-zero and in bands
  of :attr:`BoundedConfig.band_rows` rows: the layer's alpha, colour and the background are
  upsampled (bilinear) and projected onto ``t F + (1 - t) B = I`` with the full-resolution
  photo (:func:`~lamina.layeringdiff.disassembly.project_recomposition`), so every pixel the
  object does not hide keeps the photo's own detail and the layers recompose it exactly; under
  an opaque object the completed background has the window's working resolution;
* a float photo (a 16-bit file read as ``float32``) keeps ``float32`` layers, as before.

Peak memory is then about the photo in ``uint8`` (3 bytes per pixel), the background layer
(4), the foreground layers' boxes (8 each), one plane of the window in ``float32`` while it is
downscaled (4) and a working set bounded by ``max_side`` and ``band_rows``, on top of what the
libraries take when imported (about 0.4 GB for torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import LaminaError
from ..io.images import read_photo
from ..layers import Layer, LayeredImage, check_box, integer_scale
from ._util import import_cv2
from .disassembly import Decomposer, Decomposition, project_recomposition

__all__ = ["BoundedConfig", "is_large", "peel_bounded", "read_photo", "recomposition_psnr"]


@dataclass(frozen=True)
class BoundedConfig:
    """How :func:`~lamina.layeringdiff.decompose.decompose_image` bounds memory on large photos.

    Attributes:
        max_side: photos whose longer side is at most this are decomposed whole at full
            resolution; above it each object's window is processed downscaled to this side.
        window: side of an object's window / the longer side of its box.
        band_rows: rows per band when the results go back to full resolution.
    """

    max_side: int = 1024
    window: float = 2.0
    band_rows: int = 256

    def __post_init__(self) -> None:
        if self.max_side < 64 or self.band_rows < 1:
            raise LaminaError(f"BoundedConfig: max_side >= 64 and band_rows >= 1, got {self.max_side}, "
                              f"{self.band_rows}")
        if self.window < 1.0:
            raise LaminaError(f"BoundedConfig.window must be >= 1 (the object's box), got {self.window}")


def is_large(height: int, width: int, config: BoundedConfig | None) -> bool:
    """Whether a ``width x height`` photo takes the bounded path (never when ``config`` is ``None``)."""
    return config is not None and max(height, width) > config.max_side


# ------------------------------------------------------------------------ inputs
# read_photo (a photo as uint8 / uint16, no float32 copy) lives in lamina.io.images: BFS reads its backgrounds so too.


# ------------------------------------------------------------------------ geometry
def object_window(box: Sequence[int], height: int, width: int, factor: float) -> tuple[slice, slice]:
    """Rows and columns of the square of ``factor`` times the box's longer side, centred on it, inside the image."""
    x0, y0, x1, y1 = (int(v) for v in box)
    side = math.ceil(max(x1 - x0, y1 - y0) * factor)

    def span(lo: int, hi: int, limit: int) -> slice:
        length = min(max(side, hi - lo), limit)
        start = min(max((lo + hi - length) // 2, 0), limit - length)
        return slice(start, start + length)

    return span(y0, y1, height), span(x0, x1, width)


def _work_size(rows: slice, cols: slice, max_side: int) -> tuple[int, int]:
    h, w = rows.stop - rows.start, cols.stop - cols.start
    scale = min(1.0, max_side / max(h, w))
    return (h, w) if scale == 1.0 else (max(8, round(h * scale)), max(8, round(w * scale)))


def as_unit(planes: np.ndarray) -> np.ndarray:
    """``float32`` values in ``[0, 1]`` of planes stored as ``float32``, ``uint8`` or ``uint16`` (a new array).

    Integers give ``k * float32(1 / max)``, the values a compact :class:`~lamina.Layer` reads as.
    """
    scale = integer_scale(planes.dtype)
    if scale is None:
        return np.array(planes, np.float32)
    out = np.empty(planes.shape, np.float32)
    np.multiply(planes, np.float32(1.0 / scale), out=out)
    return out


def _downscale(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[C, h, w]`` planes (any strides, float32 or integers) -> ``float32`` ``[H', W', C]`` at ``size`` (area)."""
    if tuple(planes.shape[1:]) == tuple(size):
        return np.ascontiguousarray(as_unit(planes).transpose(1, 2, 0))
    cv2 = import_cv2()
    return np.stack([cv2.resize(as_unit(p), (size[1], size[0]), interpolation=cv2.INTER_AREA) for p in planes],
                    axis=2)


def _source_coords(full: int, low: int, start: int, stop: int) -> np.ndarray:
    """Where full-resolution pixels ``start..stop`` sample ``low`` pixels (half-pixel centres), ``float32``."""
    return ((np.arange(start, stop, dtype=np.float64) + 0.5) * (low / full) - 0.5).astype(np.float32)


def _upsample(low: np.ndarray, full: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
              out: np.ndarray) -> np.ndarray:
    """Rows ``rows`` and columns ``cols`` of planes ``low`` ``[C, h, w]`` bilinearly resized to ``full``, into ``out``.

    ``out`` is ``float32`` ``[C, r, c]``; the values are those of resizing all of ``low`` (half-pixel
    centres, edge pixels repeated), computed for the band alone.
    """
    cv2 = import_cv2()
    ys = _source_coords(full[0], low.shape[1], *rows)
    xs = _source_coords(full[1], low.shape[2], *cols)
    map_x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (ys.size, xs.size)))
    map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (ys.size, xs.size)))
    for plane, target in zip(low, out, strict=True):
        cv2.remap(plane, map_x, map_y, cv2.INTER_LINEAR, dst=target, borderMode=cv2.BORDER_REPLICATE)
    return out


def project_band(image: np.ndarray, total: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> None:
    """:func:`~lamina.layeringdiff.disassembly.project_recomposition` of planar ``[3, r, c]`` layers, in place.

    Where the layer is opaque (``total >= 1``) the result is ``F = I`` with ``B`` as estimated, where
    it is clear (``total <= 0``) ``B = I`` with ``F`` as estimated (what the projection gives there);
    only the pixels in between go through the general projection.
    """
    opaque, clear = total >= 1.0, total <= 0.0
    np.copyto(foreground, image, where=opaque[None])
    np.copyto(background, image, where=clear[None])
    soft = ~(opaque | clear)
    if not soft.any():
        return
    f, b = project_recomposition(torch.from_numpy(image[:, soft]), torch.from_numpy(total[soft][None]),
                                 torch.from_numpy(foreground[:, soft]), torch.from_numpy(background[:, soft]))
    foreground[:, soft], background[:, soft] = f.numpy(), b.numpy()


#: How an object's layer is stored over an integer canvas: 16 bits, so that rounding its solved colour
#: keeps the composite within ``1 / 131070`` of the photo (``uint8`` would not: up to ``1 / 510``).
LAYER_DTYPE = np.uint16
_LAYER_LEVELS = float(np.iinfo(LAYER_DTYPE).max)


def _round_alpha(alpha: np.ndarray) -> None:
    """Round ``alpha`` in place to the levels of :data:`LAYER_DTYPE` (the values the stored layer reads back)."""
    alpha[...] = _levels(alpha) * np.float32(1.0 / _LAYER_LEVELS)


def _levels(values: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> :data:`LAYER_DTYPE` levels, rounded half-up (the cast truncates: a floor, as all >= 0)."""
    scaled = np.clip(values, 0.0, 1.0)
    scaled *= np.float32(_LAYER_LEVELS)
    scaled += np.float32(0.5)
    return scaled.astype(LAYER_DTYPE)


#: How far (in ``[0, 1]`` units) a re-solved foreground colour may leave ``[0, 1]`` and be clipped
#: (:func:`quantise_background`): the recomposition error this adds is at most this, times alpha.
RESOLVE_TOLERANCE = 1e-6


def quantise_background(image: np.ndarray, total: np.ndarray, foreground: np.ndarray, background: np.ndarray,
                        scale: float) -> np.ndarray:
    """The background ``[3, r, c]`` rounded to integers of ``scale`` (255 or 65535), ``foreground`` solved again.

    ``image`` holds integer levels too (``k / scale``). Where the layer is clear (``t <= 0``) the
    background is the image (exact); where it is opaque (``t >= 1``) any background recomposes it;
    on the soft pixels the foreground becomes ``F = (I - (1 - t) B_q) / t`` with the rounded ``B_q``,
    so ``t F + (1 - t) B_q = I`` still holds, and where that ``F`` would leave ``[0, 1]`` (a nearly
    clear pixel), ``F = B_q = I``. ``foreground`` is edited in place; returns the levels as ``float32``.
    """
    levels = np.clip(background, 0.0, 1.0)
    levels *= np.float32(scale)
    levels += np.float32(0.5)
    np.trunc(levels, out=levels)  # a floor: every value is >= 0.5
    soft = (total > 0.0) & (total < 1.0)
    if not soft.any():
        return levels
    t = total[soft]
    rounded = levels[:, soft] * np.float32(1.0 / scale)
    shown = image[:, soft]
    solved = (shown - (1.0 - t) * rounded) / t
    bad = ((solved < -RESOLVE_TOLERANCE) | (solved > 1.0 + RESOLVE_TOLERANCE)).any(axis=0)
    np.clip(solved, 0.0, 1.0, out=solved)
    if bad.any():  # F = B = I: exact for any t
        solved[:, bad] = shown[:, bad]
        kept = levels[:, soft]
        kept[:, bad] = np.floor(shown[:, bad] * np.float32(scale) + np.float32(0.5))
        levels[:, soft] = kept
    foreground[:, soft] = solved
    return levels


def _support(mask: np.ndarray, full: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Full-resolution box ``(y0, y1, x0, x1)`` holding every pixel that bilinear upsampling of ``mask`` reaches."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    (h, w), (hf, wf) = mask.shape, full

    def reach(lo: int, hi: int, low: int, n: int) -> tuple[int, int]:
        k = n / low
        return max(0, math.floor((lo - 1.0 + 0.5) * k - 0.5)), min(n, math.ceil((hi + 1.0 + 0.5) * k - 0.5) + 1)

    y0, y1 = reach(int(ys.min()), int(ys.max()), h, hf)
    x0, x1 = reach(int(xs.min()), int(xs.max()), w, wf)
    return y0, y1, x0, x1


def run_bands(work: Callable[[int, int], None], start: int, stop: int, rows: int) -> None:
    """``work(b0, b1)`` for the bands of rows ``start..stop``, on as many threads as torch uses.

    NumPy, OpenCV and torch release the GIL in their loops. Each band writes only its own rows.
    With ``k`` threads the bands are ``rows / k`` rows and ``k`` are in flight, so the working set
    stays that of one band of ``rows``.
    """
    threads = max(1, min(torch.get_num_threads(), math.ceil((stop - start) / rows)))
    step = max(1, rows // threads)
    bands = [(b0, min(b0 + step, stop)) for b0 in range(start, stop, step)]
    if threads == 1:
        for band in bands:
            work(*band)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: list[Any] = []
        for band in bands:
            if len(pending) >= threads:
                pending.pop(0).result()
            pending.append(pool.submit(work, *band))
        for future in pending:
            future.result()


def release_memory() -> None:
    """Hand memory freed by the C heap back to the system (glibc ``malloc_trim``; nothing elsewhere).

    The matting and the decomposer free hundreds of MB of arrays at the working size; glibc keeps
    much of it in its heap, where it would add to the peak of what follows (full-resolution layers,
    the writers).
    """
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to do
            pass


# ------------------------------------------------------------------------ the peel
@dataclass
class WindowPart:
    """One peeled object at full resolution, on the box where its layer is non-zero.

    Attributes:
        planes: ``float32`` ``[4, h, w]``: the layer (straight colour and alpha: object over effects).
        offset: ``(left, top)`` of the box on the canvas.
        effects: whether the layer holds effects (shadows, reflections) of the object.
        part: with ``keep_alphas``, the same as a :class:`~lamina.layeringdiff.disassembly.Decomposition`
            of the box (channel-last views; ``background`` is the completed background under it), for
            :func:`~lamina.layeringdiff.decompose.split_effects_layers`; else ``None``.
    """

    planes: np.ndarray
    offset: tuple[int, int]
    effects: bool
    part: Decomposition | None


def _region_window(kind: str, value: Any, canvas: np.ndarray, config: BoundedConfig,
                   saliency: Any) -> tuple[str, Any, slice, slice]:
    """The window of a region on the ``[4, H, W]`` canvas (float32 or integer); automatic regions become boxes."""
    from .foreground import check_mask

    height, width = canvas.shape[1:]
    if kind == "auto":
        from .saliency import salient_boxes

        size = _work_size(slice(0, height), slice(0, width), config.max_side)
        proxy = _downscale(canvas[:3], size)
        x0, y0, x1, y1 = salient_boxes(proxy, 1, saliency)[0]
        sy, sx = height / size[0], width / size[1]
        kind, value = "box", (math.floor(x0 * sx), math.floor(y0 * sy), min(width, math.ceil(x1 * sx)),
                              min(height, math.ceil(y1 * sy)))
    if kind == "box":
        box = check_box(value, width, height)
        if box == (0, 0, width, height):
            raise LaminaError(f"box {','.join(map(str, box))} covers the whole {width}x{height} image: GrabCut "
                              "needs background pixels outside the box (use a tighter box or pass a mask)")
        return kind, box, *object_window(box, height, width, config.window)
    if kind == "mask":
        hard = check_mask(value, height, width)
        ys, xs = np.nonzero(hard)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        return kind, hard, *object_window(box, height, width, config.window)
    return kind, value, slice(0, height), slice(0, width)  # a prompt: found in the whole photo


def _in_window(kind: str, value: Any, rows: slice, cols: slice, size: tuple[int, int]) -> Any:
    """A box or mask in the coordinates of the window's working crop."""
    sy, sx = size[0] / (rows.stop - rows.start), size[1] / (cols.stop - cols.start)
    if kind == "box":
        x0, y0, x1, y1 = value
        bx0, by0 = math.floor((x0 - cols.start) * sx), math.floor((y0 - rows.start) * sy)
        return (bx0, by0, max(bx0 + 1, min(size[1], math.ceil((x1 - cols.start) * sx))),
                max(by0 + 1, min(size[0], math.ceil((y1 - rows.start) * sy))))
    if kind == "mask":
        return _downscale(value[None, rows, cols].astype(np.float32), size)[:, :, 0] > 0.5
    return value


def _estimate(kind: str, value: Any, crop: np.ndarray, config: Any, grounder: Any) -> Any:
    from .foreground import foreground_from_box, foreground_from_mask

    if kind == "box":
        return foreground_from_box(crop, value, config) if grounder is None else grounder.estimate_box(
            crop, value, config)
    if kind == "prompt":
        if grounder is None:
            from .grounding import Grounder

            grounder = Grounder()
        return grounder.estimate(crop, value, config)
    return foreground_from_mask(crop, value, config)


def peel_window(canvas: np.ndarray, kind: str, value: Any, decomposer: Decomposer, config: Any = None,
                grounder: Any = None, saliency: Any = None, bounded: BoundedConfig | None = None,
                keep_alphas: bool = False) -> WindowPart | None:
    """Peel one object off ``canvas`` (``[4, H, W]``, the current background, edited in place).

    ``canvas`` is a layer's :attr:`~lamina.Layer.stored` planes: ``float32`` in ``[0, 1]``, or
    ``uint8`` / ``uint16`` levels, where the background under the object is rounded to them and the
    object's soft pixels solved again (:func:`quantise_background`); the object's layer is then
    ``uint16`` (:data:`LAYER_DTYPE`). Returns the object's layer on its box, or ``None`` when the
    layer came out empty. ``keep_alphas``: also the object's alpha and the effects' opacity on the
    box (:attr:`WindowPart.part`).
    """
    from .foreground import ForegroundConfig, without_tight_box

    bounded = bounded or BoundedConfig()
    config = config or ForegroundConfig()
    if kind == "auto":
        config = without_tight_box(config)
    kind, value, rows, cols = _region_window(kind, value, canvas, bounded, saliency)
    full = (rows.stop - rows.start, cols.stop - cols.start)
    size = _work_size(rows, cols, bounded.max_side)
    crop = _downscale(canvas[:3, rows, cols], size)
    estimate = _estimate(kind, _in_window(kind, value, rows, cols, size), crop, config, grounder)
    low = decomposer.decompose(crop, estimate.alpha, estimate.effects_region)
    del crop, estimate
    total = low.foreground[:, :, 3]
    box = _support(total > 0, full)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    # Everything the assembly needs, as planes at the working size: t, F (3), B (3)(, object alpha, effects).
    has_effects = bool((low.effects_alpha > 0).any())
    stacked = np.concatenate([low.foreground.transpose(2, 0, 1)[3:], low.foreground.transpose(2, 0, 1)[:3],
                              low.background.transpose(2, 0, 1)]
                             + ([low.object_alpha[None], low.effects_alpha[None]] if keep_alphas else []))
    del low
    release_memory()
    scale = integer_scale(canvas.dtype)
    planes = np.zeros((4, y1 - y0, x1 - x0), np.float32 if scale is None else LAYER_DTYPE)
    object_alpha = np.zeros((y1 - y0, x1 - x0) if keep_alphas else (0, 0), np.float32)
    effects = np.zeros_like(object_alpha)
    exact = full == tuple(stacked.shape[1:])

    def assemble(b0: int, b1: int) -> None:  # rows b0..b1 of the window at full resolution
        r0, r1 = b0 - y0, b1 - y0
        target = canvas[:3, rows.start + b0:rows.start + b1, cols.start + x0:cols.start + x1]
        shown = target if scale is None else as_unit(target)
        if exact:  # the window ran at full resolution: its layers are final (but for the rounding of t)
            band = stacked[:, b0:b1, x0:x1]
            if scale is not None:
                _round_alpha(band[0])
                project_band(shown, band[0], band[1:4], band[4:7])
        else:  # upsampled, then projected onto the full-resolution image
            band = _upsample(stacked, full, (b0, b1), (x0, x1),
                             np.empty((stacked.shape[0], b1 - b0, x1 - x0), np.float32))
            np.clip(band, 0.0, 1.0, out=band)
            if scale is not None:
                _round_alpha(band[0])
            project_band(shown, band[0], band[1:4], band[4:7])
        if scale is None:
            target[...] = band[4:7]
            planes[:3, r0:r1], planes[3, r0:r1] = band[1:4], band[0]
        else:  # an integer canvas: round B, solve F again where it is soft, store the layer's levels
            target[...] = quantise_background(shown, band[0], band[1:4], band[4:7], scale)
            planes[:3, r0:r1], planes[3, r0:r1] = _levels(band[1:4]), _levels(band[0])
        if keep_alphas:
            object_alpha[r0:r1], effects[r0:r1] = band[7], band[8]

    run_bands(assemble, y0, y1, bounded.band_rows)
    offset = (cols.start + x0, rows.start + y0)
    if not keep_alphas:
        return WindowPart(planes=planes, offset=offset, effects=has_effects, part=None)
    background = as_unit(canvas[:3, rows.start + y0:rows.start + y1,
                                cols.start + x0:cols.start + x1]).transpose(1, 2, 0)
    colour = planes if scale is None else as_unit(planes)
    part = Decomposition(foreground=colour.transpose(1, 2, 0), background=background, object_alpha=object_alpha,
                         effects_alpha=effects)
    return WindowPart(planes=planes, offset=offset, effects=has_effects, part=part)


def peel_bounded(
    image: np.ndarray,
    regions: Sequence[tuple[str, Any]],
    decomposer: Decomposer,
    make_layers: Callable[[int, WindowPart | None], list[Layer]],
    config: Any = None,
    grounder: Any = None,
    saliency: Any = None,
    bounded: BoundedConfig | None = None,
    keep_alphas: bool = False,
) -> LayeredImage:
    """Peel ``regions`` front to back off a large photo (``[H, W, 3]`` uint8, uint16 or float in ``[0, 1]``).

    ``make_layers(k, window_part)`` turns the ``k``-th object (1 = front-most; ``None`` when its
    layer came out empty) into its layers, front-most first, with offsets on the canvas; it is
    called right after that object is peeled (the canvas then holds the background under it).
    ``keep_alphas``: the window parts carry the objects' alpha and effects (:func:`peel_window`).
    Returns the layered image, the objects back to front.
    """
    background = Layer(image, name="background")  # planes [4, H, W] (uint8/uint16: compact): the canvas
    stack: list[Layer] = []
    for k, (kind, value) in enumerate(regions, start=1):
        stack += make_layers(k, peel_window(background.stored, kind, value, decomposer, config, grounder, saliency,
                                            bounded, keep_alphas))
        release_memory()
    return LayeredImage(background, list(reversed(stack)))


def recomposition_psnr(layered: LayeredImage, image: np.ndarray, band_rows: int = 256, cap: float = 100.0) -> float:
    """PSNR in dB of ``layered``'s composite against ``image`` ``[H, W, 3]``, composited in bands of rows.

    Only the box the foreground layers cover is composited: elsewhere :func:`peel_bounded` leaves
    the background equal to the image (to float32 rounding of its 8 or 16 bits, counted as 0).
    """
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
    width, height = layered.size
    boxes = [(max(layer.offset[0], 0), max(layer.offset[1], 0), min(layer.offset[0] + layer.width, width),
              min(layer.offset[1] + layer.height, height)) for layer in layered.layers]
    boxes = [b for b in boxes if b[0] < b[2] and b[1] < b[3]]
    sums: dict[int, float] = {}
    if boxes:
        x0, x1 = min(b[0] for b in boxes), max(b[2] for b in boxes)

        def band_error(y0: int, y1: int) -> None:
            band = LayeredImage(Layer.from_planes(layered.background.read(slice(y0, y1), slice(x0, x1)),
                                                  "background"),
                                [_band_layer(layer, x0, y0, y1) for layer in layered.layers])
            error = image[y0:y1, x0:x1] * np.float32(1.0 / scale)  # float32: the layers' own precision
            error -= band.composite()[:, :, :3]
            sums[y0] = float(np.square(error, out=error).sum(dtype=np.float64))

        run_bands(band_error, min(b[1] for b in boxes), min(max(b[3] for b in boxes), height), band_rows)
    mse = sum(sums[y0] for y0 in sorted(sums)) / (width * height * 3)  # summed in row order: deterministic
    return cap if mse <= 10 ** (-cap / 10) else float(-10.0 * np.log10(mse))


def _band_layer(layer: Layer, x0: int, y0: int, y1: int) -> Layer:
    """Rows ``y0..y1`` of ``layer`` (a view) on a canvas whose corner is the canvas point ``(x0, y0)``."""
    left, top = layer.offset
    a, b = min(max(y0 - top, 0), layer.height), min(max(y1 - top, 0), layer.height)
    planes = layer.read(slice(a, b)) if b > a else np.zeros((4, 1, 1), np.float32)
    offset = (left - x0, top + a - y0) if b > a else (-1, -1)
    band = Layer.from_planes(planes, layer.name, offset=offset, blend_mode=layer.blend_mode)
    band.opacity, band.visible = layer.opacity, layer.visible
    return band
