"""Foreground objects: a shape, a colour and texture, volumetric shading, fur and glass.

An object is drawn on its own bounding-box crop only. Fur is a set of thin curved strands
radiating from the outline: in polar coordinates around the object's centre a strand is a
line of (nearly) constant angle, so every strand of a layer is drawn at once by taking the
angle modulo the strand spacing; per-strand offset, length, opacity and brightness come
from small lookup tables indexed by the strand number. Strands thinner than a pixel get
partial alpha, as real hair does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._rand import pick, uniform
from .backgrounds import Lens
from .captions import COLORS
from .config import SceneConfig
from .noise import clip, field_basis, square_wave
from .shapes import TABLE_SIZE, Shape, coverage, evaluate

#: Shading: ambient and diffuse weights, specular weight and sharpness (power of two).
AMBIENT, DIFFUSE, SPECULAR, SPECULAR_DOUBLINGS = 0.5, 0.55, 0.35, 3
#: Strands start this far inside the outline (fraction of their length) so roots blend in.
FUR_ROOT = 0.15
#: Strand width at the tip, relative to the root.
FUR_TIP_WIDTH = 0.35
#: An object needs this radius (px) per strand layer: more layers would be lost below a pixel.
FUR_RADIUS_PER_LAYER = 24.0
#: Opaque rim around a glassy region, relative to the radius (at least one pixel).
GLASS_RIM = 0.12
#: A named colour is scaled by a gain in COLOR_GAIN and each channel jittered by up to
#: COLOR_JITTER either way; the secondary colour mixes it by SECOND_MIX towards white or black.
COLOR_GAIN, COLOR_JITTER, SECOND_MIX = (0.85, 1.08), 0.04, (0.35, 0.65)
#: Stripe period (of the radius); noise texture octave persistence and gain.
STRIPE_PERIOD, TEXTURE_PERSISTENCE, TEXTURE_GAIN = (0.12, 0.35), 0.6, 3.0
#: Glass: probability of a half-plane cut, its offset (of the radius, either way), tint towards white.
P_GLASS_CUT, GLASS_CUT_OFFSET, GLASS_TINT = 0.5, 0.3, (0.2, 0.6)
#: Tufts: half-width of the furry arc (turns); shortest fur (px).
TUFT_HALF_WIDTH, MIN_FUR_LENGTH = (0.08, 0.25), 1.5
#: Cells of the noise texture across an object; its basis sizes are multiples of TEXTURE_BUCKET px.
TEXTURE_CELLS, TEXTURE_BUCKET = 3, 16
#: Per-strand random properties: lowest value and spread of (slot position, relative length,
#: opacity, brightness).
STRAND_LOW = np.array([0.25, 0.35, 0.45, 0.75], np.float32)[:, None, None]
STRAND_SPREAD = np.array([0.5, 0.65, 0.55, 0.5], np.float32)[:, None, None]
#: Tufts (fur on part of the outline) fade out over this fraction of a turn.
TUFT_EDGE = 0.06
#: Tiled copies of the strand tables (strand numbers run over [count, 4 * count)).
_STRAND_TILES = 4
_TABLE_INDEX = np.arange(TABLE_SIZE, dtype=np.float32)


@dataclass
class StrandLayer:
    """One layer of strands around the outline; per-strand tables are tiled :data:`_STRAND_TILES` times."""

    count: int  # strands around the full turn
    offset: float  # angular phase, in strands
    bend: float  # sideways drift of a tip, in strands
    centre: np.ndarray  # position of the strand within its angular slot, [0.25, 0.75]
    reach: np.ndarray  # 1 / relative length of the strand (>= 1)
    opacity: np.ndarray
    brightness: np.ndarray  # colour factor


@dataclass
class Fur:
    length: float  # px of the longest strand
    width: float  # px at the root
    layers: list[StrandLayer]
    window: np.ndarray | None  # [TABLE_SIZE] fur density per local angle (None: all round)


@dataclass
class Glass:
    alpha: float
    rim: float  # px of opaque border
    cut: tuple[float, float, float] | None  # half-plane (nx, ny, offset px): glass only where n.p > offset
    tint: float  # mix towards white inside the glass


@dataclass
class ObjectSpec:
    """Sampled parameters of one object (positions in canvas px, y down)."""

    shape: Shape
    color_name: str
    color: np.ndarray  # [3] base colour
    color2: np.ndarray  # [3] secondary texture colour
    texture: str
    texture_params: tuple[float, float, float, float]  # direction (c, s), stripe period px, phase
    radius: float
    rotation: float
    extent: tuple[float, float, float, float, float]  # Shape.extents(rotation), in radii
    light: np.ndarray  # [3] unit vector towards the light (x right, y down, z to the viewer)
    shading: bool
    fur: Fur | None
    glass: Glass | None
    cx: float = 0.0
    cy: float = 0.0

    @property
    def margin(self) -> float:
        """How far the drawing extends past the outline, px."""
        return (self.fur.length if self.fur else 0.0) + 2.0

    def body_box(self) -> tuple[float, float, float, float]:
        """Extent of the outline on the canvas (float px)."""
        x0, y0, x1, y1, _ = self.extent
        r = self.radius
        return self.cx + x0 * r, self.cy + y0 * r, self.cx + x1 * r, self.cy + y1 * r

    def bottom(self) -> tuple[float, float]:
        """Lowest point of the outline (where it touches the ground), canvas px."""
        _, _, _, y1, x_at = self.extent
        return self.cx + x_at * self.radius, self.cy + y1 * self.radius


@dataclass
class Drawing:
    """A straight-RGBA drawing on a canvas crop ``box = (x0, y0, x1, y1)`` (exclusive end)."""

    box: tuple[int, int, int, int]
    rgb: np.ndarray  # [3, h, w], or [3, 1, 1] for a constant colour
    alpha: np.ndarray  # [h, w]


# ------------------------------------------------------------------------- sampling
def _sample_fur(rng: np.random.Generator, cfg: SceneConfig, radius: float) -> Fur:
    length = max(MIN_FUR_LENGTH, uniform(rng, cfg.fur_length) * radius)
    layers = []
    for _ in range(min(cfg.fur_layers, 1 + int(radius / FUR_RADIUS_PER_LAYER))):
        count = max(8, int(2 * np.pi * radius / uniform(rng, cfg.fur_spacing)))
        spacing = 2 * np.pi * radius / count
        tables = np.empty((4, _STRAND_TILES, count), np.float32)
        tables[:] = (rng.random((4, 1, count), dtype=np.float32) * STRAND_SPREAD + STRAND_LOW)
        centre, reach, opacity, brightness = tables.reshape(4, -1)
        reach = 1.0 / (reach * (1.0 + FUR_ROOT))
        layers.append(StrandLayer(count, rng.random(), uniform(rng, cfg.fur_bend) * length / spacing,
                                  centre, reach, opacity, brightness))
    window = None
    if rng.random() < cfg.p_fur_partial:  # a tuft: fur on an arc of the outline
        centre, half = rng.random() * TABLE_SIZE, uniform(rng, TUFT_HALF_WIDTH) * TABLE_SIZE
        off_centre = np.abs((_TABLE_INDEX - centre + TABLE_SIZE / 2) % TABLE_SIZE - TABLE_SIZE / 2)
        window = clip((half - off_centre) * (1.0 / (TUFT_EDGE * TABLE_SIZE)))
    return Fur(length, uniform(rng, cfg.fur_width), layers, window)


def sample_object(
    rng: np.random.Generator, cfg: SceneConfig, shape: Shape, radius: float, rotation: float, light: np.ndarray,
) -> ObjectSpec:
    """Draw colour, texture and material of an object (its position is set by the caller)."""
    name = pick(rng, cfg.colors)
    gain, *jitter = rng.random(4).tolist()
    gain = COLOR_GAIN[0] + (COLOR_GAIN[1] - COLOR_GAIN[0]) * gain
    base = [min(max(c * gain + (j - 0.5) * 2 * COLOR_JITTER, 0.0), 1.0)
            for c, j in zip(COLORS[name], jitter, strict=True)]
    # The secondary colour mixes the base towards white or black, which keeps its name true.
    target, mix = float(rng.random() < 0.5), uniform(rng, SECOND_MIX)
    second = np.array([c + mix * (target - c) for c in base], np.float32)
    base = np.array(base, np.float32)
    angle = rng.random() * 2 * math.pi
    texture_params = (math.cos(angle), math.sin(angle), uniform(rng, STRIPE_PERIOD) * radius, rng.random())
    texture = pick(rng, cfg.textures)
    shading = rng.random() < cfg.p_shading
    fur = _sample_fur(rng, cfg, radius) if rng.random() < cfg.p_fur else None
    glass = None
    if rng.random() < cfg.p_glass:
        cut = None
        if rng.random() < P_GLASS_CUT:
            a = rng.random() * 2 * math.pi
            cut = (math.cos(a), math.sin(a), uniform(rng, -GLASS_CUT_OFFSET, GLASS_CUT_OFFSET) * radius)
        glass = Glass(uniform(rng, cfg.glass_alpha), max(1.0, GLASS_RIM * radius), cut, uniform(rng, GLASS_TINT))
    return ObjectSpec(shape, name, base, second, texture, texture_params, radius, rotation,
                      shape.extents(rotation), light, shading, fur, glass)


# ------------------------------------------------------------------------ rendering
def crop_box(spec: ObjectSpec, width: int, height: int) -> tuple[int, int, int, int]:
    """The canvas crop that holds the whole drawing (clipped to the canvas)."""
    x0, y0, x1, y1 = spec.body_box()
    m = spec.margin
    return (max(0, int(x0 - m)), max(0, int(y0 - m)), min(width, int(np.ceil(x1 + m))),
            min(height, int(np.ceil(y1 + m))))


def _texture(spec: ObjectSpec, rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray) -> np.ndarray | None:
    """Mix weight ``[h, w]`` in [0, 1] between the two colours, or None for a flat colour."""
    c, s, period, phase = spec.texture_params
    if spec.texture == "gradient":
        return clip((dx * (c * 0.5 / spec.radius)) + (dy * (s * 0.5 / spec.radius) + 0.5))
    if spec.texture == "stripes":
        t = square_wave((dx * (c / period)) + (dy * (s / period) + phase), 1.0 / period)
        t += 1.0
        t *= 0.5
        return t
    if spec.texture == "noise":  # on a basis rounded up in size (fewer bases to cache), then cropped
        h, w = dy.shape[0], dx.shape[1]
        basis = field_basis(-(-h // TEXTURE_BUCKET) * TEXTURE_BUCKET, -(-w // TEXTURE_BUCKET) * TEXTURE_BUCKET,
                            TEXTURE_CELLS, 2)
        t = basis.render(basis.noise(rng, 1, TEXTURE_PERSISTENCE))[0, :h, :w]
        t *= TEXTURE_GAIN
        t += 0.5
        return clip(t, out=t)
    return None


def _shading(spec: ObjectSpec, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, idx: np.ndarray) -> tuple:
    """Diffuse + specular light on a dome over the (smoothed) outline: ``(shade, highlight)`` ``[h, w]``."""
    lx, ly, lz = spec.light.tolist()
    inv = (spec.shape.dome * np.float32(1.0 / spec.radius)).take(idx)
    nz = r * inv
    nz *= nz
    nz = clip(1.0 - nz, out=nz)
    nz = np.sqrt(nz, out=nz)
    ndl = (dx * lx) + (dy * ly)
    ndl *= inv
    nz *= lz
    ndl += nz
    ndl = clip(ndl, out=ndl)
    highlight = ndl * ndl
    for _ in range(SPECULAR_DOUBLINGS - 1):
        highlight *= highlight
    highlight *= SPECULAR
    ndl *= DIFFUSE
    ndl += AMBIENT
    return ndl, highlight


def _fur(fur: Fur, d: np.ndarray, r: np.ndarray, angle: np.ndarray, idx: np.ndarray) -> tuple:
    """Strand alpha ``[h, w]`` and the strands' mean brightness factor ``[h, w]``."""
    s = clip(d * (1.0 / fur.length), -FUR_ROOT, 1.0)
    s2 = s * s
    s += FUR_ROOT  # position along a full-length strand: 0 at the root
    grow = np.minimum(s * (1.0 / FUR_ROOT), 1.0)  # strands fade in over their root, none deeper inside
    half = 0.5 * fur.width
    transmit = bright = None
    for layer in fur.layers:
        n = layer.count
        phi = angle * (n / TABLE_SIZE)
        phi += s2 * layer.bend
        phi += layer.offset
        k = phi.astype(np.int32)  # strand number (the tables cover [0, 4 * count))
        phi -= k
        phi -= layer.centre.take(k)
        across = np.abs(phi, out=phi)
        across *= r
        across *= 2 * np.pi / n  # px from the strand's centre line
        t = s * layer.reach.take(k)  # 0 at the root, 1 at the tip
        a = (half + 0.5) - across
        a -= t * (half * (1.0 - FUR_TIP_WIDTH))  # tapering
        a = clip(a, 0.0, min(fur.width, 1.0), out=a)  # thinner than a pixel: partial coverage
        t = clip(1.0 - t, out=t)
        t *= grow
        t *= layer.opacity.take(k)
        a *= t
        if transmit is None:
            transmit, bright = 1.0 - a, a * layer.brightness.take(k)
        else:
            transmit *= 1.0 - a
            bright += a * layer.brightness.take(k)
    alpha = 1.0 - transmit
    bright /= np.maximum(alpha, 1e-6)
    if fur.window is not None:
        alpha *= fur.window.take(idx)
    return alpha, bright


