"""Every knob of the procedural scene generator, in one frozen dataclass, plus named presets."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .captions import COLORS

#: Shape families of foreground objects (see :mod:`lamina.data.shapes`).
SHAPES = ("ellipse", "superellipse", "polygon", "star", "blob", "flower", "heart", "ring")
#: Surface textures of foreground objects.
TEXTURES = ("flat", "gradient", "noise", "stripes")
#: Procedural background families (see :mod:`lamina.data.backgrounds`).
BACKGROUNDS = ("gradient", "noise", "stripes", "checker", "tiles", "floor", "bokeh")

Range = tuple[float, float]


@dataclass(frozen=True)
class SceneConfig:
    """All parameters of :func:`lamina.data.generate_scene`.

    Ranges ``(lo, hi)`` are sampled uniformly per object or per scene. Lengths in pixels
    are marked ``px``; the others are relative (to the canvas's short side, or to the
    object's radius where the name says so).
    """

    # Canvas and objects.
    size: int | tuple[int, int] = 256  # square side, or (width, height), px
    min_objects: int = 1
    max_objects: int = 1
    scale: Range = (0.14, 0.3)  # object radius / short side of the canvas
    spread: float = 1.0  # 0: objects centred, 1: anywhere inside the canvas (and along the floor)
    shapes: tuple[str, ...] = SHAPES
    textures: tuple[str, ...] = TEXTURES
    colors: tuple[str, ...] = tuple(COLORS)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    # Object material.
    p_shading: float = 0.85  # probability of volumetric shading (else flat colour)
    p_fur: float = 0.45  # probability of a furry/hairy boundary
    fur_length: Range = (0.08, 0.32)  # strand length / object radius
    fur_spacing: Range = (0.8, 2.2)  # px between neighbouring strand roots, per strand layer
    fur_width: Range = (0.35, 1.1)  # px at the root (thinner than a pixel gives partial alpha)
    fur_layers: int = 2  # overlapping strand layers (more: denser, crossing strands)
    fur_bend: Range = (-0.5, 0.5)  # sideways drift of a strand tip / strand length (curved strands)
    p_fur_partial: float = 0.35  # fur only on part of the boundary (a tuft of hair) instead of all round
    p_glass: float = 0.25  # probability of a semi-transparent (glassy) region
    glass_alpha: Range = (0.3, 0.7)
    # Visual effects (part of the foreground layer).
    p_shadow: float = 0.6
    p_drop_shadow: float = 0.3  # share of shadows dropped on a wall behind (offset copy), not cast on the ground
    shadow_strength: Range = (0.35, 0.75)  # peak shadow alpha
    shadow_softness: Range = (0.006, 0.03)  # penumbra at contact / short side; grows with distance
    shadow_length: Range = (0.25, 0.9)  # cast shadow length / object height
    p_reflection: float = 0.25
    reflection_strength: Range = (0.25, 0.6)  # reflection alpha at the floor line
    reflection_fade: Range = (0.3, 0.9)  # fade-out distance / object height
    # Background.
    bg_softness: Range = (0.6, 5.0)  # edge width of background patterns, px (large = defocused)
    p_vignette: float = 0.5
    p_grain: float = 0.3
    grain: Range = (0.005, 0.025)  # std of luminance noise added to the background

    def __post_init__(self) -> None:
        for f in fields(self):  # lists (from JSON or a CLI) become tuples, so configs stay hashable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be an int or (width, height) of at least 16 px, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        for name, allowed in (("shapes", SHAPES), ("textures", TEXTURES), ("colors", tuple(COLORS)),
                              ("backgrounds", BACKGROUNDS)):
            chosen = getattr(self, name)
            unknown = sorted(set(chosen) - set(allowed))
            if not chosen or unknown:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got unknown {unknown}")
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1], got {getattr(self, f.name)}")
        if not 0.0 <= self.spread <= 1.0:
            raise ValueError(f"spread must be in [0, 1], got {self.spread}")
        if self.fur_layers < 1:
            raise ValueError(f"fur_layers must be >= 1, got {self.fur_layers}")

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def with_size(self, size: int | tuple[int, int]) -> SceneConfig:
        """A copy at another canvas size."""
        return replace(self, size=size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneConfig:
        """Inverse of :meth:`to_dict` (e.g. the ``config`` of a written ``dataset.json``);
        unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown SceneConfig fields: {', '.join(unknown)}")
        return cls(**data)


DEFAULT_CONFIG = SceneConfig()

#: Named configurations: ``default`` (one object, all effects: LayeringDiff/BFS-style
#: training), ``single`` (one large, often furry object near the centre and no effects:
#: FurryGAN-style object-centric data), ``multi`` (2-4 objects, back to front) and
#: ``simple`` (flat colours, plain shapes, no fur/glass/effects: fast smoke tests).
SCENE_PRESETS: dict[str, SceneConfig] = {
    "default": DEFAULT_CONFIG,
    "single": SceneConfig(scale=(0.25, 0.38), spread=0.3, p_fur=0.7, p_shadow=0.0, p_reflection=0.0),
    "multi": SceneConfig(min_objects=2, max_objects=4, scale=(0.1, 0.2)),
    "simple": SceneConfig(shapes=("ellipse", "polygon", "star"), textures=("flat",), backgrounds=("gradient", "noise"),
                          p_shading=0.0, p_fur=0.0, p_glass=0.0, p_shadow=0.0, p_reflection=0.0, p_grain=0.0),
}
