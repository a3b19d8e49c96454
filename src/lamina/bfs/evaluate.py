"""Held-out evaluation of layered synthesis: procedural scenes with exact layers, any method, the metrics of
:mod:`lamina.metrics.synthesis`.

A *method* is a callable ``(background [H, W, 3], box, caption) -> layer [H, W, 4]`` (straight RGBA in
``[0, 1]``, full size), or ``-> (layer, background_out)`` when the method outputs a background of its own
(whose change where the layer is transparent is then measured); :func:`bfs_method` wraps a
:class:`~lamina.bfs.pipeline.BFSPipeline`. A case is
one background and its objects back to front: each object is drawn over the composite so far
(``multi`` mode), and every layer is compared with that object's exact layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import LaminaError
from ..layers import Layer, LayeredImage
from ..metrics.synthesis import background_change, caption_colour_hit, layer_metrics, shadow_touches_object

#: Held-out scenes start at this seed (training uses far smaller ones).
HELD_OUT_SEED = 900_000_000
Method = Callable[[np.ndarray, tuple[int, int, int, int], str], np.ndarray | tuple[np.ndarray, np.ndarray]]


@dataclass
class Target:
    """One object of a case: its box and caption, and its exact layer and alphas on the canvas."""

    box: tuple[int, int, int, int]
    caption: str
    layer: np.ndarray  # [H, W, 4] straight RGBA
    object_alpha: np.ndarray  # [H, W]
    effects_alpha: np.ndarray  # [H, W]


@dataclass
class Case:
    background: np.ndarray  # [H, W, 3]
    targets: list[Target]  # back to front
    seed: int

    def composite(self) -> np.ndarray:
        """The ground-truth composite ``[H, W, 3]``."""
        layers = [Layer(t.layer, name=f"object {k}") for k, t in enumerate(self.targets)]
        return LayeredImage(self.background, layers).composite()[:, :, :3]


def _on_canvas(crop: np.ndarray, offset: tuple[int, int], width: int, height: int) -> np.ndarray:
    out = np.zeros((height, width), np.float32)
    x0, y0 = offset
    out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return out


#: Object radius / canvas side of the held-out cases by mode (``small``: one object a few times smaller than the
#: model was trained on, on a larger canvas: a small box on a user's photo).
CASE_SCALES = {"single": (0.16, 0.32), "multi": (0.12, 0.22), "small": (0.04, 0.08)}
#: The ``small`` cases' canvas side, in multiples of the model's resolution (256 px for the built-in's 64).
SMALL_CANVAS = 4


def held_out_cases(count: int, resolution: int, mode: str = "single", seed: int = HELD_OUT_SEED,
                   photos: list[np.ndarray] | None = None) -> list[Case]:
    """``count`` held-out procedural cases at ``resolution`` px: ``single`` (one object), ``multi`` (2-4, back to
    front) or ``small`` (one object of :data:`CASE_SCALES`' small size). With ``photos`` the background is a random
    crop of one of them (the objects keep their effects)."""
    from ..data import SCENE_PRESETS, generate_scene
    from .data import _random_crop

    if mode not in CASE_SCALES:
        raise LaminaError(f"unknown case mode {mode!r}; choose from {', '.join(CASE_SCALES)}")
    preset = SCENE_PRESETS["multi" if mode == "multi" else "default"]
    config = replace(preset, size=resolution, scale=CASE_SCALES[mode])
    cases = []
    for i in range(count):
        scene = generate_scene(seed + i, config)
        targets = [Target(inst.box, inst.caption, inst.canvas(resolution, resolution),
                          _on_canvas(inst.object_alpha, inst.offset, resolution, resolution),
                          _on_canvas(inst.effects_alpha, inst.offset, resolution, resolution))
                   for inst in scene.instances]
        background = np.ascontiguousarray(scene.background)
        if photos:
            rng = np.random.default_rng(seed + i)
            background = _random_crop(photos[int(rng.integers(len(photos)))], rng, resolution)
        cases.append(Case(background, targets, seed + i))
    return cases


def bfs_method(pipe, steps: int | None = None, seed: int = 0, guidance_scale: float | None = None,
               crop: bool | None = None) -> Method:
    """A :class:`~lamina.bfs.pipeline.BFSPipeline` as a method (layer ``k`` of a run samples with ``seed + k``);
    ``steps``, ``guidance_scale`` and ``crop`` (its sampling window) default to the pipeline's."""
    counter = iter(range(10**9))

    def method(background: np.ndarray, box: tuple[int, int, int, int], caption: str) -> tuple[np.ndarray, ...]:
        out = pipe(background=background, box=box, prompt=caption, num_inference_steps=steps,
                   guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed + next(counter)),
                   crop=crop)
        return out.canvas(0), out.background.rgb

    return method


def pasted_method(case_targets: dict[tuple, np.ndarray]) -> Method:
    """Baseline (a): the exact object without its effects (an oracle cut-out), looked up by box and caption."""

    def method(background: np.ndarray, box: tuple[int, int, int, int], caption: str) -> np.ndarray:
        return case_targets[(box, caption)]

    return method


def object_only(target: Target) -> np.ndarray:
    """The target's layer with its effects removed: colour where the object is, alpha = object alpha."""
    layer = target.layer.copy()
    layer[:, :, 3] = target.object_alpha
    layer[:, :, :3] *= (target.object_alpha > 0)[:, :, None]
    return layer


def evaluate_method(method: Method, cases: list[Case], keep: list[LayeredImage] | None = None) -> dict[str, float]:
    """Mean metrics of ``method`` over ``cases``.

    Region IoUs and alpha SAD per layer; the largest change of the method's output background (its
    input unless it returns one) where the layer's alpha is 0; the share of "with a shadow" captions
    whose layer has a shadow touching the object; the share of layers whose object has the caption's colour
    (``colour_hit``); seconds per layer. ``keep`` collects the output
    :class:`LayeredImage` of each case."""
    rows: list[dict[str, float]] = []
    shadows, change, seconds = [], 0.0, 0.0
    for case in cases:
        result = LayeredImage(case.background, [])
        for k, target in enumerate(case.targets):
            current = result.composite()[:, :, :3]
            start = time.perf_counter()
            out = method(current, target.box, target.caption)
            seconds += time.perf_counter() - start
            layer, produced = (out if isinstance(out, tuple) else (out, current))
            layer = np.asarray(layer, np.float32)
            change = max(change, background_change(np.asarray(produced, np.float32), current, layer[:, :, 3]))
            result.layers.append(Layer(layer, name=f"{k}: {target.caption or 'layer'}"))
            rows.append(layer_metrics(layer, target.object_alpha, target.effects_alpha)
                        | {"colour_hit": caption_colour_hit(layer, target.caption)})
            if "with a shadow" in target.caption:
                shadows.append(shadow_touches_object(layer))
        if keep is not None:
            keep.append(result)
    out = {key: _nanmean([r[key] for r in rows]) for key in rows[0]}
    out["shadow_hit"] = _nanmean([float(hit) for hit in shadows])
    out["background_change"] = change
    out["sec_per_layer"] = seconds / max(len(rows), 1)
    return out


def _nanmean(values: list[float]) -> float:
    """Mean of the defined values (NaN: undefined for that layer, e.g. an IoU of two empty regions)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")
