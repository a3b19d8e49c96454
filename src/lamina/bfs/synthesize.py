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


def synthesize_layers(pipe: Any, background: np.ndarray | Layer, boxes: Sequence[Sequence[int]],
                      prompts: Sequence[str], *, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, seed: int = 0, progress: Any = None,
                      crop: bool | None = None) -> LayeredImage:
    """Place one captioned object per box onto ``background``, back to front.

    Args:
        pipe: a :class:`~lamina.bfs.pipeline.BFSPipeline`.
        background: ``[H, W, 3]``: ``uint8`` / ``uint16`` (kept as a compact layer) or float32 in ``[0, 1]``,
            or a :class:`~lamina.Layer` (used as it is); kept bit-exact as the background layer. A ``uint16``
            background makes a 16-bit result (:attr:`~lamina.LayeredImage.bit_depth`), else 8 bits.
        boxes: ``(x0, y0, x1, y1)`` per object (exclusive end), inside the image.
        prompts: one caption per box; it names the layer.
        num_inference_steps: default: the pipeline's.
        guidance_scale: default: the pipeline's (classifier-free guidance scale, or the guidance-embedding
            value of a guidance-distilled transformer).
        seed: layer ``k`` samples with seed ``seed + k``.
        progress: optional wrapper of an iterable (e.g. :func:`lamina.progress.progress`).
        crop: sample each object in a window around its box (default: the pipeline's ``box_share``) or, ``False``,
            over the whole background (:meth:`~lamina.bfs.pipeline.BFSPipeline.sampling_window`).
    Returns:
        ``LayeredImage(background, [layer_1, ..., layer_n])``; layer ``k`` was generated over the
        composite of the background and layers ``< k``.

    Each object is drawn in the pipeline's sampling window around its box
    (:meth:`~lamina.bfs.pipeline.BFSPipeline.sampling_window`). A large background
    (:meth:`~lamina.bfs.pipeline.BFSPipeline.is_bounded`) is never copied as a ``float32`` canvas: the
    composite so far is downscaled to the model's working size a band of rows at a time, and each layer
    covers only the rectangle its alpha reaches (an offset layer stored in integers of the result's
    depth: what the writers store, rounded once).
    """
    if len(boxes) != len(prompts) or not boxes:
        raise LaminaError(f"give one --prompt per --box (got {len(boxes)} box(es) and {len(prompts)} prompt(s))")
    if not isinstance(background, Layer):
        background = Layer(background, name="background")
    height, width = background.height, background.width
    boxes = [check_box(box, width, height) for box in boxes]
    depth = 16 if background.stored.dtype == np.uint16 else 8
    result = LayeredImage(background, [], metadata={"method": "bfs"}, bit_depth=depth)
    bounded = bool(getattr(pipe, "is_bounded", lambda h, w: False)(height, width))
    pairs = list(zip(boxes, prompts, strict=True))
    for k, (box, prompt) in enumerate(progress(pairs) if progress is not None else pairs):
        generator = torch.Generator().manual_seed(seed + k)
        if bounded:
            from .pipeline import BAND_ROWS

            layer = pipe.layer_from_bands(result.iter_composite(rows=BAND_ROWS), height, width, box, prompt,
                                          num_inference_steps, guidance_scale, generator, crop=crop,
                                          layer_dtype=np.uint16 if depth == 16 else np.uint8)
        else:
            current = result.composite()[:, :, :3]
            out = pipe(background=current, box=box, prompt=prompt, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, generator=generator, crop=crop)
            layer = out.layers[0]
        name = _unique(layer.name, [existing.name for existing in result.layers])
        layer.name = name
        result.layers.append(layer)
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
