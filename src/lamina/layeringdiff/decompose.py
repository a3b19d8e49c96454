"""LayeringDiff's entry points: regions -> foreground stage -> a decomposer, front to back.

* :func:`peel` runs the foreground stage (:mod:`.foreground`, or a
  :class:`~lamina.layeringdiff.grounding.Grounder` for prompts) and a
  :class:`~lamina.layeringdiff.disassembly.Decomposer` recursively: each peeled background
  is the image of the next object;
* :func:`decompose_image` is the whole of stages 2 and 3 on one photo, returning a
  :class:`~lamina.LayeredImage`; :func:`make_decomposer` picks the decomposer of a method name.

The layer maths and the decomposer contract are in :mod:`.disassembly`; this module imports
the decomposers lazily and nothing imports it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LaminaError
from ..layers import Layer, LayeredImage, parse_box, pil_to_array
from ._util import BUILTIN_MODEL, BUILTIN_NAME
from .bounded import BoundedConfig, is_large, peel_bounded, recomposition_psnr
from .disassembly import Decomposer, Decomposition, psnr
from .foreground import (
    ForegroundConfig,
    ForegroundEstimate,
    as_rgb,
    foreground_from_box,
    foreground_from_mask,
    without_tight_box,
)

__all__ = ["BUILTIN_MODEL", "BUILTIN_NAME", "METHODS", "Region", "decompose_image", "make_decomposer", "peel",
           "regions_from_args"]

METHODS = ("classical", "layeringdiff")
#: Photos with a longer side above 1024 px are decomposed in windows at a bounded resolution (:mod:`.bounded`).
DEFAULT_BOUNDED = BoundedConfig()

# ----------------------------------------------------------------- the pipeline
#: ("box", (x0, y0, x1, y1)), ("mask", array), ("prompt", "the cat") or ("auto", None): the most salient object left.
Region = tuple[str, Any]


def regions_from_args(box: Any = None, mask: Any = None, layers: int | None = None,
                      prompt: Any = None, auto: bool = False) -> list[Region]:
    """Normalise ``box=`` / ``mask=`` / ``prompt=`` (one, or a list front to back) into regions.

    A box is ``(x0, y0, x1, y1)`` or the string ``"x0,y0,x1,y1"``; a mask is an array; a
    prompt is a phrase naming the object. Several objects need a list of them, front-most
    first; their number is checked against ``layers``. With ``auto=True`` and none of them,
    ``layers`` (default 1) automatic regions: the most salient object, then the next one in
    what is left (:mod:`.saliency`).
    """
    given = sum(v is not None for v in (box, mask, prompt))
    if given == 0 and auto:
        return [("auto", None)] * (1 if layers is None else int(layers))
    if given != 1:
        raise LaminaError("give the object as a box, a mask or a prompt (exactly one of them)")
    if prompt is not None:
        phrases = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) and p.strip() for p in phrases):
            raise LaminaError(f"prompt must be a phrase or a list of phrases, got {prompt!r}")
        regions = [("prompt", p) for p in phrases]
    elif box is not None:
        try:
            single = isinstance(box, str) or (len(box) == 4 and all(np.isscalar(v) for v in box))
            boxes = [box] if single else list(box)
        except TypeError:
            raise LaminaError(f"box must be x0,y0,x1,y1 or a list of them, got {box!r}") from None
        regions = [("box", parse_box(b) if isinstance(b, str) else b) for b in boxes]
    else:
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        regions = [("mask", m) for m in masks]
    if not regions:
        raise LaminaError("the list of boxes or masks is empty")
    if layers is not None and layers != len(regions):
        kind = {"box": "boxes", "mask": "masks", "prompt": "prompts"}[regions[0][0]]
        raise LaminaError(f"{layers} layer(s) need {layers} {kind} front to back, got {len(regions)} "
                          "(each object to peel needs its own box, mask or prompt)")
    return regions


def peel(
    image: Any,
    regions: Sequence[Region],
    decomposer: Decomposer,
    config: ForegroundConfig | None = None,
    grounder: Any = None,
    saliency: Any = None,
) -> list[tuple[ForegroundEstimate, Decomposition]]:
    """Peel objects front to back: each region is found in the background left by the previous one.

    ``grounder`` (a :class:`~lamina.layeringdiff.grounding.Grounder`) turns prompt regions into alpha,
    and, when given, box and automatic regions too (its SAM segments the box; without one, GrabCut
    does). ``saliency``: the :class:`~lamina.layeringdiff.saliency.SaliencyConfig` of automatic regions.
    """
    current = as_rgb(image)
    config = config or ForegroundConfig()
    out = []
    for kind, value in regions:
        box_config = config
        if kind == "auto":
            from .saliency import salient_boxes

            kind, value = "box", salient_boxes(current, 1, saliency)[0]
            box_config = without_tight_box(config)
        if kind == "box":
            estimate = (foreground_from_box(current, value, box_config) if grounder is None
                        else grounder.estimate_box(current, value, box_config))
        elif kind == "prompt":
            if grounder is None:
                from .grounding import Grounder

                grounder = Grounder()
            estimate = grounder.estimate(current, value, config)
        else:
            estimate = foreground_from_mask(current, value, config)
        decomposition = decomposer.decompose(current, estimate.alpha, estimate.effects_region)
        out.append((estimate, decomposition))
        current = decomposition.background
    return out


def make_decomposer(method: str = "layeringdiff", model: Any = None, *, device: Any = None, dtype: Any = None,
                    **options: Any) -> Decomposer:
    """The decomposer of a method name: ``"classical"`` or ``"layeringdiff"`` (FBDD; ``model``: a pipeline,
    a saved folder or hub id, or ``None`` / ``"builtin"`` for :data:`BUILTIN_MODEL`). ``device`` / ``dtype``
    (:mod:`lamina.devices` names, ``None``: the CPU in float32) place an FBDD model; the classical path
    runs on the CPU. ``options`` go to the decomposer's constructor."""
    if method == "classical":
        from .classical import ClassicalConfig, ClassicalDecomposer

        return ClassicalDecomposer(ClassicalConfig(**options))
    if method == "layeringdiff":
        from .fbdd import FBDDDecomposer, load_builtin_lite

        if model is None or (isinstance(model, str) and model == BUILTIN_NAME):
            model = load_builtin_lite()  # pure PyTorch: no diffusers import (issue 23)
        return FBDDDecomposer.load(model, device=device, dtype=dtype, **options)
    raise LaminaError(f"unknown decomposition method {method!r}; choose from {', '.join(METHODS)}")


