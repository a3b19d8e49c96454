"""``--set KEY=VALUE`` command-line overrides of a run configuration, shared by every method's ``train``."""

from __future__ import annotations

import json
from typing import Any

from .errors import LaminaError


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("train.lr=0.001", "a.b=text")`` -> ``{"train.lr": 0.001, "a.b": "text"}``: values are JSON, else strings."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise LaminaError(f"--set expects key=value (e.g. lr=0.001), got {item!r}")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text
    return overrides
