"""``--set KEY=VALUE`` command-line overrides of a run configuration, shared by every method's ``train``."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

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


def check_type(value: Any, hint: Any, key: str, error: type[Exception] = LaminaError) -> Any:
    """``value`` checked against a config field's type hint, or ``error`` naming ``key``.

    Handles ``bool``, ``int``, ``float`` (ints become floats), ``str``, ``X | None``, ``Literal``
    and ``tuple`` hints (lists become tuples); other hints pass the value through. JSON ``true``
    is a bool, never an int, and the string ``"False"`` is not a bool.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_type(value, option, key, error)
            except error as exc:
                errors.append(str(exc))
        raise error(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise error(f"{key} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(f"{key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise error(f"{key} must have {len(item_types)} items, got {len(value)}")
        return tuple(check_type(v, t, key, error) for v, t in zip(value, item_types, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise error(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise error(f"{key} must be a string, got {value!r}")
    return value


def config_values(cls: type, values: dict[str, Any], what: str, error: type[Exception] = LaminaError,
                  nested: Iterable[str] = ()) -> dict[str, Any]:
    """``values`` checked for the dataclass ``cls``: keys it lacks are refused in one ``error`` naming them all
    ("unknown ``what`` option(s): ..."), and each value is checked against its field's type hint
    (:func:`check_type`); keys in ``nested`` pass as they are (a nested config checks its own)."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise error(f"unknown {what} option(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    skip = set(nested)
    return {k: v if k in skip else check_type(v, hints[k], k, error) for k, v in values.items()}
