"""Exceptions lamina raises for bad input.

Every error meant for a user is a :class:`LaminaError`; the CLI prints its message as one
line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base class of every user-facing lamina error (printed as one line by the CLI)."""


class LayerError(LaminaError, ValueError):
    """A layer or layered image is malformed: shape, dtype, range, NaN, size mismatch."""


class InputFileError(LaminaError, OSError):
    """An input file cannot be used: missing, truncated, not an image, unsupported, too big."""


class OutputExistsError(LaminaError, FileExistsError):
    """The output path exists and overwriting was not asked for."""
