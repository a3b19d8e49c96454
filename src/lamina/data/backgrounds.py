"""Procedural backgrounds: gradients, fractal noise, stripes, checkers, tiles, floors, bokeh.

Each family is a smooth low-frequency colour field (B-spline control grids, see
:mod:`lamina.data.noise`) plus, for the patterned ones, an anti-aliased periodic pattern
whose edge width doubles as defocus blur. ``floor`` scenes have a horizon: a sky or wall
above, a patterned ground plane in perspective below (anti-aliased by the pixel footprint,
hazy towards the horizon). Backgrounds are planar ``float32`` ``[3, H, W]`` in [0, 1].
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._rand import pick, randint, uniform
from .captions import background_phrase
from .config import SceneConfig
from .noise import clip, field_basis, octaves_for, square_wave

#: Cells of the coarsest octave across the short side, and the finest cell size (px) of fractal noise.
NOISE_CELLS, NOISE_FINEST_PX = 2, 12.0
#: Gain from raw value noise (std ~0.15) to palette mixing weights, and the octave persistence range.
NOISE_GAIN, NOISE_PERSISTENCE = 3.0, (0.4, 0.65)
#: Colour washes per use: (ramp strength range, noise amplitude range).
WASH = {
    "gradient": ((0.5, 1.2), (0.0, 0.12)),
    "noise": ((0.0, 0.5), (0.25, 0.6)),
    "pattern": ((0.0, 0.5), (0.05, 0.3)),
    "sky": ((0.3, 1.0), (0.05, 0.25)),
    "floor": ((0.0, 0.4), (0.05, 0.3)),
    "bokeh": ((0.5, 0.5), (0.1, 0.3)),
}
#: Palettes in HSV: hue offsets between colours (analogous, complementary, triadic), ranges of
#: the base saturation and value, and the spread (std) of hue, saturation and value.
HUE_SCHEMES, SATURATION, VALUE, PALETTE_SPREAD = (0.06, 0.5, 1.0 / 3.0), (0.05, 0.75), (0.3, 0.9), (0.02, 0.12, 0.18)
#: 2-D patterns: period (of the short side), share of oblique angles, contrast between the two colours.
PATTERN_PERIOD, P_OBLIQUE, PATTERN_CONTRAST = (0.04, 0.2), 0.6, (0.3, 1.0)
#: Wavy stripes: probability, and amplitude of the wave in periods.
P_WAVY, WAVE_AMPLITUDE = 0.5, (2.0, 6.0)
#: Tiles: grout half-width (of a period) and grout brightness (of the palette colour).
GROUT_WIDTH, GROUT_SHADE = (0.03, 0.08), 0.6
#: Size of the per-tile jitter table (tiles repeat their jitter every this many tiles).
TILE_TABLE = 16
#: Floors: horizon row (of the height), focal length (of the height), shift of the vanishing
#: point (of the width, either way), pattern period (camera heights), pattern contrast, depth
#: offset of the pattern (periods), fog distance (of the height) and fog strength.
HORIZON, FOCAL, VANISHING_SHIFT, FLOOR_PERIOD = (0.22, 0.55), (0.6, 1.4), 0.5, (0.1, 0.6)
FLOOR_CONTRAST, FLOOR_OFFSET, FOG_DISTANCE, FOG = (0.4, 1.0), 8.0, (0.05, 0.3), (0.5, 1.0)
FLOOR_PATTERNS = ("checker", "tiles", "stripes", "noise")
#: Bokeh: darkening of the base, number of lights, radius range (of the short side), softness
#: range (px) plus extra softness (of the radius), strength.
BOKEH_DARKEN, BOKEH_COUNT, BOKEH_RADIUS = (0.3, 0.7), (5, 16), (0.02, 0.1)
BOKEH_SOFT, BOKEH_SOFTNESS, BOKEH_STRENGTH = (0.5, 3.0), 0.15, (0.15, 0.6)
#: Canvases up to this many pixels draw all bokeh discs on the whole canvas in one go.
BOKEH_FULL_CANVAS = 128 * 128
#: Vignette strength range (about this fraction of the brightness is lost in the corners).
VIGNETTE = (0.1, 0.3)


@dataclass
class BackgroundInfo:
    family: str
    pattern: str | None = None  # floor pattern
    horizon: int | None = None  # first floor row (floor scenes)
    lens: Lens | None = None

    @property
    def phrase(self) -> str:
        return background_phrase(self.family, self.pattern)


def palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """``[k, 3]`` harmonious random colours (analogous, complementary or triadic hues)."""
    hue, spread = rng.random(), pick(rng, HUE_SCHEMES)
    sat, val = uniform(rng, SATURATION), uniform(rng, VALUE)
    jitter = rng.standard_normal(3 * k).tolist()
    dh, ds, dv = PALETTE_SPREAD
    out = []
    for i in range(k):
        h = (hue + spread * i + dh * jitter[3 * i]) % 1.0
        s = min(max(sat + ds * jitter[3 * i + 1], 0.0), 1.0)
        v = min(max(val + dv * jitter[3 * i + 2], 0.0), 1.0)
        out.append(colorsys.hsv_to_rgb(h, s, v))
    return np.asarray(out, np.float32)


def _wash(rng: np.random.Generator, h: int, w: int, colors: np.ndarray, use: str,
          ramp_angle: float | None = None, finest_px: float = NOISE_FINEST_PX) -> np.ndarray:
    """Colour field ``[3, h, w]``: a linear ramp ``colors[0] -> colors[1]`` (centred on their
    mean; at ``ramp_angle``, random if None, 0 = left to right, pi / 2 = top to bottom) plus
    fractal noise that mixes in ``colors[2]`` and ``colors[0]``; strengths from ``WASH[use]``."""
    strength, noise = (uniform(rng, r) for r in WASH[use])
    angle = rng.random() * 2 * math.pi if ramp_angle is None else ramp_angle
    basis = field_basis(h, w, NOISE_CELLS, octaves_for(min(h, w), NOISE_CELLS, finest_px))
    grids = np.concatenate([basis.linear, basis.noise(rng, 2, uniform(rng, NOISE_PERSISTENCE))])
    # colour = c0 + (c1 - c0) t + (c2 - c0) n0 + (c0 - c1) n1, t = 0.5 + ax (x - 0.5) + ay (y - 0.5):
    # weights of the grids (1, x, y, n0, n1) for each of c0, c1, c2.
    ax, ay = strength * math.cos(angle), strength * math.sin(angle)
    k, g = 0.5 - 0.5 * (ax + ay), noise * NOISE_GAIN
    mix = np.array([[1.0 - k, -ax, -ay, -g, g], [k, ax, ay, 0.0, -g], [0.0, 0.0, 0.0, g, 0.0]], np.float32)
    return basis.mix(colors[:3].T @ mix, grids)


@lru_cache(maxsize=64)
def _centred(n: int) -> np.ndarray:
    """Pixel centres ``0.5 - n / 2 ... n / 2 - 0.5`` (float32, read-only)."""
    out = np.arange(n, dtype=np.float32) + np.float32(0.5 - n / 2)
    out.setflags(write=False)
    return out


def _rotated(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates rotated by ``angle``: ``(u, v)`` ``[h, w]`` px from the centre."""
    x, y = _centred(w)[None, :], _centred(h)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    return (x * c) + (y * s), (y * c) - (x * s)