def decompose_image(
    image: Any,
    *,
    box: Any = None,
    mask: Any = None,
    prompt: Any = None,
    layers: int | None = None,
    method: str = "layeringdiff",
    model: Any = None,
    options: dict[str, Any] | None = None,
    config: ForegroundConfig | None = None,
    decomposer: Decomposer | None = None,
    grounder: Any = None,
    split_effects: bool = False,
    names: Sequence[str] | None = None,
    device: Any = None,
    dtype: Any = None,
    saliency: Any = None,
    bounded: BoundedConfig | None = DEFAULT_BOUNDED,
) -> LayeredImage:
    """Decompose a photo into a background and one layer per object (LayeringDiff stages 2 and 3).

    Args:
        image: a PIL image, a NumPy array ``[H, W, 3]`` (uint8, uint16 or float in ``[0, 1]``) or
            a torch tensor ``[3, H, W]`` / ``[1, 3, H, W]`` in ``[0, 1]``; any size.
        box: the object's box ``(x0, y0, x1, y1)`` (exclusive end) or ``"x0,y0,x1,y1"``, or a
            list of them, **front-most object first**. With a ``grounder``, SAM segments it.
        mask: the object's mask ``[H, W]`` (> 0.5 marks it; array, PIL image or tensor), or a list,
            front-most first.
        prompt: a phrase naming the object (``"the cat"``), or a list, front-most first: found
            by Grounding DINO, SAM and ViTMatte (:class:`~lamina.layeringdiff.grounding.Grounder`).
        layers: number of objects to peel; must match the number of boxes/masks/prompts when given.
            With no box, mask or prompt: **automatic mode**, the ``layers`` (default 1) most salient
            objects (:mod:`.saliency`, no weights; SAM instead of GrabCut with a ``grounder``).
        method: ``"layeringdiff"`` (FBDD; ``model`` is a folder saved by
            :meth:`FBDDPipeline.save_pretrained` or a hub id, default the built-in model) or
            ``"classical"`` (GrabCut/matting/inpainting, no weights).
        options: keyword arguments of the decomposer (``num_inference_steps``, ``seed``, ... for
            FBDD; :class:`~lamina.layeringdiff.classical.ClassicalConfig` fields for classical).
        config: foreground-stage options (trimap widths, matting method, effects region).
        decomposer: use this instead of ``method``/``model``.
        grounder: the :class:`~lamina.layeringdiff.grounding.Grounder` for prompts (default models otherwise).
        split_effects: write each object's shadows and reflections as their own layers under the object
            (blend modes multiply and screen; see :func:`split_effects_layers`).
        names: the layers' names, front-most first (default: the prompt's words, else ``object_1``...).
        device, dtype: where the FBDD model runs (:mod:`lamina.devices`; ``None``: CPU, float32).
        saliency: :class:`~lamina.layeringdiff.saliency.SaliencyConfig` of automatic mode.
        bounded: :class:`~lamina.layeringdiff.bounded.BoundedConfig`: a photo with a longer side above
            its ``max_side`` is decomposed object by object in windows at a bounded resolution, so
            memory does not grow with the photo (:mod:`.bounded`; the foreground layers then hold
            only their boxes, with offsets); ``None``: always the whole photo at full resolution.
    Returns:
        A :class:`LayeredImage` with the completed background and the objects back to front
        (the front-most last, on top); ``metadata`` records the method, the regions and
        ``recomposition_psnr`` (dB) of the layers against the input.
    """
    photo = pil_to_array(image, (3,)) if isinstance(image, Image.Image) else image
    if not (isinstance(photo, np.ndarray) and photo.ndim == 3 and photo.dtype in (np.uint8, np.uint16)):
        photo = as_rgb(photo)
    large = is_large(*photo.shape[:2], bounded)
    rgb = _check_photo(photo) if large else as_rgb(photo)
    regions = regions_from_args(box, mask, layers, prompt, auto=True)
    if names is not None and len(names) != len(regions):
        raise LaminaError(f"{len(names)} layer name(s) for {len(regions)} object(s)")
    decomposer = decomposer or make_decomposer(method, model, device=device, dtype=dtype, **(options or {}))
    taken: set[str] = set()

    def make_layers(k: int, part: Decomposition | None, planes: np.ndarray | None = None,
                    offset: tuple[int, int] = (0, 0), effects: bool | None = None) -> list[Layer]:
        """The ``k``-th object's layer(s), front-most first (``planes``: its layer as planes, used as they are;
        ``effects``: whether it holds effects, when ``part`` is not there to say)."""
        kind, value = regions[k - 1]
        if effects is None:
            effects = part is not None and bool(part.effects_alpha.any())
        meta: dict[str, Any] = {"order": k, "effects": effects}
        if kind == "box":
            meta["box"] = [int(v) for v in value]
        elif kind == "prompt":
            meta["prompt"] = value
        elif kind == "auto":
            meta["auto"] = True
        name = _unique_name(names[k - 1] if names is not None else
                            value.strip() if kind == "prompt" else f"object_{k}", taken)
        if part is None and planes is None:  # nothing of the object was found: an empty layer keeps the order
            return [Layer(np.zeros((1, 1, 4), np.float32), name=name, offset=offset, metadata=meta)]
        if split_effects and effects and part is not None:
            out = split_effects_layers(part, name, meta)
            for layer in out:
                layer.offset = offset
            return out
        if planes is not None:
            return [Layer.from_planes(planes, name, offset=offset, metadata=meta)]
        return [Layer(part.foreground, name=name, offset=offset, metadata=meta)]

    if large:
        result = peel_bounded(rgb, regions, decomposer,
                              lambda k, w: make_layers(k, None) if w is None else make_layers(
                                  k, w.part, w.planes, w.offset, w.effects),
                              config, grounder, saliency, bounded, keep_alphas=split_effects)
        recomposition = recomposition_psnr(result, rgb, bounded.band_rows)
    else:
        peeled = peel(rgb, regions, decomposer, config, grounder, saliency)
        stack: list[Layer] = []  # front-most first
        for k, (_, part) in enumerate(peeled, start=1):
            stack += make_layers(k, part)
        result = LayeredImage(peeled[-1][1].background, list(reversed(stack)))
        recomposition = psnr(result.composite()[:, :, :3], rgb)
    result.metadata = {
        "method": decomposer.name,
        "layers": len(regions),
        "regions": [kind for kind, _ in regions],
        "recomposition_psnr": round(recomposition, 3),
    }
    return result


