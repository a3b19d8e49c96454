"""The memory budget of every reader: a file's whole decoded size is checked before decoding.

A small file can describe a huge image (a decompression bomb) or name one large image
many times (an OpenRaster ``stack.xml`` or a ``layers.json`` listing the same PNG twelve
times). Every reader therefore adds up, from the headers alone, what decoding will cost
-- each layer as ``float32`` RGBA, plus the canvas for the composite -- and refuses the
file with one clear :class:`~lamina.errors.InputFileError` when the sum passes the budget.

The budget is :data:`DEFAULT_MEMORY_BUDGET` unless the environment variable
``LAMINA_MEMORY_BUDGET`` (bytes, or a number with a ``K``/``M``/``G`` suffix, powers of
1024) or a ``memory_budget=`` argument of :func:`lamina.load` says otherwise.
"""

from __future__ import annotations

import os
import re

from ..errors import InputFileError, LaminaError

#: Budget when ``LAMINA_MEMORY_BUDGET`` is not set: 2 GiB of decoded pixels.
DEFAULT_MEMORY_BUDGET = 2 << 30
#: Environment variable that sets the budget.
BUDGET_ENV = "LAMINA_MEMORY_BUDGET"
#: Bytes one decoded pixel costs: straight RGBA ``float32`` in a :class:`~lamina.layers.Layer`.
BYTES_PER_PIXEL = 16
#: Fixed cost counted per layer (Python objects, names, metadata) so that a million 1x1 layers count too.
BYTES_PER_LAYER = 4096
#: Largest side of any image or canvas (the PSD/PSB limit; int32 offsets leave room around it).
MAX_SIDE = 300_000

#: :meth:`Budget.add` refuses at once past this multiple of the budget (the sum is a lower bound then).
EARLY_STOP = 64

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"2G"`` -> 2147483648, ``"512M"``, ``"1000000"``; :class:`LaminaError` when malformed or not positive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise LaminaError(f"{BUDGET_ENV}={text!r} is not a positive size (use bytes or e.g. 512M, 4G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def memory_budget(override: int | None = None) -> int:
    """The budget in bytes: ``override`` if given, else ``LAMINA_MEMORY_BUDGET``, else the default."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override <= 0:
            raise LaminaError(f"memory_budget must be a positive number of bytes, got {override!r}")
        return override
    env = os.environ.get(BUDGET_ENV)
    return parse_size(env) if env else DEFAULT_MEMORY_BUDGET


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"  # pragma: no cover


class Budget:
    """Adds up the decoded size of one file's layers and refuses it once over the budget.

    Args:
        label: the file, named in the error.
        budget: bytes allowed (see :func:`memory_budget`).
    """

    def __init__(self, label: str, budget: int | None = None) -> None:
        self.label = label
        self.limit = memory_budget(budget)
        self.layers = 0
        self.pixels = 0

    @property
    def needed(self) -> int:
        return self.pixels * BYTES_PER_PIXEL + self.layers * BYTES_PER_LAYER

    def add(self, width: int, height: int, what: str = "layer") -> None:
        """Count an image of ``width x height`` (a layer, or the canvas with ``what="canvas"``)."""
        check_size(width, height, f"{self.label}: {what}")
        self.pixels += width * height
        self.layers += what != "canvas"
        if self.needed > EARLY_STOP * self.limit:  # hopeless already: stop reading headers
            self.check()

    def check(self) -> None:
        """Refuse the file (:class:`InputFileError` naming the budget and how to raise it) if over the budget."""
        if self.needed > self.limit:
            raise InputFileError(
                f"{self.label}: decoding needs about {format_bytes(self.needed)} ({self.layers} layer(s), "
                f"{self.pixels:,} pixels with the canvas), over the memory budget of {format_bytes(self.limit)}; "
                f"set {BUDGET_ENV} (e.g. {BUDGET_ENV}={_suggest(self.needed)}) or pass memory_budget= to raise it")


def _suggest(needed: int) -> str:
    return f"{max(1, -(-needed // (1 << 30)))}G"


def check_size(width: object, height: object, what: str) -> None:
    """Both sides are integers in ``[1, MAX_SIDE]``; :class:`InputFileError` naming ``what`` otherwise."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in (width, height))
    if not ok:
        raise InputFileError(f"{what}: bad size {width!r}x{height!r} (sides must be integers in 1..{MAX_SIDE:,})")

