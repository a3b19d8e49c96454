"""Atomic output: build a file or folder under a temporary name, then move it into place.

A failed or interrupted write never leaves a half-written file at the target, and an
existing output is only replaced when ``overwrite=True`` is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LaminaError, OutputExistsError


def check_writable(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Return ``path`` as a :class:`Path` once it is known that it can be written.

    Raises :class:`OutputExistsError` if it exists and not ``overwrite``, and
    :class:`LaminaError` if its folder cannot be created or written (the nearest existing
    ancestor is a file, or not writable), so that commands can refuse before any work.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{path}: output already exists (pass overwrite=True / --overwrite to replace it)")
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LaminaError(f"{path}: cannot create the output folder ({ancestor} is a file, not a folder)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LaminaError(f"{path}: cannot write the output (no write permission in {ancestor})")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path to write ``path`` to, as a file or a folder.

    The yielded path has the same name as ``path`` (so suffix-based writers work) inside a
    hidden temporary folder next to it, on the same file system. When the block exits
    normally the result replaces ``path`` (``os.replace`` for files; a folder is swapped in
    by renames, the old one removed only after the new one is in place); on an exception
    everything temporary is removed and ``path`` is untouched. Missing parent folders are
    created. Raises :class:`OutputExistsError` before anything is written if ``path``
    exists and ``overwrite`` is False.
    """
    path = check_writable(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".lamina-tmp", dir=path.parent))
    except OSError as exc:
        raise LaminaError(f"{path}: cannot create the output ({exc.strerror or exc})") from None
    try:
        staged = workdir / path.name
        yield staged
        if not staged.exists():
            raise LaminaError(f"{path}: the writer produced no output")
        _default_modes(staged)
        _commit(staged, check_writable(path, overwrite), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _default_modes(staged: Path) -> None:
    """Give every file the mode a plain ``open()`` would (``0o666`` less the umask): some writers
    (safetensors) create their files readable by the owner only."""
    mask = os.umask(0)
    os.umask(mask)
    files = [staged] if staged.is_file() else [p for p in staged.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        os.chmod(file, 0o666 & ~mask)


def _commit(staged: Path, path: Path, workdir: Path) -> None:
    """Move ``staged`` to ``path``; an existing folder (or a file replaced by a folder) is swapped out first."""
    if not path.exists() or not (path.is_dir() or staged.is_dir()):
        os.replace(staged, path)
        return
    old = workdir / ".old"
    os.replace(path, old)
    try:
        os.replace(staged, path)
    except BaseException:
        os.replace(old, path)
        raise
