"""Visual effects that belong to an object's layer (as BFS defines it): shadows and reflections.

* A **cast shadow** is the object's outline projected onto the ground plane from a distant
  light: a point at height ``h`` above the object's lowest point lands ``h * shear`` to the
  side and ``h * squash`` up (behind the object) or down (towards the viewer) the image.
  Its penumbra widens with ``h``, and a small contact shadow darkens the touching point.
* A **drop shadow** is the outline offset away from the light and blurred: the object
  floats in front of a wall.
* A **reflection** mirrors the object's drawing about its lowest row, fading with distance
  and tinted by the floor it lies on.

Shadows are near-black with partial alpha, so compositing the layer darkens the background.
Effects sit under the object in its layer (:func:`compose`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .noise import clip, smoothstep
from .objects import Drawing, ObjectSpec
from .shapes import evaluate

#: Contact shadow: half-width / object radius, half-height / penumbra, peak alpha / shadow strength.
CONTACT_WIDTH, CONTACT_HEIGHT, CONTACT_STRENGTH = 0.35, 2.0, 1.2
#: Cast shadows lose this fraction of their strength at their far end.
SHADOW_FADE = 0.5
#: Penumbra growth per pixel of height above the ground.
PENUMBRA_GROWTH = 0.06
#: Reflections: how much the floor colour tints them, and how much they darken.
REFLECTION_TINT, REFLECTION_DARKEN = 0.3, 0.85


@dataclass
class ShadowSpec:
    kind: str  # "cast" or "drop"
    strength: float  # peak alpha
    softness: float  # penumbra px at the contact point (cast) or blur px (drop)
    color: np.ndarray  # [3]
    shear: float = 0.0  # cast: horizontal shift per px of height
    squash: float = 0.0  # cast: vertical extent per px of height (> 0: behind, up the image)
    offset: tuple[float, float] = (0.0, 0.0)  # drop: (dx, dy) px


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    box = max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    return box if box[0] < box[2] and box[1] < box[3] else None


def cast_shadow(obj: ObjectSpec, sh: ShadowSpec, width: int, height: int) -> Drawing | None:
    """The object's shadow on the ground plane through its lowest point."""
    bx0, by0, bx1, base = obj.body_box()
    tall = base - by0
    reach = sh.softness + PENUMBRA_GROWTH * tall + 1.0
    ends = (bx0, bx1, bx0 + sh.shear * tall, bx1 + sh.shear * tall)
    box = _clip_box(min(ends) - reach, base - max(sh.squash, 0.0) * tall - reach, max(ends) + reach,
                    base + max(-sh.squash, 0.0) * tall + reach + CONTACT_HEIGHT * sh.softness, width, height)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    x = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5)
    y = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5)
    # Height above the ground of the point casting the shadow (negative: beyond the contact line).
    h = (base - y) / sh.squash
    p = evaluate(obj.shape, x - (np.maximum(h, 0.0) * sh.shear + obj.cx), (base - h) - obj.cy, obj.radius,
                 obj.rotation)
    a = p.d * (-1.0 / (sh.softness + PENUMBRA_GROWTH * np.abs(h))) + 0.5
    a = smoothstep(a)
    a *= sh.strength * (1.0 - SHADOW_FADE * clip(h * (1.0 / max(tall, 1.0))))
    # Contact shadow: a flat soft ellipse under the lowest point.
    bx, by = obj.bottom()
    qx = ((x - bx) / (CONTACT_WIDTH * obj.radius)) ** 2
    qy = ((y - by) / (CONTACT_HEIGHT * sh.softness)) ** 2
    c = clip(1.0 - (qx + qy))
    c *= c * min(1.0, CONTACT_STRENGTH * sh.strength)
    a += c * (1.0 - a)
    return Drawing(box, sh.color[:, None, None], a)


