"""lamina studio: a local browser app to make layered images and edit their layers.

``lamina studio`` serves it on 127.0.0.1 (gradio, the optional extra ``lamina[studio]``).
Modules: :mod:`.backend` (the one door to the methods), :mod:`.handlers` (what each button
does, as plain functions on a per-tab :class:`~.handlers.Session`; no gradio), :mod:`.app`
(the page and its HTTP API), :mod:`.cli` (the command). Importing this package does not
import gradio.
"""

from .backend import Backend, BackendConfig
from .handlers import DEFAULT_LIMITS, Session, StudioLimits

__all__ = ["DEFAULT_LIMITS", "Backend", "BackendConfig", "Session", "StudioLimits"]