def _check_photo(array: np.ndarray) -> np.ndarray:
    """A large photo kept in its own dtype: ``[H, W, 3]`` uint8 or uint16 as it is, float checked for ``[0, 1]``."""
    if array.shape[2] != 3:
        raise LaminaError(f"image: expected shape [H, W, 3] (channel-last), got {tuple(array.shape)}")
    if array.dtype in (np.uint8, np.uint16):
        return array
    return as_rgb(array)


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when taken (layer names must differ in every format)."""
    base, k = name or "object", 1
    while name in taken or name in ("background", ""):
        k += 1
        name = f"{base} ({k})"
    taken.add(name)
    return name


#: Slack (in ``[0, 1]`` units) when deciding whether an effect pixel darkens or brightens every channel.
BLEND_TOLERANCE = 1e-4


def split_effects_layers(part: Decomposition, name: str, metadata: dict[str, Any] | None = None) -> list[Layer]:
    """One peeled object as its own layer over separate effects layers (shadow, reflection): front-most first.

    The decomposition's single layer ``(t, f)`` (``t = a + e (1 - a)``, object alpha ``a``,
    effects opacity ``e``) splits exactly: the object ``(a, f)`` over the effects ``(e, f)``
    composite to ``a f + (1 - a) e f + (1 - t) B = t f + (1 - t) B`` over the background ``B``
    the object was peeled from. The effect pixels are then sorted by what they do to ``B``
    (W3C separable blending over an opaque backdrop, exact for each):

    * **shadow** (every channel darker, ``f <= B``): blend mode ``multiply`` with colour
      ``M = f / B``, since ``e B M + (1 - e) B = e f + (1 - e) B``;
    * **reflection** (every channel lighter, ``f >= B``): ``screen`` with ``M = (f - B) / (1 - B)``,
      since ``e (B + M - B M) + (1 - e) B = e f + (1 - e) B``;
    * anything else (channels moving both ways): a ``normal`` layer with colour ``f``.

    So a shadow keeps darkening (and a reflection keeps lighting) whatever a user paints
    beneath it, and each can be toggled alone. Each layer is returned only when it has pixels
    (names ``"<name> shadow"``, ``"<name> reflection"``, ``"<name> effects"``); without effects, the
    one object layer comes back. Layers hold full-canvas ``[H, W, 4]`` straight RGBA.
    """
    meta = dict(metadata or {})
    effects = part.effects_alpha
    if not effects.any():
        return [Layer(part.foreground, name=name, metadata=meta)]
    colour = part.foreground[:, :, :3]
    backdrop = part.background
    obj = np.concatenate([colour, part.object_alpha[:, :, None]], axis=2).astype(np.float32)
    shown = effects > 0
    darker = shown & np.all(colour <= backdrop + BLEND_TOLERANCE, axis=2)
    lighter = shown & ~darker & np.all(colour >= backdrop - BLEND_TOLERANCE, axis=2)
    mixed = shown & ~darker & ~lighter
    with np.errstate(divide="ignore", invalid="ignore"):
        multiply = np.where(backdrop > 1e-6, colour / backdrop, 1.0)
        screen = np.where(backdrop < 1 - 1e-6, (colour - backdrop) / (1.0 - backdrop), 0.0)
    layers = [Layer(obj, name=name, metadata={**meta, "effects": False})]
    for suffix, where, tint, blend in (("shadow", darker, multiply, "multiply"),
                                       ("reflection", lighter, screen, "screen"),
                                       ("effects", mixed, colour, "normal")):
        if where.any():
            rgba = np.concatenate([np.where(where[:, :, None], np.clip(tint, 0.0, 1.0), 0.0),
                                   np.where(where, effects, 0.0)[:, :, None]], axis=2).astype(np.float32)
            layers.append(Layer(rgba, name=f"{name} {suffix}", metadata={"effects_of": name}, blend_mode=blend))
    return layers
