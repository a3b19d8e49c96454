"""Optional dependencies, imported only where they are used, with an install hint when missing.

The base install (``pip install lamina``) reads, writes, views and converts layered files and
runs ``decompose --box``. The extras add the rest:

* ``lamina[prompt]``: transformers models (Grounding DINO, SAM, ViTMatte, text encoders, BFS's CLIP / T5);
* ``lamina[train]``: accelerate, for every ``train`` command;
* ``lamina[eval]``: torchmetrics, for FID / KID.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

#: Which extra provides each optional module.
EXTRAS = {"transformers": "prompt", "accelerate": "train", "torchmetrics": "eval"}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if getattr(exc, "name", None) not in (None, top, module) and not str(getattr(exc, "name", "")).startswith(top):
            raise  # the module is there but one of its own imports is broken: show that
        extra = extra or EXTRAS.get(top, "dev")
        raise MissingDependencyError(f"{module} is not installed: this needs pip install 'lamina[{extra}]'") from None