def _tiles(u: np.ndarray, v: np.ndarray, wu: np.ndarray | float, wv: np.ndarray | float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile brightness jitter in [0, 1] and grout coverage, for coordinates in tile units."""
    table = rng.random((TILE_TABLE, TILE_TABLE), dtype=np.float32)
    iu = np.floor(u).astype(np.int32) & (TILE_TABLE - 1)
    iv = np.floor(v).astype(np.int32) & (TILE_TABLE - 1)
    jitter = table[iv, iu]
    grout_width = uniform(rng, GROUT_WIDTH)
    # A grout line is where either coordinate is within grout_width of an integer.
    gu = clip((np.abs(u - np.round(u)) - grout_width) / np.maximum(wu, 1e-6))
    gv = clip((np.abs(v - np.round(v)) - grout_width) / np.maximum(wv, 1e-6))
    return jitter, 1.0 - gu * gv


def _pattern(kind: str, u: np.ndarray, v: np.ndarray, wu, wv, rng: np.random.Generator):
    """Two-colour pattern weight in [0, 1] (and grout for tiles) in pattern-period units."""
    if kind == "checker":
        return 0.5 + 0.5 * square_wave(u, wu) * square_wave(v, wv), None
    if kind == "stripes":
        return 0.5 + 0.5 * square_wave(v, wv), None
    if kind == "tiles":
        return _tiles(u, v, wu, wv, rng)
    raise ValueError(kind)


def _patterned(rng: np.random.Generator, cfg: SceneConfig, kind: str) -> np.ndarray:
    """Stripes, checker or tiles at a random angle over a colour wash."""
    h, w = cfg.height, cfg.width
    colors = palette(rng, 4)
    rgb = _wash(rng, h, w, colors, "pattern")
    period = uniform(rng, PATTERN_PERIOD) * min(h, w)
    angle = rng.random() * math.pi if rng.random() < P_OBLIQUE else randint(rng, 0, 4) * math.pi / 2
    u, v = _rotated(h, w, angle)
    soft = np.float32(uniform(rng, cfg.bg_softness) / period)  # edge width in periods (float32 keeps arrays so)
    if kind == "stripes" and rng.random() < P_WAVY:
        warp = field_basis(h, w, NOISE_CELLS, 2)
        v = v + warp.render(warp.noise(rng, 1, 0.5))[0] * (period * uniform(rng, WAVE_AMPLITUDE))
    t, grout = _pattern(kind, u * (1.0 / period), v * (1.0 / period), soft, soft, rng)
    rgb += ((colors[3] - colors[0]) * uniform(rng, PATTERN_CONTRAST))[:, None, None] * t
    if grout is not None:
        rgb += (colors[1][:, None, None] * GROUT_SHADE - rgb) * grout
    return rgb


def _floor(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, BackgroundInfo]:
    """Sky (or wall) above a horizon, a patterned ground plane in perspective below."""
    h, w = cfg.height, cfg.width
    horizon = max(1, int(uniform(rng, HORIZON) * h))
    rgb = np.empty((3, h, w), np.float32)
    rgb[:, :horizon] = _wash(rng, horizon, w, palette(rng, 3), "sky", ramp_angle=math.pi / 2)
    haze = rgb[:, horizon - 1, :].mean(axis=1)
    pattern = pick(rng, FLOOR_PATTERNS)
    colors = palette(rng, 4)
    rows = h - horizon
    floor = _wash(rng, rows, w, colors, "floor", ramp_angle=math.pi / 2, finest_px=NOISE_FINEST_PX / 2)
    # Perspective: row y lies at depth focal / dist; x spreads by 1 / dist (in camera heights).
    focal = uniform(rng, FOCAL) * h
    dist = np.arange(rows, dtype=np.float32)[:, None] + np.float32(0.5)
    x = _centred(w)[None, :] + np.float32(uniform(rng, -VANISHING_SHIFT, VANISHING_SHIFT) * w)
    period = uniform(rng, FLOOR_PERIOD)
    blur = uniform(rng, cfg.bg_softness)
    u = x / (period * dist)  # world x (camera heights) / period
    v = focal / (period * dist) + uniform(rng, 0.0, FLOOR_OFFSET)  # world depth / period
    wu = (1.0 + blur) / (period * dist)  # pixel footprint + blur, in periods
    wv = (1.0 + blur) * focal / (period * dist * dist)
    if pattern != "noise":
        t, grout = _pattern(pattern, u, v, wu, wv, rng)
        fade = clip(1.0 - 2.0 * wv)  # contrast lost where the pattern is below a pixel
        floor += ((colors[3] - colors[0]) * uniform(rng, FLOOR_CONTRAST))[:, None, None] * ((t - 0.5) * fade + 0.5)
        if grout is not None:
            floor += (colors[1][:, None, None] * GROUT_SHADE - floor) * (grout * fade)
    fog = np.exp(-dist / (uniform(rng, FOG_DISTANCE) * h)) * uniform(rng, FOG)
    floor += (haze[:, None, None] - floor) * fog
    rgb[:, horizon:] = floor
    return rgb, BackgroundInfo("floor", pattern, horizon)


def _bokeh(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
    """A dark wash with out-of-focus lights: soft discs added on top."""
    h, w = cfg.height, cfg.width
    rgb = _wash(rng, h, w, palette(rng, 3) * np.float32(uniform(rng, BOKEH_DARKEN)), "bokeh")
    n, short = randint(rng, *BOKEH_COUNT), min(h, w)
    u = rng.random((6, n), dtype=np.float32)
    radius = (BOKEH_RADIUS[0] + (BOKEH_RADIUS[1] - BOKEH_RADIUS[0]) * u[0]) * short
    soft = BOKEH_SOFT[0] + (BOKEH_SOFT[1] - BOKEH_SOFT[0]) * u[1] + BOKEH_SOFTNESS * u[2] * radius
    light = palette(rng, n) * (BOKEH_STRENGTH[0] + (BOKEH_STRENGTH[1] - BOKEH_STRENGTH[0]) * u[3])[:, None]
    cx, cy = u[4] * w, u[5] * h
    if h * w <= BOKEH_FULL_CANVAS:  # small canvas: every disc on the whole canvas at once
        rgb += (light.T @ _discs(cx, cy, radius, soft, 0, 0, w, h).reshape(n, -1)).reshape(3, h, w)
        return rgb
    # Large canvas: each disc on its own crop (all crops the same size, drawn at once).
    half = int(np.ceil(BOKEH_RADIUS[1] * short * (1.0 + BOKEH_SOFTNESS) + BOKEH_SOFT[1] + 1))
    left, top = np.floor(cx).astype(np.int32) - half, np.floor(cy).astype(np.int32) - half
    a = _discs(cx, cy, radius, soft, left.astype(np.float32), top.astype(np.float32), 2 * half, 2 * half)
    for i, (x0, y0) in enumerate(zip(left.tolist(), top.tolist(), strict=True)):
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + 2 * half, w), min(y0 + 2 * half, h)
        if cx0 < cx1 and cy0 < cy1:
            rgb[:, cy0:cy1, cx0:cx1] += light[i][:, None, None] * a[i, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return rgb


def _discs(cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, soft: np.ndarray, left: np.ndarray | float,
           top: np.ndarray | float, w: int, h: int) -> np.ndarray:
    """``[n, h, w]`` soft-disc coverage, disc ``i`` on the window at (``left[i]``, ``top[i]``)."""
    dx = (np.arange(w, dtype=np.float32) + (left + np.float32(0.5) - cx)[:, None])[:, None, :]
    dy = (np.arange(h, dtype=np.float32) + (top + np.float32(0.5) - cy)[:, None])[:, :, None]
    a = np.sqrt(dx * dx + dy * dy)
    a -= radius[:, None, None]
    a *= (-1.0 / soft)[:, None, None]
    a += 0.5
    return clip(a, out=a)


@dataclass
class Lens:
    """Camera effects applied alike to the background and to object colours, so that they
    give no hint of what is foreground: a vignette and film grain."""

    vignette: tuple[np.ndarray, np.ndarray] | None = None  # (rows [H, 1], columns [1, W]) gains
    grain: np.ndarray | None = None  # [H, W] luminance noise

    def apply(self, rgb: np.ndarray, box: tuple[int, int, int, int] | None = None, clipped: bool = True) -> np.ndarray:
        """Apply to planar ``rgb`` ``[3, h, w]`` lying at canvas ``box`` (whole canvas if None).

        Returns a new array (clipped to [0, 1] unless ``clipped`` is False), or ``rgb``
        itself when there is nothing to apply.
        """
        if self.vignette is None and self.grain is None:
            return rgb
        x0, y0, x1, y1 = box if box is not None else (0, 0, rgb.shape[2], rgb.shape[1])
        if self.vignette is not None:
            vy, vx = self.vignette
            rgb = rgb * (vy[y0:y1] * vx[:, x0:x1])
        if self.grain is not None:
            rgb = rgb + self.grain[y0:y1, x0:x1]
        return clip(rgb, out=rgb) if clipped else rgb


def _lens(rng: np.random.Generator, cfg: SceneConfig) -> Lens:
    h, w = cfg.height, cfg.width
    lens = Lens()
    if rng.random() < cfg.p_vignette:
        k = uniform(rng, VIGNETTE)
        lens.vignette = ((1.0 - (2.0 * k / (h * h)) * _centred(h) ** 2)[:, None],
                         (1.0 - (2.0 * k / (w * w)) * _centred(w) ** 2)[None, :])
    if rng.random() < cfg.p_grain:
        grain = rng.random((h, w), dtype=np.float32)
        grain -= 0.5
        grain *= uniform(rng, cfg.grain) * math.sqrt(12.0)  # uniform noise with that std
        lens.grain = grain
    return lens


def render_background(rng: np.random.Generator, cfg: SceneConfig, family: str) -> tuple[np.ndarray, BackgroundInfo]:
    """One background of ``family`` at ``cfg.size``: planar ``float32`` ``[3, H, W]`` in [0, 1],
    with its :class:`Lens` (in ``info.lens``) already applied."""
    h, w = cfg.height, cfg.width
    info = BackgroundInfo(family)
    if family in ("gradient", "noise"):
        rgb = _wash(rng, h, w, palette(rng, 3), family)
    elif family in ("stripes", "checker", "tiles"):
        rgb = _patterned(rng, cfg, family)
    elif family == "floor":
        rgb, info = _floor(rng, cfg)
    elif family == "bokeh":
        rgb = _bokeh(rng, cfg)
    else:
        raise ValueError(f"unknown background family {family!r}")
    info.lens = _lens(rng, cfg)
    return clip(info.lens.apply(rgb, clipped=False), out=rgb), info
