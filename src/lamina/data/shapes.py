"""Object outlines as polar tables, rasterised by signed distance with analytic anti-aliasing.

Every shape is star-shaped around its centre, so its boundary is a radius ``R(theta)``
sampled at :data:`TABLE_SIZE` angles and interpolated linearly (rings add an inner boundary
at ``hole * R``). The signed distance of a pixel at polar position ``(r, theta)`` is
approximated to first order by ``(r - R) / sqrt(1 + (R' / R)^2)`` (the radial offset
projected on the normal), and its coverage by a one-pixel box filter is
``clip(0.5 - d, 0, 1)``: exact for straight edges, no supersampling. Rotation is an offset
of the table index, so it is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._rand import randint, uniform
from .noise import clip

#: Angular samples per boundary table (a power of two: the index wraps with a bit mask).
TABLE_SIZE = 1024
_THETA = (np.arange(TABLE_SIZE) * (2 * np.pi / TABLE_SIZE)).astype(np.float32)
_COS, _SIN = np.cos(_THETA), np.sin(_THETA)
_STEPS_PER_RADIAN = np.float32(TABLE_SIZE / (2.0 * np.pi))
#: Rotations are multiples of 2 pi / ROTATIONS, whose extents are tabulated per shape from
#: every SUPPORT_STRIDE-th outline point.
ROTATIONS, SUPPORT_STRIDE = 256, 4

#: Lower bound of the radial-to-normal distance factor (limits smearing at cusps such as a heart's).
MIN_SLOPE = 0.25
#: Half-width (in turns) of the moving average that smooths the outline for shading.
DOME_SMOOTHING = 1.0 / 24
#: Quantisation of continuous shape parameters, and number of random outlines per family.
LEVELS, VARIANTS = 16, 64
POLYGON_NOUNS = {3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon"}
#: Family parameters: aspect ratios (minor / major axis), superellipse exponent, polygon vertex
#: jitter (of the radius), star points (max exclusive) and inner radius, blob harmonics and
#: their amplitude, flower petals (max exclusive), depth and lobe exponent, ring wobble and hole.
ELLIPSE_ASPECT, SUPERELLIPSE_ASPECT, RING_ASPECT = (0.55, 1.0), (0.6, 1.0), (0.75, 1.0)
SUPERELLIPSE_POWER, POLYGON_JITTER = (2.8, 6.0), 0.06
STAR_POINTS, STAR_INNER = (4, 9), (0.38, 0.6)
BLOB_HARMONICS, BLOB_AMPLITUDE = range(2, 7), 0.32
FLOWER_PETALS, FLOWER_DEPTH, FLOWER_LOBE = (4, 10), (0.2, 0.45), 0.8
RING_HARMONICS, RING_WOBBLE, RING_HOLE = range(2, 4), 0.06, (0.45, 0.7)
#: The heart curve's centre, moved up (curve units) so that every ray from it meets the outline once.
HEART_CENTRE = 2.5
#: Ellipses this round or rounder are called circles (and superellipses squares).
CIRCLE_ASPECT = 0.88
#: Rotation range (radians, either way) of shapes that have an up (hearts); the others turn freely.
UPRIGHT_TILT = 0.35


@dataclass(frozen=True)
class Shape:
    """One outline: boundary radius per local angle, normalised so that its maximum is 1."""

    family: str
    noun: str  # the caption word ("triangle", "star", "rounded square"...)
    radius: np.ndarray  # [TABLE_SIZE + 1] float32 boundary radius (last = first, for interpolation)
    slope: np.ndarray  # [TABLE_SIZE] float32 1 / sqrt(1 + (R'/R)^2), radial offset -> normal distance
    dome: np.ndarray  # [TABLE_SIZE] float32 1 / smoothed radius: the shading dome's footprint
    # Support function: for direction j (angle 2 pi j / ROTATIONS), the largest projection of
    # the outline on it and the outline point that reaches it (lists, for fast scalar access).
    support: tuple[list[float], list[float], list[float]]
    hole: float = 0.0  # rings: inner boundary at hole * radius
    tilt: float = np.pi  # rotation is drawn from [-tilt, tilt]

    def extents(self, rotation: float) -> tuple[float, float, float, float, float]:
        """``(xmin, ymin, xmax, ymax, x_at_ymax)`` of the outline turned by ``rotation``, in radii (y down).

        ``rotation`` is rounded to a multiple of ``2 pi / ROTATIONS`` (see :func:`quantise_rotation`).
        """
        k = round(rotation * (ROTATIONS / (2 * math.pi)))
        q = ROTATIONS // 4
        support, px, py = self.support
        bottom = (q - k) % ROTATIONS
        c, s = math.cos(rotation), math.sin(rotation)
        return (-support[(2 * q - k) % ROTATIONS], -support[(3 * q - k) % ROTATIONS], support[-k % ROTATIONS],
                support[bottom], px[bottom] * c - py[bottom] * s)


def quantise_rotation(rotation: float) -> float:
    """``rotation`` rounded to one of the :data:`ROTATIONS` angles whose extents are tabulated."""
    return round(rotation * (ROTATIONS / (2 * math.pi))) * (2 * math.pi / ROTATIONS)


class Polar(NamedTuple):
    """A shape evaluated on a pixel grid (all ``[h, w]`` float32 unless noted)."""

    d: np.ndarray  # signed distance to the outline in px, negative inside
    r: np.ndarray  # distance to the centre in px
    angle: np.ndarray  # local angle in table steps, offset to lie in [TABLE_SIZE, 3 * TABLE_SIZE)
    idx: np.ndarray  # int32 table index of the local angle


def evaluate(shape: Shape, dx: np.ndarray, dy: np.ndarray, radius_px: float, rotation: float) -> Polar:
    """Signed distance etc. of ``shape`` (scaled to ``radius_px``) at offsets ``dx``, ``dy`` from its centre.

    ``dx`` and ``dy`` broadcast together (e.g. ``[1, w]`` and ``[h, 1]``), in px, y down.
    """
    r = np.sqrt(dx * dx + dy * dy)
    angle = np.arctan2(dy, dx)
    angle *= _STEPS_PER_RADIAN
    angle += 2 * TABLE_SIZE - rotation * _STEPS_PER_RADIAN  # positive, so truncation is floor
    idx = angle.astype(np.int32)
    frac = angle - idx
    idx &= TABLE_SIZE - 1
    table = shape.radius * np.float32(radius_px)
    boundary = table.take(idx)
    frac *= table.take(idx + 1) - boundary
    boundary += frac  # linear interpolation
    slope = shape.slope.take(idx)
    d = r - boundary
    d *= slope
    if shape.hole:
        boundary *= shape.hole
        boundary -= r
        boundary *= slope
        np.maximum(d, boundary, out=d)
    return Polar(d, r, angle, idx)


def coverage(d: np.ndarray) -> np.ndarray:
    """Box-filtered pixel coverage of the inside of an edge at signed distance ``d`` px."""
    return clip(0.5 - d)


# ------------------------------------------------------------------------- families
def _moving_average(x: np.ndarray, half: int) -> np.ndarray:
    """Circular moving average of ``x`` over ``2 * half + 1`` samples."""
    c = np.cumsum(np.concatenate([x[-half - 1:], x, x[:half]]), dtype=np.float64)
    return ((c[2 * half + 1:] - c[:-2 * half - 1]) / (2 * half + 1)).astype(np.float32)


def _finish(family: str, noun: str, radius: np.ndarray, hole: float = 0.0, tilt: float = np.pi) -> Shape:
    radius = (radius / radius.max()).astype(np.float32)
    step = np.float32(2 * np.pi / TABLE_SIZE)
    ahead, behind = np.roll(radius, -1), np.roll(radius, 1)
    derivative = (ahead - behind) / (2 * step)
    slope = np.maximum(1.0 / np.sqrt(1.0 + (derivative / radius) ** 2), np.float32(MIN_SLOPE))
    # The shading dome follows a smoothed outline: over the raw one it would crease along notches.
    smooth = _moving_average(radius, int(DOME_SMOOTHING * TABLE_SIZE))
    smooth *= (radius / smooth).max()  # contains the outline
    return Shape(family, noun, np.append(radius, radius[0]), slope, 1.0 / smooth, _support(radius), hole, tilt)


def _support(radius: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    # Every SUPPORT_STRIDE-th outline point: the extent is off by at most 1 - cos(pi * stride / TABLE_SIZE).
    px, py = (radius * _COS)[::SUPPORT_STRIDE], (radius * _SIN)[::SUPPORT_STRIDE]
    directions = np.arange(ROTATIONS) * (2 * np.pi / ROTATIONS)
    projection = np.cos(directions)[:, None] * px + np.sin(directions)[:, None] * py
    best = projection.argmax(axis=1)
    return projection[np.arange(ROTATIONS), best].tolist(), px[best].tolist(), py[best].tolist()


def _ellipse_radius(aspect: float, power: float = 2.0) -> np.ndarray:
    """Polar radius of the (super)ellipse ``|x|^p + |y / aspect|^p = 1``."""
    if power == 2.0:
        return 1.0 / np.sqrt(_COS * _COS + (_SIN / aspect) ** 2)
    return (np.abs(_COS) ** power + np.abs(_SIN / aspect) ** power) ** (-1.0 / power)


def _polygon_radius(angles: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Polar radius of the polygon through vertices at increasing ``angles`` in [0, 2 pi)."""
    px, py = radii * np.cos(angles), radii * np.sin(angles)
    j = (np.searchsorted(angles, _THETA, side="right") - 1) % len(angles)  # edge j -> j + 1
    k = (j + 1) % len(angles)
    ex, ey = px[k] - px[j], py[k] - py[j]
    # The ray r (cos t, sin t) meets P_j + s (P_k - P_j) at r = (P_j x E) / (dir x E).
    return (px[j] * ey - py[j] * ex) / (_COS * ey - _SIN * ex)


