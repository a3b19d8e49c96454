"""Small helpers shared by the LayeringDiff stages: optional imports, bounding boxes, the built-in model's place,
and the plumbing of the FBDD pipelines (tensor helpers shared with other methods are in :mod:`lamina.tensors`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LaminaError


def import_cv2() -> Any:
    """OpenCV, or a :class:`LaminaError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise LaminaError("the classical LayeringDiff path needs OpenCV: pip install opencv-python-headless") from None
    return cv2


def import_pymatting() -> Any:
    """pymatting, or a :class:`LaminaError` saying how to install it."""
    try:
        import pymatting
    except ImportError:
        raise LaminaError("the classical LayeringDiff path needs pymatting: pip install pymatting") from None
    return pymatting


def bbox_slices(select: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of ``select`` (non-empty), grown by ``margin``, clipped."""
    rows, cols = np.nonzero(select)
    h, w = select.shape
    return (slice(max(int(rows.min()) - margin, 0), min(int(rows.max()) + margin + 1, h)),
            slice(max(int(cols.min()) - margin, 0), min(int(cols.max()) + margin + 1, w)))


#: The built-in FBDD model (trained on procedural scenes, see ``lamina layeringdiff train --preset builtin``).
BUILTIN_MODEL = Path(__file__).parent / "assets" / "builtin"
#: The name that selects :data:`BUILTIN_MODEL` wherever a model is given (``--model builtin``).
BUILTIN_NAME = "builtin"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """``{"generator": generator}`` for schedulers whose ``step`` takes one (DDIM with eta > 0), else ``{}``."""
    import inspect

    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def pipeline_inputs(image: Any, alpha: Any, output_type: str, device: Any) -> tuple[Any, Any]:
    """An FBDD pipeline call's checked inputs: image ``[N, 3, H, W]`` and alpha ``[N, 1, H, W]`` on ``device``."""
    from ..tensors import image_and_alpha

    if output_type not in ("np", "pt"):
        raise LaminaError(f"output_type must be 'np' or 'pt', got {output_type!r}")
    return image_and_alpha(image, alpha, device)
