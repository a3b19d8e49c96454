"""Training utilities shared by every method: EMA measured in images, run logs, atomic state.

Only what is truly the same across the methods' training loops lives here; each method
keeps its own loop, losses and checkpoint contents.
"""

from __future__ import annotations

import json
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