def drop_shadow(obj: ObjectSpec, sh: ShadowSpec, width: int, height: int) -> Drawing | None:
    """The object's outline shifted by ``sh.offset`` and blurred by ``sh.softness``."""
    bx0, by0, bx1, by1 = obj.body_box()
    ox, oy = sh.offset
    m = sh.softness + 1.0
    box = _clip_box(bx0 + ox - m, by0 + oy - m, bx1 + ox + m, by1 + oy + m, width, height)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - obj.cx - ox)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - obj.cy - oy)
    p = evaluate(obj.shape, dx, dy, obj.radius, obj.rotation)
    a = smoothstep(p.d * (-0.5 / sh.softness) + 0.5)
    a *= sh.strength
    return Drawing(box, sh.color[:, None, None], a)


def reflection(obj: Drawing, base: float, strength: float, fade: float, background: np.ndarray) -> Drawing | None:
    """Mirror ``obj`` about row ``ceil(base)``; alpha fades to 0 over ``fade`` px.

    ``background`` is the planar ``[3, H, W]`` canvas under it (the floor tints the reflection).
    """
    x0, y0, x1, _ = obj.box
    height = background.shape[1]
    m = int(np.ceil(base))
    n = min(m - y0, int(np.ceil(fade)), height - m)
    if n <= 0 or m - y0 > obj.alpha.shape[0]:
        return None
    rows = slice(m - n - y0, m - y0)
    ramp = clip(1.0 - (np.arange(n, dtype=np.float32)[:, None] + 0.5) / fade)
    a = obj.alpha[rows][::-1] * (ramp * ramp * strength)
    rgb = obj.rgb[:, rows][:, ::-1] * (REFLECTION_DARKEN * (1.0 - REFLECTION_TINT))
    rgb += background[:, m:m + n, x0:x1] * (REFLECTION_DARKEN * REFLECTION_TINT)
    return Drawing((x0, m, x1, m + n), rgb, a)


def union_box(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Smallest box ``(x0, y0, x1, y1)`` containing all ``boxes``."""
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


@dataclass
class Composed:
    """One instance's layer on a crop: straight RGBA planes and its object/effects alphas."""

    box: tuple[int, int, int, int]
    planes: np.ndarray  # [4, h, w] straight RGBA
    object_alpha: np.ndarray  # [h, w]
    effects_alpha: np.ndarray  # [h, w]


def compose(obj: Drawing, effects: list[Drawing]) -> Composed:
    """Object over its effects (effects over each other in list order), on the union crop.

    Colour is 0 where the layer is fully transparent.
    """
    if not effects:
        planes = np.empty((4,) + obj.alpha.shape, np.float32)
        np.multiply(obj.rgb, obj.alpha > 0.0, out=planes[:3])
        planes[3] = obj.alpha
        return Composed(obj.box, planes, obj.alpha, np.zeros_like(obj.alpha))
    box = union_box([obj.box] + [e.box for e in effects])
    x0, y0, x1, y1 = box
    acc = np.zeros((4, y1 - y0, x1 - x0), np.float32)  # premultiplied RGB + alpha
    for d in effects:
        _over(acc, d, x0, y0)
    effects_alpha = acc[3].copy()
    object_alpha = np.zeros_like(effects_alpha)
    _over(acc, obj, x0, y0)
    ox0, oy0, ox1, oy1 = obj.box
    object_alpha[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0] = obj.alpha
    acc[:3] /= np.maximum(acc[3], 1e-12)
    clip(acc[:3], out=acc[:3])
    return Composed(box, acc, object_alpha, effects_alpha)


def _over(acc: np.ndarray, d: Drawing, x0: int, y0: int) -> None:
    """Premultiplied ``d`` over the accumulator ``acc`` (whose crop starts at ``x0, y0``)."""
    dx0, dy0, dx1, dy1 = d.box
    region = acc[:, dy0 - y0:dy1 - y0, dx0 - x0:dx1 - x0]
    region *= 1.0 - d.alpha
    region[:3] += d.rgb * d.alpha
    region[3] += d.alpha
