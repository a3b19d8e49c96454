"""Procedural layered scenes with exact ground truth: :func:`generate_scene` and :class:`Scene`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..layers import Layer, LayeredImage
from ._rand import pick, randint, uniform
from .backgrounds import BackgroundInfo, render_background
from .captions import object_phrase, scene_caption
from .config import DEFAULT_CONFIG, SceneConfig
from .effects import ShadowSpec, cast_shadow, compose, drop_shadow, reflection, union_box
from .noise import clip
from .objects import ObjectSpec, render_object, sample_object
from .shapes import quantise_rotation, sample_shape

#: Objects on a floor stand between these fractions of the way from the horizon to the bottom.
FLOOR_DEPTH = (0.12, 0.97)
#: ... and shrink towards the horizon to this fraction of their size.
FAR_SCALE = 0.55
#: Probability that a cast shadow falls behind the object (light in front) rather than towards the viewer.
P_SHADOW_BEHIND = 0.7
#: Drop shadows: offset and extra blur as fractions of the object radius.
DROP_OFFSET, DROP_BLUR = (0.06, 0.2), (0.02, 0.1)
#: Smallest object radius and shadow penumbra, px.
MIN_RADIUS, MIN_SOFTNESS = 2.0, 0.6
#: Shadow colour: near black, each channel up to this value.
SHADOW_TINT = 0.07
#: Cast shadows lean away from the light by this share of the light's slant.
SHADOW_SHEAR = (0.3, 1.0)
#: The light (unnormalised): sideways, upwards and towards-the-viewer component ranges.
LIGHT_X, LIGHT_UP, LIGHT_FRONT = (-0.8, 0.8), (0.2, 0.8), (0.4, 0.9)


@dataclass
class Instance:
    """One object's layer (the object over its own shadow/reflection) on a crop of the canvas.

    Arrays are channel-last views of planar ``float32`` storage, values in [0, 1].
    """

    name: str  # layer name, e.g. "star_1"
    rgba: np.ndarray  # [h, w, 4] straight RGBA
    offset: tuple[int, int]  # (left, top) of the crop on the canvas
    object_alpha: np.ndarray  # [h, w] alpha of the object alone (fur included)
    effects_alpha: np.ndarray  # [h, w] alpha of its effects alone
    box: tuple[int, int, int, int]  # canvas box (x0, y0, x1, y1), exclusive end, of object alpha > 0
    caption: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def canvas(self, width: int, height: int) -> np.ndarray:
        """The layer placed on a transparent ``[height, width, 4]`` canvas."""
        out = np.zeros((height, width, 4), np.float32)
        x0, y0 = self.offset
        h, w = self.rgba.shape[:2]
        out[y0:y0 + h, x0:x0 + w] = self.rgba
        return out


@dataclass
class Scene:
    """A procedural layered sample with exact ground truth.

    Images are ``float32`` channel-last in [0, 1] (views of planar storage, like
    :attr:`lamina.Layer.pixels`). ``composite`` is exactly ``foreground`` over
    ``background`` with lamina's "over" operator; ``foreground`` is the instances composited
    back to front, and its alpha is ``object_alpha + effects_alpha * (1 - object_alpha)``.
    """

    background: np.ndarray  # [H, W, 3] opaque
    foreground: np.ndarray  # [H, W, 4] straight RGBA: objects over their effects
    object_alpha: np.ndarray  # [H, W]
    effects_alpha: np.ndarray  # [H, W] shadows and reflections
    composite: np.ndarray  # [H, W, 3]
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive end: all objects (object alpha > 0)
    caption: str
    instances: list[Instance]  # back to front
    seed: int
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.background.shape[1], self.background.shape[0]

    def to_layered(self) -> LayeredImage:
        """Background plus one layer per instance (cropped, at its offset), with metadata."""
        layers = [Layer(inst.rgba, name=inst.name, offset=inst.offset,
                        metadata={"caption": inst.caption, "box": list(inst.box), **inst.attributes})
                  for inst in self.instances]
        meta = {"method": "procedural", "seed": self.seed, "caption": self.caption, "box": list(self.box),
                **self.attributes}
        return LayeredImage(Layer(self.background, name="background"), layers, metadata=meta)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Channel-first tensors (sharing memory where possible): ``composite`` ``[3, H, W]``,
        ``foreground`` ``[4, H, W]``, ``background`` ``[3, H, W]``, ``object_alpha`` and
        ``effects_alpha`` ``[1, H, W]``, ``box`` int64 ``[4]``."""
        return {
            "composite": _chw(self.composite),
            "foreground": _chw(self.foreground),
            "background": _chw(self.background),
            "object_alpha": _chw(self.object_alpha[:, :, None]),
            "effects_alpha": _chw(self.effects_alpha[:, :, None]),
            "box": torch.tensor(self.box, dtype=torch.int64),
        }


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _hwc(planes: np.ndarray) -> np.ndarray:
    return planes.transpose(1, 2, 0)


