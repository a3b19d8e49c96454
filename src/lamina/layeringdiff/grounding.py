"""Text -> foreground, and the text-to-image stage: LayeringDiff stages 1 and 2 with pretrained models.

* :class:`Grounder`: phrase -> box (Grounding DINO) -> mask (SAM) -> trimap -> alpha
  (ViTMatte; or closed-form matting when no matting model is given), all through ``transformers``
  (``AutoProcessor`` + ``GroundingDinoForObjectDetection``, ``SamProcessor`` + ``SamModel``,
  ``VitMatteImageProcessor`` + ``VitMatteForImageMatting``), each by hub id or local folder.
* :func:`generate_composite`: any diffusers text-to-image pipeline (``DiffusionPipeline``
  by hub id or folder) -> the composite ``[H, W, 3]``.

Loading (:func:`lamina.hub.from_pretrained`): a folder is read locally; a hub id is first
looked up in the local cache, then asked of the hub through the Hugging Face client (which
honours ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and its timeouts); a failure is a one-line
:class:`~lamina.errors.LaminaError` that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LaminaError
from ..hub import from_pretrained
from ..layers import to_uint8
from .foreground import (
    TRIMAP_BACKGROUND,
    TRIMAP_FOREGROUND,
    ForegroundConfig,
    ForegroundEstimate,
    as_rgb,
    effects_region,
    foreground_from_mask,
    trimap_from_mask,
)

#: The model roles of the grounding chain, as named on the command line (``--grounding-model ROLE=ID``).
ROLES = ("detector", "segmenter", "matting")


def parse_model_roles(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("segmenter=ID", ...)`` -> ``{"segmenter": "ID"}``; a malformed pair is a one-line error."""
    out = {}
    for pair in pairs:
        role, sep, value = pair.partition("=")
        if not sep or role not in ROLES or not value:
            raise LaminaError(f"--grounding-model {pair!r}: use detector=ID, segmenter=ID or matting=ID")
        out[role] = value
    return out


#: Defaults: the models the paper's chain uses, in their smallest public sizes.
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam-vit-base"
DEFAULT_MATTING = "hustvl/vitmatte-small-composition-1k"


@dataclass(frozen=True)
class GroundingConfig:
    """Models and thresholds of the text -> alpha chain.

    Attributes:
        detector: Grounding DINO (hub id or folder).
        segmenter: SAM (hub id or folder).
        matting: ViTMatte (hub id or folder); ``None``: closed-form matting on SAM's mask (no weights).
        box_threshold: least detection score of a box.
        text_threshold: least score of a text token to count towards the phrase.
        device: torch device of the three models (``"auto"``: CUDA, then MPS, else CPU;
            :func:`lamina.devices.resolve_device`).
        dtype: their precision (``"auto"``: float16 on a GPU, float32 on the CPU;
            :func:`lamina.devices.resolve_dtype`).
    """

    detector: str = DEFAULT_DETECTOR
    segmenter: str = DEFAULT_SEGMENTER
    matting: str | None = DEFAULT_MATTING
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    device: str = "auto"
    dtype: str = "auto"


