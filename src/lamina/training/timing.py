"""Time limits (``--max-minutes``) that every process of a distributed run agrees on."""

from __future__ import annotations

import time
from typing import Any


def time_is_up(start: float, limit_s: float | None, accelerator: Any = None) -> bool:
    """Whether ``limit_s`` seconds have passed since ``start`` (``time.time()``), on any process.

    With several processes every one gets the same answer (a sum over processes), so all stop,
    and save, at the same step. ``limit_s=None``: never.
    """
    if limit_s is None:
        return False
    late = time.time() - start > limit_s
    if accelerator is None or accelerator.num_processes == 1:
        return late
    import torch

    flag = torch.tensor([float(late)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
