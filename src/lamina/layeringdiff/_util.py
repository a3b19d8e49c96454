"""Small helpers shared by the LayeringDiff stages: optional imports, bounding boxes, resizing."""

from __future__ import annotations

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


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` -> ``[h, w(, C)]`` ``float32``, bilinear (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as nnf

    t = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = nnf.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t[0, 0].numpy() if array.ndim == 2 else t[0].permute(1, 2, 0).numpy()
