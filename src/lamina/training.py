"""Training utilities shared by every method: EMA measured in images, run logs, atomic state.

Only what is truly the same across the methods' training loops lives here; each method
keeps its own loop, losses and checkpoint contents.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .io.atomic import atomic_output


def ema_beta(batch_size: int, halflife_nimg: float, cur_nimg: int = 0, rampup: float | None = None) -> float:
    """Per-step EMA decay ``0.5 ** (batch_size / half-life)`` with the half-life in images.

    With ``rampup`` the half-life is capped at ``cur_nimg * rampup`` so early averages
    follow the quickly changing weights (as in StyleGAN2-ADA / EDM).
    """
    halflife = float(halflife_nimg)
    if rampup is not None:
        halflife = min(halflife, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


@torch.no_grad()
def ema_update_(ema: torch.nn.Module, net: torch.nn.Module, beta: float, copy_buffers: bool = True) -> None:
    """In place: ``ema = beta * ema + (1 - beta) * net`` over parameters; buffers copied if asked."""
    for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    if copy_buffers:
        for b_ema, b in zip(ema.buffers(), net.buffers(), strict=True):
            b_ema.copy_(b)


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    with atomic_output(path, overwrite=True) as staged:
        torch.save(state, staged)


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record (a line of the run's ``log.jsonl``)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step``: they were written after the checkpoint a resumed run starts from."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _log_step(line) <= step]
    if len(kept) != len(lines):
        with atomic_output(path, overwrite=True) as staged:
            staged.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _log_step(line: str) -> float:
    """The step of a log line; a torn or blank line (a crash mid-write) counts as past any step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


# ----------------------------------------------------------------------------- arithmetic precision
#: Training precisions: ``fp32`` (IEEE float32), ``tf32`` (float32 storage, TF32 tensor-core matmuls
#: and convolutions), ``bf16`` (bfloat16 autocast, TF32 for what stays float32). Parameters,
#: gradients and optimizer states are float32 in every mode; on a CPU ``tf32`` is ``fp32``.
PRECISIONS = ("fp32", "tf32", "bf16")


def _float32_backends() -> list[Any]:
    """The backend settings objects that carry ``fp32_precision`` (CUDA matmuls, cuDNN convolutions)."""
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


def autocast(precision: str, device_type: str) -> torch.autocast:
    """The forward passes' autocast: bfloat16 for ``precision == "bf16"``, disabled otherwise."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ----------------------------------------------------------------------------- time limits
def time_is_up(start: float, limit_s: float | None, accelerator=None) -> bool:
    """Whether ``limit_s`` seconds have passed since ``start`` (``time.time()``), on any process.

    With several processes every one gets the same answer (a sum over processes), so all stop,
    and save, at the same step. ``limit_s=None``: never.
    """
    if limit_s is None:
        return False
    late = time.time() - start > limit_s
    if accelerator is None or accelerator.num_processes == 1:
        return late
    flag = torch.tensor([float(late)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
