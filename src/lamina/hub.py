"""Loading pretrained models by hub id or local folder, with a one-line error instead of a network traceback.

Everything goes through the Hugging Face client, so ``HF_HUB_OFFLINE=1`` (cache only),
``HF_ENDPOINT`` (a mirror), proxies and its timeouts (``HF_HUB_ETAG_TIMEOUT``) apply. A hub id is
first looked up in the local cache (no network). Before the download, one request through the
client's own session checks that the endpoint answers at all: the client retries a refused or
timed-out connection five times with back-off (about 25 s per file), so without this check an
unreachable hub would take minutes to report. When loading fails the error names the model and
says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import LaminaError

#: What a user without network can do; appended to every hub failure.
OFFLINE_HINT = ("download it once with network access (or through HF_ENDPOINT, a mirror), set HF_HUB_OFFLINE=1 to "
                "use only the local cache, or pass a local folder saved with save_pretrained")


def hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types a ``from_pretrained`` raises for a missing, unreachable or malformed model."""
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, ConnectionError, TimeoutError]
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # older huggingface_hub clients use requests, whose errors are OSErrors
        pass
    return tuple(errors)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def is_local(ident: str | Path) -> bool:
    """Whether ``ident`` names a local path (an existing one, or one written like a path) rather than a hub id."""
    path = Path(ident).expanduser()
    return path.exists() or path.is_absolute() or str(ident).startswith((".", "~"))


def load_error(what: str, ident: str | Path, exc: BaseException) -> LaminaError:
    """The one-line :class:`LaminaError` for a model that could not be loaded from the hub or the cache."""
    return LaminaError(f"cannot load the {what} {str(ident)!r}: {first_line(exc)}; it is not in the local Hugging "
                       f"Face cache and the hub did not provide it: {OFFLINE_HINT}")


def from_pretrained(cls: Any, ident: str | Path, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(ident, **kwargs)`` for a folder or a hub id; a one-line :class:`LaminaError` on failure.

    A folder is read with ``local_files_only=True``. A hub id is tried in the local cache first, then
    on the hub (unless ``HF_HUB_OFFLINE=1``). ``what`` names the model in messages (``"segmenter"``).
    """
    path = Path(ident).expanduser()
    if path.is_dir():
        try:
            return cls.from_pretrained(str(path), local_files_only=True, **kwargs)
        except hub_errors() as exc:
            raise LaminaError(f"cannot load the {what} {str(path)!r}: {first_line(exc)}") from None
    if is_local(ident):
        raise LaminaError(f"{what} {ident}: not a model folder (saved with save_pretrained)")
    try:
        return cls.from_pretrained(str(ident), local_files_only=True, **kwargs)
    except hub_errors():
        pass
    require_hub(what, ident)
    try:
        return cls.from_pretrained(str(ident), **kwargs)
    except hub_errors() as exc:
        raise load_error(what, ident, exc) from None


def require_hub(what: str, ident: str | Path) -> None:
    """Raise a one-line :class:`LaminaError` naming the model when the hub cannot be asked for it.

    Call it after a cache-only attempt (``local_files_only=True``) failed and before the download.
    """
    unreachable = hub_unreachable()
    if unreachable is not None:
        hint = OFFLINE_HINT.replace(", set HF_HUB_OFFLINE=1 to use only the local cache", "")
        raise LaminaError(f"cannot load the {what} {str(ident)!r}: it is not in the local Hugging Face cache and "
                          f"{unreachable}: {hint if 'OFFLINE' in unreachable else OFFLINE_HINT}")


def hub_unreachable() -> str | None:
    """None when the hub endpoint answers (any HTTP status); else why not, in a few words.

    One ``HEAD`` of ``HF_ENDPOINT`` through the client's session (its proxies, headers and offline
    switch), with the client's metadata timeout ``HF_HUB_ETAG_TIMEOUT`` and no retries.
    """
    from huggingface_hub import constants

    offline = getattr(constants, "is_offline_mode", None)  # huggingface_hub >= 1.0; earlier: the constant
    if offline() if offline is not None else constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer means the hub cannot be used
        return f"the hub {constants.ENDPOINT} cannot be reached ({first_line(exc)})"
    return None
