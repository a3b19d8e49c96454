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


class ConfigError(LaminaError, ValueError):
    """A configuration is invalid (unknown preset or key, wrong type or range) or does not match a run's."""


class MissingDependencyError(LaminaError, ImportError):
    """An optional dependency is not installed; the message names the extra to install (``lamina[prompt]``)."""


class TrainingDivergedError(LaminaError, RuntimeError):
    """A training loss became NaN/Inf or exceeded its bound; the last good training state is kept."""