class Grounder:
    """Find an object named by a phrase and return its soft alpha (models load on first use)."""

    def __init__(self, config: GroundingConfig | None = None) -> None:
        from ..devices import resolve_device, resolve_dtype

        self.config = config or GroundingConfig()
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self._models: dict[str, tuple[Any, Any]] = {}

    def _inputs(self, inputs: Any) -> dict[str, Any]:
        """A processor's output on the models' device; floating tensors in their dtype, the rest as they are."""
        import torch

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            return value

        return {key: move(value) for key, value in inputs.items()}

    def _load(self, role: str) -> tuple[Any, Any]:
        if role not in self._models:
            from ..extras import require

            tf = require("transformers", "prompt")

            c = self.config
            ident, (processor_cls, model_cls), what = {
                "detector": (c.detector, (tf.AutoProcessor, tf.GroundingDinoForObjectDetection), "detector"),
                "segmenter": (c.segmenter, (tf.SamProcessor, tf.SamModel), "segmenter (SAM)"),
                "matting": (c.matting, (tf.VitMatteImageProcessor, tf.VitMatteForImageMatting), "matting model"),
            }[role]
            processor = from_pretrained(processor_cls, ident, f"{what} processor")
            model = from_pretrained(model_cls, ident, what).to(self.device, self.dtype).eval()
            self._models[role] = (processor, model)
        return self._models[role]

    def detect(self, image: Any, phrase: str) -> tuple[int, int, int, int]:
        """The best box ``(x0, y0, x1, y1)`` (exclusive end) of ``phrase`` in ``image`` ``[H, W, 3]``."""
        import torch

        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        processor, model = self._load("detector")
        text = phrase.strip().lower().rstrip(".") + "."  # Grounding DINO's phrase format
        inputs = processor(images=to_uint8(rgb), text=text, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**self._inputs(inputs))
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        result = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.config.box_threshold,
            text_threshold=self.config.text_threshold, target_sizes=[(h, w)])[0]
        if len(result["scores"]) == 0:
            raise LaminaError(f"no {phrase!r} found in the image (box score < {self.config.box_threshold}); "
                              "rephrase it, lower the threshold, or give a --box")
        x0, y0, x1, y1 = result["boxes"][int(torch.argmax(result["scores"]))].tolist()
        x0, y0 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
        return x0, y0, int(np.clip(np.ceil(x1), x0 + 1, w)), int(np.clip(np.ceil(y1), y0 + 1, h))

    def segment(self, image: Any, box: tuple[int, int, int, int]) -> np.ndarray:
        """SAM's mask ``bool`` ``[H, W]`` of the object in ``box``."""
        import torch

        rgb = as_rgb(image)
        processor, model = self._load("segmenter")
        inputs = processor(images=to_uint8(rgb), input_boxes=[[[float(v) for v in box]]], return_tensors="pt")
        with torch.no_grad():
            outputs = model(**self._inputs(inputs), multimask_output=False)
        masks = processor.post_process_masks(outputs.pred_masks.float().cpu(), inputs["original_sizes"].cpu(),
                                             inputs["reshaped_input_sizes"].cpu())[0]
        mask = np.asarray(masks[0, 0], bool)
        if not mask.any():  # an untrained or confused SAM: fall back to the box itself
            mask = np.zeros(rgb.shape[:2], bool)
            x0, y0, x1, y1 = box
            mask[y0:y1, x0:x1] = True
        return mask

    def matte(self, image: Any, trimap: np.ndarray) -> np.ndarray:
        """ViTMatte's alpha ``float32`` ``[H, W]`` for a trimap (0 / 0.5 / 1); sure pixels keep their value."""
        import torch

        rgb = as_rgb(image)
        processor, model = self._load("matting")
        inputs = processor(images=to_uint8(rgb), trimaps=to_uint8(trimap), return_tensors="pt")
        with torch.no_grad():
            alphas = model(**self._inputs(inputs)).alphas
        h, w = trimap.shape
        alpha = np.clip(alphas[0, 0, :h, :w].float().cpu().numpy(), 0.0, 1.0).astype(np.float32)
        alpha[trimap >= TRIMAP_FOREGROUND] = 1.0
        alpha[trimap <= TRIMAP_BACKGROUND] = 0.0
        return alpha

    def estimate(self, image: Any, phrase: str, config: ForegroundConfig | None = None) -> ForegroundEstimate:
        """The foreground stage from text: box, mask, trimap, alpha and the effects region."""
        rgb = as_rgb(image)
        return self.estimate_box(rgb, self.detect(rgb, phrase), config)

    def estimate_box(self, image: Any, box: Any, config: ForegroundConfig | None = None) -> ForegroundEstimate:
        """The foreground stage from a box ``(x0, y0, x1, y1)``: SAM's mask, trimap, alpha (ViTMatte or matting)."""
        from ..layers import check_box

        config = config or ForegroundConfig()
        rgb = as_rgb(image)
        mask = self.segment(rgb, check_box(box, rgb.shape[1], rgb.shape[0]))
        if self.config.matting is None:
            return foreground_from_mask(rgb, mask, config)
        trimap = trimap_from_mask(mask, *config.band_widths(*mask.shape))
        alpha = self.matte(rgb, trimap)
        region = effects_region(mask, config.effects_below, config.effects_around) if config.effects else None
        return ForegroundEstimate(alpha=alpha, trimap=trimap, mask=mask, effects_region=region)


def generate_composite(
    model: str | Path,
    prompt: str,
    *,
    size: int | None = None,
    num_inference_steps: int = 30,
    guidance_scale: float = 7.0,
    seed: int = 0,
    device: Any = "auto",
    dtype: Any = "auto",
) -> np.ndarray:
    """LayeringDiff stage 1: a composite ``float32`` ``[H, W, 3]`` from any diffusers text-to-image pipeline.

    The pipeline is loaded in ``dtype`` and run on ``device`` (``"auto"``: the GPU if there is one,
    in float16; the CPU in float32; see :mod:`lamina.devices`). The noise is drawn on the CPU
    from ``seed``, so a seed gives the same picture on every device (up to its arithmetic).
    """
    import torch
    from diffusers import DiffusionPipeline

    from ..devices import resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    pipeline = from_pretrained(DiffusionPipeline, model, "text-to-image pipeline", torch_dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=os.environ.get("LAMINA_PROGRESS", "1") == "0")
    kwargs: dict[str, Any] = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                              "generator": torch.Generator(device="cpu").manual_seed(seed), "output_type": "np"}
    if size is not None:
        kwargs.update(height=size, width=size)
    try:
        images = pipeline(prompt, **kwargs).images
    except TypeError as exc:
        raise LaminaError(f"{model}: not a text-to-image pipeline ({exc})") from None
    return np.clip(np.asarray(images[0], np.float32), 0.0, 1.0)