@lru_cache(maxsize=1)
def _heart_radius() -> np.ndarray:
    """The classic parametric heart, resampled as a polar function around its middle (y down)."""
    t = np.linspace(0.0, 2 * np.pi, 8 * TABLE_SIZE, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) - HEART_CENTRE
    theta, r = np.mod(np.arctan2(y, x), 2 * np.pi), np.hypot(x, y)
    order = np.argsort(theta)
    out = np.interp(_THETA, theta[order], r[order], period=2 * np.pi).astype(np.float32)
    out.setflags(write=False)
    return out


def _harmonics(seed: int, orders: range, amplitude: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.arange(orders.start, orders.stop, dtype=np.float32)[:, None]
    amp = rng.random((len(k), 1), dtype=np.float32) * (amplitude / k**0.7)
    phase = rng.random((len(k), 1), dtype=np.float32) * np.float32(2 * np.pi)
    return (amp * np.cos(k * _THETA + phase)).sum(axis=0)


def _level(rng: np.random.Generator, lo: float, hi: float, levels: int = LEVELS) -> float:
    """A uniform draw from ``[lo, hi]`` quantised to ``levels`` values (so tables can be cached)."""
    return lo + (hi - lo) * int(rng.random() * levels) / (levels - 1)


@lru_cache(maxsize=4096)
def _table(family: str, a: float, b: float, variant: int) -> Shape:
    """The outline of ``family`` for quantised parameters ``a``, ``b`` and ``variant``."""
    if family == "ellipse":
        return _finish(family, "circle" if a >= CIRCLE_ASPECT else "oval", _ellipse_radius(a))
    if family == "superellipse":
        noun = "rounded square" if a >= CIRCLE_ASPECT else "rounded rectangle"
        return _finish(family, noun, _ellipse_radius(a, b))
    if family == "polygon":
        n = variant % len(POLYGON_NOUNS) + 3
        angles = np.arange(n) * (2 * np.pi / n)
        jitter = np.random.default_rng(variant).uniform(-POLYGON_JITTER, POLYGON_JITTER, n)
        return _finish(family, POLYGON_NOUNS[n], _polygon_radius(angles, 1.0 + jitter))
    if family == "star":
        angles = np.arange(2 * variant) * (np.pi / variant)
        radii = np.where(np.arange(2 * variant) % 2 == 0, 1.0, a)
        return _finish(family, "star", _polygon_radius(angles, radii))
    if family == "blob":
        return _finish(family, "blob", 1.0 + _harmonics(variant, BLOB_HARMONICS, BLOB_AMPLITUDE))
    if family == "flower":
        return _finish(family, "flower", 1.0 - a + a * np.abs(np.cos(0.5 * variant * _THETA)) ** FLOWER_LOBE)
    if family == "heart":
        return _finish(family, "heart", _heart_radius(), tilt=UPRIGHT_TILT)
    if family == "ring":
        aspect = np.random.default_rng(variant).uniform(*RING_ASPECT)
        wobble = 1.0 + _harmonics(variant, RING_HARMONICS, RING_WOBBLE)
        return _finish(family, "ring", _ellipse_radius(aspect) * wobble)
    raise ValueError(f"unknown shape family {family!r}")


def sample_shape(rng: np.random.Generator, family: str) -> Shape:
    """Draw one outline of ``family`` (see :data:`lamina.data.config.SHAPES`).

    Continuous parameters are quantised to :data:`LEVELS` steps and random outlines (blobs,
    polygon jitter, ring wobble) come from :data:`VARIANTS` seeds, so after warm-up every
    table comes from a cache.
    """
    variant = randint(rng, 0, VARIANTS)
    if family == "ellipse":
        return _table(family, _level(rng, *ELLIPSE_ASPECT), 0.0, 0)
    if family == "ring":
        return replace(_table(family, 0.0, 0.0, variant), hole=uniform(rng, RING_HOLE))
    if family == "superellipse":
        return _table(family, _level(rng, *SUPERELLIPSE_ASPECT), _level(rng, *SUPERELLIPSE_POWER, LEVELS // 2), 0)
    if family == "star":
        return _table(family, _level(rng, *STAR_INNER), 0.0, randint(rng, *STAR_POINTS))
    if family == "flower":
        return _table(family, _level(rng, *FLOWER_DEPTH), 0.0, randint(rng, *FLOWER_PETALS))
    if family in ("polygon", "blob"):
        return _table(family, 0.0, 0.0, variant)
    return _table(family, 0.0, 0.0, 0)