# ------------------------------------------------------------------------ sampling
def _sample_light(rng: np.random.Generator) -> np.ndarray:
    """Unit vector towards a light above the scene (x right, y down, z towards the viewer)."""
    light = np.array([uniform(rng, LIGHT_X), -uniform(rng, LIGHT_UP), uniform(rng, LIGHT_FRONT)], np.float32)
    return light / np.sqrt(light @ light)


def _sample_spec(rng: np.random.Generator, cfg: SceneConfig, info: BackgroundInfo, light: np.ndarray) -> ObjectSpec:
    """Shape, size, material and position of one object."""
    w, h = cfg.size
    shape = sample_shape(rng, pick(rng, cfg.shapes))
    rotation = quantise_rotation(uniform(rng, -shape.tilt, shape.tilt))
    radius = uniform(rng, cfg.scale) * min(w, h)
    depth = uniform(rng, FLOOR_DEPTH)
    if info.horizon is not None:
        radius *= FAR_SCALE + (1.0 - FAR_SCALE) * depth
    radius = max(radius, MIN_RADIUS)
    spec = sample_object(rng, cfg, shape, radius, rotation, light)
    x0, y0, x1, y1, _ = spec.extent
    x0, y0, x1, y1 = x0 * radius, y0 * radius, x1 * radius, y1 * radius
    spec.cx = _between(rng, -x0, w - x1, cfg.spread)
    if info.horizon is None:
        spec.cy = _between(rng, -y0, h - y1, cfg.spread)
    else:  # stand on the floor: the lowest point at the sampled depth, the top inside the canvas
        base = info.horizon + depth * (h - info.horizon)
        spec.cy = min(max(base, y1 - y0) - y1, h - y1)
    return spec


def _between(rng: np.random.Generator, lo: float, hi: float, spread: float) -> float:
    """Uniform over the middle ``spread`` of ``[lo, hi]`` (its middle if empty)."""
    return 0.5 * (lo + hi) + (hi - lo) * spread * (rng.random() - 0.5) if hi > lo else 0.5 * (lo + hi)


def _sample_shadow(rng: np.random.Generator, cfg: SceneConfig, spec: ObjectSpec, info: BackgroundInfo) -> ShadowSpec:
    lx, ly, _ = spec.light
    strength = uniform(rng, cfg.shadow_strength)
    softness = max(MIN_SOFTNESS, uniform(rng, cfg.shadow_softness) * min(cfg.size))
    color = (rng.random(3) * SHADOW_TINT).astype(np.float32)
    if info.horizon is None and rng.random() < cfg.p_drop_shadow:
        norm = max(math.hypot(lx, ly), 1e-3)
        dist = uniform(rng, DROP_OFFSET) * spec.radius
        blur = softness + uniform(rng, DROP_BLUR) * spec.radius
        return ShadowSpec("drop", strength, blur, color, offset=(-lx / norm * dist, -ly / norm * dist))
    squash = uniform(rng, cfg.shadow_length) * (1.0 if rng.random() < P_SHADOW_BEHIND else -1.0)
    shear = -lx / max(abs(ly), LIGHT_UP[0]) * uniform(rng, SHADOW_SHEAR)
    return ShadowSpec("cast", strength, softness, color, shear=shear, squash=squash)


