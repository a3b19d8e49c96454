"""Scalar draws from a ``numpy.random.Generator`` at a fraction of the cost of its methods.

``rng.uniform(a, b)`` and ``rng.integers(n)`` cost a few microseconds per scalar call;
``rng.random()`` a fraction of one. A scene draws hundreds of scalars, so these add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def uniform(rng: np.random.Generator, lo: float | tuple[float, float], hi: float | None = None) -> float:
    """Uniform in ``[lo, hi)``; ``lo`` may be a ``(lo, hi)`` range."""
    if hi is None:
        lo, hi = lo  # type: ignore[misc]
    return lo + (hi - lo) * rng.random()  # type: ignore[operator]


def randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Integer in ``[lo, hi)``."""
    return lo + int(rng.random() * (hi - lo))


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """One element, uniformly."""
    return items[int(rng.random() * len(items))]
