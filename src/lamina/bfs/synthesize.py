"""Back-to-front layered synthesis: one BFS layer per (box, caption) pair, each drawn over the previous composite.

:func:`synthesize_layers` is what ``lamina synthesize`` runs: the returned :class:`LayeredImage`
holds the caller's background **unchanged** (bit-exact) plus one named layer per pair, back to front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import LaminaError
from ..layers import Layer, LayeredImage, check_box


def synthesize_layers(pipe: Any, background: np.ndarray, boxes: Sequence[Sequence[int]], prompts: Sequence[str],
                      *, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                      seed: int = 0, progress: Any = None) -> LayeredImage:
    """Place one captioned object per box onto ``background``, back to front.

    Args:
        pipe: a :class:`~lamina.bfs.pipeline.BFSPipeline`.
        background: ``[H, W, 3]`` float32 in ``[0, 1]`` (kept bit-exact as the background layer).
        boxes: ``(x0, y0, x1, y1)`` per object (exclusive end), inside the image.
        prompts: one caption per box; it names the layer.
        num_inference_steps: default: the pipeline's.
        guidance_scale: default: the pipeline's (classifier-free guidance scale, or the guidance-embedding
            value of a guidance-distilled transformer).
        seed: layer ``k`` samples with seed ``seed + k``.
        progress: optional wrapper of an iterable (e.g. :func:`lamina.progress.progress`).
    Returns:
        ``LayeredImage(background, [layer_1, ..., layer_n])``; layer ``k`` was generated over the
        composite of the background and layers ``< k``.
    """
    if len(boxes) != len(prompts) or not boxes:
        raise LaminaError(f"give one --prompt per --box (got {len(boxes)} box(es) and {len(prompts)} prompt(s))")
    height, width = background.shape[:2]
    boxes = [check_box(box, width, height) for box in boxes]
    result = LayeredImage(Layer(background, name="background"), [], metadata={"method": "bfs"})
    pairs = list(zip(boxes, prompts, strict=True))
    for k, (box, prompt) in enumerate(progress(pairs) if progress is not None else pairs):
        current = result.composite()[:, :, :3]
        out = pipe(background=current, box=box, prompt=prompt, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed + k))
        layer = out.layers[0]
        name = _unique(layer.name, [existing.name for existing in result.layers])
        result.layers.append(Layer(layer.pixels, name=name, offset=layer.offset, metadata=layer.metadata))
    result.metadata["prompts"] = list(prompts)
    result.metadata["boxes"] = [list(b) for b in boxes]
    return result


def _unique(name: str, taken: list[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... if a layer already has it."""
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


#: Objects the demo places on each background (back to front).
DEMO_OBJECTS = 2


def demo_scenes(count: int, size: int, seed: int, progress: Any = None) -> list[LayeredImage]:
    """``count`` procedural backgrounds (``size`` px) with :data:`DEMO_OBJECTS` captioned objects each, placed
    back to front by the built-in BFS model where a procedural ``multi`` scene of the same seed has them."""
    import dataclasses

    from ..data import SCENE_PRESETS, generate_scene
    from .train import load_model

    pipe = load_model("builtin")
    pipe.set_progress_bar_config(disable=True)
    config = dataclasses.replace(SCENE_PRESETS["multi"], size=size, max_objects=DEMO_OBJECTS,
                                 min_objects=DEMO_OBJECTS, scale=(0.14, 0.22))
    out = []
    for i in progress(range(count)) if progress is not None else range(count):
        scene = generate_scene(seed + i, config)
        boxes = [inst.box for inst in scene.instances]
        prompts = [inst.caption for inst in scene.instances]
        out.append(synthesize_layers(pipe, np.ascontiguousarray(scene.background), boxes, prompts, seed=seed + i))
    return out