# ---------------------------------------------------------------------- assembly
def _alpha_box(alpha: np.ndarray, x0: int, y0: int) -> tuple[int, int, int, int]:
    """Box of ``alpha > 0`` on the canvas (the crop starts at ``x0, y0``)."""
    rows, cols = alpha.max(axis=1).nonzero()[0], alpha.max(axis=0).nonzero()[0]
    if rows.size == 0:
        return x0, y0, x0 + 1, y0 + 1
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _render_instance(rng: np.random.Generator, cfg: SceneConfig, spec: ObjectSpec, info: BackgroundInfo,
                     background: np.ndarray, index: int) -> tuple[Instance, np.ndarray]:
    """One object and its effects: the :class:`Instance` and its planar ``[4, h, w]`` layer."""
    w, h = cfg.size
    drawing = render_object(spec, rng, w, h, info.lens)
    shadow = shadow_drawing = mirrored = None
    if rng.random() < cfg.p_shadow:
        shadow = _sample_shadow(rng, cfg, spec, info)
        shadow_drawing = (cast_shadow if shadow.kind == "cast" else drop_shadow)(spec, shadow, w, h)
    if rng.random() < cfg.p_reflection:
        _, y0, _, base = spec.body_box()
        fade = uniform(rng, cfg.reflection_fade) * (base - y0)
        mirrored = reflection(drawing, base, uniform(rng, cfg.reflection_strength), fade, background)
    layer = compose(drawing, [e for e in (shadow_drawing, mirrored) if e is not None])  # reflection over shadow

    attributes = {"shape": spec.shape.family, "noun": spec.shape.noun, "color": spec.color_name,
                  "texture": spec.texture, "fur": spec.fur is not None, "glass": spec.glass is not None,
                  "shadow": shadow.kind if shadow is not None else None, "reflection": mirrored is not None}
    caption = object_phrase(spec.color_name, spec.shape.noun, spec.texture, attributes["fur"], attributes["glass"],
                            shadow is not None, mirrored is not None)
    box = _alpha_box(drawing.alpha, drawing.box[0], drawing.box[1])
    name = f"{spec.shape.noun.replace(' ', '_')}_{index + 1}"
    inst = Instance(name, _hwc(layer.planes), layer.box[:2], layer.object_alpha, layer.effects_alpha, box, caption,
                    attributes)
    return inst, layer.planes


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` in a dataset with seed ``seed`` (distinct for ``index < 2**32``)."""
    return (int(seed) << 32) + int(index)


def generate_scene(seed: int, config: SceneConfig = DEFAULT_CONFIG) -> Scene:
    """One random layered scene, fully determined by ``seed`` and ``config``.

    Returns a :class:`Scene` of ``config.size`` with a procedural background, 1 or more
    objects (``config.min_objects..max_objects``, back to front by how low they stand)
    and their effects.
    """
    rng = np.random.default_rng(seed)
    w, h = config.size
    family = pick(rng, config.backgrounds)
    bg, info = render_background(rng, config, family)
    light = _sample_light(rng)
    count = randint(rng, config.min_objects, config.max_objects + 1)
    specs = sorted((_sample_spec(rng, config, info, light) for _ in range(count)), key=lambda s: s.bottom()[1])

    fg = np.zeros((4, h, w), np.float32)
    object_alpha = np.zeros((h, w), np.float32)
    effects_alpha = np.zeros((h, w), np.float32)
    instances, crops = [], []
    for i, spec in enumerate(specs):
        inst, planes = _render_instance(rng, config, spec, info, bg, i)
        instances.append(inst)
        x0, y0 = inst.offset
        y1, x1 = y0 + planes.shape[1], x0 + planes.shape[2]
        crops.append((x0, y0, x1, y1))
        dst = fg[:, y0:y1, x0:x1]
        oa, ea = object_alpha[y0:y1, x0:x1], effects_alpha[y0:y1, x0:x1]
        if count == 1:
            dst[:] = planes
            oa[:] = inst.object_alpha
            ea[:] = inst.effects_alpha
        else:  # premultiplied "over" of this layer onto the ones behind it
            a = planes[3]
            dst *= 1.0 - a
            dst[:3] += planes[:3] * a
            dst[3] += a
            oa += inst.object_alpha * (1.0 - oa)
            ea += inst.effects_alpha * (1.0 - ea)
    if count > 1:  # back to straight colour
        x0, y0, x1, y1 = union_box(crops)
        u = fg[:, y0:y1, x0:x1]
        u[:3] /= np.maximum(u[3], 1e-12)
        clip(u, out=u)
    # The same in-place lerp as LayeredImage.composite over an opaque background: C + a (F - C).
    composite = torch.from_numpy(bg.copy())
    composite.lerp_(torch.from_numpy(fg[:3]), torch.from_numpy(fg[3:]))
    caption = scene_caption([inst.caption for inst in instances], info.phrase)
    attributes = {"background": family, "pattern": info.pattern, "horizon": info.horizon}
    return Scene(_hwc(bg), _hwc(fg), object_alpha, effects_alpha, _hwc(composite.numpy()),
                 union_box([inst.box for inst in instances]), caption, instances, int(seed), attributes)