def render_object(spec: ObjectSpec, rng: np.random.Generator, width: int, height: int,
                  lens: Lens | None = None) -> Drawing:
    """Draw ``spec`` on its crop of a ``width x height`` canvas: straight RGB ``[3, h, w]`` + alpha.

    ``lens`` (the background's vignette and grain) is applied to the colours too.
    """
    box = x0, y0, x1, y1 = crop_box(spec, width, height)
    dx = np.arange(x0 + 0.5 - spec.cx, x1 - spec.cx, dtype=np.float32)[None, :x1 - x0]
    dy = np.arange(y0 + 0.5 - spec.cy, y1 - spec.cy, dtype=np.float32)[:y1 - y0, None]
    p = evaluate(spec.shape, dx, dy, spec.radius, spec.rotation)
    alpha = coverage(p.d)

    weight = _texture(spec, rng, dx, dy)
    rgb = spec.color[:, None, None]
    if weight is not None:
        rgb = (spec.color2 - spec.color)[:, None, None] * weight + rgb
    shade, highlight = _shading(spec, dx, dy, p.r, p.idx) if spec.shading else (None, None)

    if spec.glass is not None:
        g = spec.glass
        inside = coverage(p.d + g.rim)
        if g.cut is not None:
            nx, ny, off = g.cut
            inside *= clip((dx * nx) + (dy * ny + (0.5 - off)))
        alpha *= 1.0 - inside * (1.0 - g.alpha)
        rgb = (1.0 - rgb) * (inside * g.tint) + rgb
        if highlight is not None:
            highlight *= inside + 1.0

    if spec.fur is not None:
        fur, bright = _fur(spec.fur, p.d, p.r, p.angle, p.idx)
        # Strands over the body: premultiplied colour factor divided by the total alpha.
        mix = alpha * (1.0 - fur)
        alpha = mix + fur
        mix += fur * bright
        mix /= np.maximum(alpha, 1e-6)
        shade = mix if shade is None else shade * mix
    if shade is None:
        out = np.broadcast_to(rgb, (3,) + alpha.shape)
    else:
        out = rgb * shade
        if highlight is not None:
            out += highlight
        out = clip(out, out=out)
    if lens is not None:
        out = lens.apply(out, box)
    return Drawing(box, out, alpha)
