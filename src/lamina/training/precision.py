"""Arithmetic precision of training: float32, TF32 or bfloat16 autocast (torch imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Training precisions: ``fp32`` (IEEE float32), ``tf32`` (float32 storage, TF32 tensor-core matmuls
#: and convolutions), ``bf16`` (bfloat16 autocast, TF32 for what stays float32). Parameters,
#: gradients and optimizer states are float32 in every mode; on a CPU ``tf32`` is ``fp32``.
PRECISIONS = ("fp32", "tf32", "bf16")


def _float32_backends() -> list[Any]:
    """The backend settings objects that carry ``fp32_precision`` (CUDA matmuls, cuDNN convolutions)."""
    import torch

    return [torch.backends.cuda.matmul, torch.backends.cudnn.conv]


@contextmanager
def float32_precision(precision: str) -> Iterator[None]:
    """Inside, float32 matmuls and convolutions on CUDA use TF32 (``tf32``, ``bf16``) or IEEE (``fp32``).

    PyTorch's own default lets cuDNN convolutions use TF32; ``fp32`` here does not. The previous
    settings are restored on exit.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    backends = _float32_backends()
    saved = [b.fp32_precision for b in backends]
    for backend in backends:
        backend.fp32_precision = "ieee" if precision == "fp32" else "tf32"
    try:
        yield
    finally:
        for backend, value in zip(backends, saved, strict=True):
            backend.fp32_precision = value


def autocast(precision: str, device_type: str) -> Any:
    """The forward passes' autocast (a ``torch.autocast``): bfloat16 for ``precision == "bf16"``, else disabled."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
