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

from ..errors import LaminaError
from ..layers import Layer, LayeredImage, parse_box
from ._util import BUILTIN_MODEL, BUILTIN_NAME
from .disassembly import Decomposer, Decomposition, psnr
from .foreground import ForegroundConfig, ForegroundEstimate, as_rgb, foreground_from_box, foreground_from_mask

__all__ = ["BUILTIN_MODEL", "BUILTIN_NAME", "METHODS", "Region", "decompose_image", "make_decomposer", "peel",
           "regions_from_args"]

METHODS = ("classical", "layeringdiff")

# ----------------------------------------------------------------- the pipeline
Region = tuple[str, Any]  # ("box", (x0, y0, x1, y1)), ("mask", array) or ("prompt", "the cat")


def regions_from_args(box: Any = None, mask: Any = None, layers: int | None = None,
                      prompt: Any = None) -> list[Region]:
    """Normalise ``box=`` / ``mask=`` / ``prompt=`` (one, or a list front to back) into regions.

    A box is ``(x0, y0, x1, y1)`` or the string ``"x0,y0,x1,y1"``; a mask is an array; a
    prompt is a phrase naming the object. Several objects need a list of them, front-most
    first; their number is checked against ``layers``.
    """
    if sum(v is not None for v in (box, mask, prompt)) != 1:
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
) -> list[tuple[ForegroundEstimate, Decomposition]]:
    """Peel objects front to back: each region is found in the background left by the previous one.

    ``grounder`` (a :class:`~lamina.layeringdiff.grounding.Grounder`) turns prompt regions into alpha.
    """
    current = as_rgb(image)
    config = config or ForegroundConfig()
    out = []
    for kind, value in regions:
        if kind == "box":
            estimate = foreground_from_box(current, value, config)
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


def make_decomposer(method: str = "layeringdiff", model: Any = None, **options: Any) -> Decomposer:
    """The decomposer of a method name: ``"classical"`` or ``"layeringdiff"`` (FBDD; ``model``: a pipeline,
    a saved folder or hub id, or ``None`` / ``"builtin"`` for :data:`BUILTIN_MODEL`). ``options`` go to the
    decomposer's constructor."""
    if method == "classical":
        from .classical import ClassicalConfig, ClassicalDecomposer

        return ClassicalDecomposer(ClassicalConfig(**options))
    if method == "layeringdiff":
        from .fbdd import FBDDDecomposer, load_builtin

        if model is None or (isinstance(model, str) and model == BUILTIN_NAME):
            model = load_builtin()
        return FBDDDecomposer.load(model, **options)
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
) -> LayeredImage:
    """Decompose a photo into a background and one layer per object (LayeringDiff stages 2 and 3).

    Args:
        image: ``[H, W, 3]`` RGB (uint8, uint16 or float in ``[0, 1]``), any size.
        box: the object's box ``(x0, y0, x1, y1)`` (exclusive end) or ``"x0,y0,x1,y1"``, or a
            list of them, **front-most object first**.
        mask: the object's mask ``[H, W]`` (> 0.5 marks it), or a list, front-most first.
        prompt: a phrase naming the object (``"the cat"``), or a list, front-most first: found
            by Grounding DINO, SAM and ViTMatte (:class:`~lamina.layeringdiff.grounding.Grounder`).
        layers: number of objects to peel; must match the number of boxes/masks/prompts when given.
        method: ``"layeringdiff"`` (FBDD; ``model`` is a folder saved by
            :meth:`FBDDPipeline.save_pretrained` or a hub id, default the built-in model) or
            ``"classical"`` (GrabCut/pymatting/inpainting, no weights).
        options: keyword arguments of the decomposer (``num_inference_steps``, ``seed``, ... for
            FBDD; :class:`~lamina.layeringdiff.classical.ClassicalConfig` fields for classical).
        config: foreground-stage options (trimap widths, matting method, effects region).
        decomposer: use this instead of ``method``/``model``.
        grounder: the :class:`~lamina.layeringdiff.grounding.Grounder` for prompts (default models otherwise).
    Returns:
        A :class:`LayeredImage` with the completed background and the objects back to front
        (``object_1`` is the front-most); ``metadata`` records the method, the regions and
        ``recomposition_psnr`` (dB) of the layers against the input.
    """
    rgb = as_rgb(image)
    regions = regions_from_args(box, mask, layers, prompt)
    decomposer = decomposer or make_decomposer(method, model, **(options or {}))
    peeled = peel(rgb, regions, decomposer, config, grounder)
    objects = []
    for k, ((kind, value), (_, part)) in enumerate(zip(regions, peeled, strict=True), start=1):
        meta: dict[str, Any] = {"order": k, "effects": bool(part.effects_alpha.any())}
        if kind == "box":
            meta["box"] = [int(v) for v in value]
        elif kind == "prompt":
            meta["prompt"] = value
        objects.append((f"object_{k}", part.foreground, meta))
    result = LayeredImage(peeled[-1][1].background,
                          [Layer(rgba, name=name, metadata=meta) for name, rgba, meta in reversed(objects)])
    result.metadata = {
        "method": decomposer.name,
        "layers": len(regions),
        "regions": [kind for kind, _ in regions],
        "recomposition_psnr": round(psnr(result.composite()[:, :, :3], rgb), 3),
    }
    return result
