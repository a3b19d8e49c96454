"""The options and plumbing every ``lamina`` method command shares (FurryGAN, LayeringDiff, BFS).

Options (click decorators; each command takes the ones that apply to it):

* :func:`runtime_options` = :func:`device_option` (``--device auto|cpu|cuda|cuda:N|mps``, auto
  by default), :func:`dtype_option` (``--dtype auto|float32|float16|bfloat16``) and
  :func:`threads_option` (``--threads N``: CPU threads of torch and numba; default: torch's);
  turned into a :class:`torch.device` / :class:`torch.dtype` by :func:`setup_runtime`;
* :func:`seed_option` (``--seed``), :func:`overwrite_option` (``--overwrite``),
  :func:`preview_option` (``--preview/--no-preview``: the ``.sheet.png`` contact sheet beside
  each output), :func:`out_option` (``--out``), :func:`format_option` (``--format``: the
  format of each file written into an output *folder*; a single output's format is its suffix).

Output format by suffix everywhere (:func:`output_format`): ``.psd``, ``.ora``, a path without
suffix = a PNG-stack folder, ``.png`` = the flattened composite (where a command allows it).

Before any model loads, a command claims its outputs (:func:`claim_outputs`): the folder is
created and tested for writing, an existing output is refused (unless ``--overwrite``), and an
exclusive lock file beside each output makes a second process writing the same output fail at
once instead of after all its work. The lock goes when the command ends, whatever happens.

Batches (:func:`expand_inputs`, :func:`run_batch`): a folder or glob of images, one model
load, a progress bar, a bad file reported and skipped, outputs already present skipped
(they are complete: every writer is atomic), a summary and a non-zero exit if any failed.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .devices import DEVICES, DTYPES
from .errors import InputFileError, LaminaError, OutputExistsError

#: Image suffixes a folder input is searched for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: ``--format`` choices for files written into an output folder.
MEMBER_FORMATS = ("psd", "ora", "stack")
#: Suffix of the lock file claiming an output.
LOCK_SUFFIX = ".lamina-lock"


# ------------------------------------------------------------------ options
def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a device this machine lacks while parsing (exit status 2, before any work); the value is kept."""
    from .devices import resolve_device

    try:
        resolve_device(value)
    except LaminaError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def device_option(func: Any) -> Any:
    """``--device auto|cpu|cuda|cuda:N|mps`` (default auto: CUDA, then MPS, else CPU), checked while parsing."""
    return click.option("--device", default="auto", show_default=True, metavar="|".join(DEVICES),
                        callback=_check_device,
                        help="where models run: auto = cuda if available, then mps, else cpu (cuda:N for "
                             "another GPU)")(func)


def dtype_option(func: Any) -> Any:
    """``--dtype auto|float32|float16|bfloat16``."""
    return click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
                        help="model precision; auto = float32 on cpu, float16 on a GPU for large pretrained "
                             "models (lamina's small built-in networks stay float32)")(func)


def threads_option(func: Any) -> Any:
    """``--threads N`` (CPU threads of torch and numba; default: torch's own)."""
    return click.option("--threads", type=click.IntRange(1), default=None,
                        help="CPU threads for torch and numba [default: torch's]")(func)


def runtime_options(func: Any) -> Any:
    """``--device``, ``--dtype`` and ``--threads``."""
    return device_option(dtype_option(threads_option(func)))


def seed_option(func: Any = None, *, default: int | None = 0, help: str = "random seed") -> Any:
    """``--seed`` (usable as ``@seed_option`` or ``@seed_option(default=None, help=...)``)."""
    def decorate(f: Any) -> Any:
        return click.option("--seed", type=int, default=default, show_default=default is not None, help=help)(f)

    return decorate(func) if func is not None else decorate


def training_options(func: Any = None, *, batch_help: str = "batch size", min_batch: int = 1,
                     set_example: str = "--set resolution=32") -> Any:
    """The options the ``train`` commands share, in this order: ``--steps`` (``total_steps``), ``--batch``
    (``batch_size``, at least ``min_batch``), ``--lr``, ``--seed``, ``--set`` (``overrides``), ``--max-minutes``,
    ``--threads`` and ``-n/--dry-run``; :func:`resolve_training_config` turns them into a config."""
    def decorate(f: Any) -> Any:
        for option in reversed((
                click.option("--steps", "total_steps", type=click.IntRange(1), default=None,
                             help="total optimisation steps"),
                click.option("--batch", "batch_size", type=click.IntRange(min_batch), default=None, help=batch_help),
                click.option("--lr", type=float, default=None, help="learning rate"),
                seed_option(default=None, help="data and initialisation seed"),
                click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                             help=f"override any training option (JSON values), e.g. {set_example}"),
                click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
                             help="stop (after saving) after this long; rerun to resume"),
                threads_option,
                click.option("-n", "--dry-run", is_flag=True, help="print the resolved config and exit"))):
            f = option(f)
        return f

    return decorate(func) if func is not None else decorate


def resolve_training_config(resolve: Callable[..., Any], preset: str, overrides: Sequence[str], *,
                            prefix: str = "", **flags: Any) -> Any:
    """``resolve(preset, **values)``: the ``--set`` overrides, then every flag that was given (not ``None``),
    its key prefixed with ``prefix`` (``"train."`` where the config nests its training options)."""
    from .overrides import parse_overrides

    given = {prefix + k: v for k, v in flags.items() if v is not None}
    return resolve(preset, **(parse_overrides(overrides) | given))


def stop_after_seconds(max_minutes: float | None) -> float | None:
    """``--max-minutes`` in seconds (``None``: no limit)."""
    return None if max_minutes is None else max_minutes * 60.0


def overwrite_option(func: Any) -> Any:
    """``--overwrite``: replace existing outputs (otherwise refused; in a batch, skipped as done)."""
    return click.option("--overwrite", is_flag=True,
                        help="replace existing outputs (without it a single output that exists is refused, and a "
                             "batch skips the outputs already written)")(func)


def preview_option(func: Any) -> Any:
    """``--preview/--no-preview``: the contact sheet ``<out>.sheet.png`` beside each output (default: on)."""
    return click.option("--preview/--no-preview", default=True, show_default=True,
                        help="write a contact sheet <out>.sheet.png beside each layered output")(func)


def out_option(func: Any = None, *, help: str = "output: .psd, .ora, or a path without suffix (PNG-stack folder)",
               required: bool = True) -> Any:
    """``--out PATH``."""
    def decorate(f: Any) -> Any:
        return click.option("--out", type=click.Path(path_type=Path), required=required, help=help)(f)

    return decorate(func) if func is not None else decorate


def format_option(func: Any) -> Any:
    """``--format psd|ora|stack``: the format of each file written into an output folder."""
    return click.option("--format", "fmt", type=click.Choice(MEMBER_FORMATS), default="psd", show_default=True,
                        help="format of each layered file when --out is a folder of outputs (a single output's "
                             "format is its suffix)")(func)


# ------------------------------------------------------------------ runtime
def setup_runtime(device: str = "auto", dtype: str = "auto", threads: int | None = None, *,
                  small_model: bool = False) -> tuple[Any, Any]:
    """Apply ``--threads`` and resolve ``--device`` / ``--dtype``: ``(torch.device, torch.dtype)``.

    Raises :class:`LaminaError` for a device this machine lacks (checked before any model loads).
    """
    from .devices import resolve_device, resolve_dtype, set_threads

    set_threads(threads)
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved, small_model=small_model)


# ------------------------------------------------------------------ outputs
def output_format(path: str | os.PathLike[str], allow_png: bool = False) -> str:
    """``"psd"``, ``"ora"``, ``"stack"`` (no suffix, or an existing folder) or ``"png"`` (flattened, if allowed)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".psd", ".ora"):
        return suffix[1:]
    if suffix == "" or path.is_dir():
        return "stack"
    if suffix == ".png" and allow_png:
        return "png"
    extra = ", .png (the flattened composite)" if allow_png else ""
    raise LaminaError(f"{path}: unknown output format {path.suffix!r} (use .psd, .ora{extra}, or a path without "
                      "suffix for a PNG-stack folder)")


def member_suffix(fmt: str) -> str:
    """The file suffix of a ``--format`` choice (``"stack"``: none, a folder)."""
    if fmt not in MEMBER_FORMATS:
        raise LaminaError(f"--format {fmt!r}: choose from {', '.join(MEMBER_FORMATS)}")
    return "" if fmt == "stack" else f".{fmt}"


def sheet_path(out: Path) -> Path:
    """The contact sheet written beside ``out``: ``x.psd`` -> ``x.sheet.png``, folder ``x`` -> ``x.sheet.png``."""
    return out.with_name(out.name + ".sheet.png") if out.suffix == "" else out.with_suffix(".sheet.png")


def write_layered(layered: Any, out: Path, *, overwrite: bool = False, preview: bool = True) -> list[Path]:
    """Save ``layered`` by ``out``'s suffix (``.png``: the flattened composite), and its contact sheet if ``preview``.

    Every write is atomic. Returns the paths written.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .io import contact_sheet, save, write_png

    if output_format(out, allow_png=True) == "png":
        write_png(layered.composite(), out, overwrite=overwrite)
        return [out]
    if not preview:
        save(layered, out, overwrite=overwrite)
        return [out]
    with ThreadPoolExecutor(1) as pool:  # the sheet is drawn while the file is written (both read the layers)
        drawn = pool.submit(contact_sheet, layered)
        save(layered, out, overwrite=overwrite)
        sheet = sheet_path(out)
        # The sheet belongs to the output just written: a stale one of a missing output is replaced.
        write_png(drawn.result(), sheet, overwrite=True)
    return [out, sheet]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def lock_path(out: Path) -> Path:
    """The lock file claiming ``out``: ``.<name>.lamina-lock`` beside it."""
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def _take_lock(out: Path) -> Path:
    """Create ``out``'s lock file exclusively (a stale lock of a dead process on this machine is taken over)."""
    lock = lock_path(out)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid > 0 and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise OutputExistsError(f"{out}: another lamina process is writing this output (lock {lock}; delete "
                                    "it if that process is gone)") from None
        except PermissionError:
            raise LaminaError(f"{out.parent}: output folder is not writable") from None
        except OSError as exc:
            raise LaminaError(f"{out.parent}: cannot write into the output folder ({exc.strerror})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return lock
    raise OutputExistsError(f"{out}: another lamina process is writing this output ({lock})")


def make_output_folder(folder: Path, created: list[Path] | None = None) -> None:
    """``mkdir -p folder`` and check it is writable; the folders it made are appended to ``created``.

    Raises :class:`LaminaError` naming the folder when it cannot be created or written.
    """
    created = [] if created is None else created
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise LaminaError(f"{folder}: cannot create the output folder ({probe} is a file)")
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except PermissionError:
            raise LaminaError(f"{folder}: cannot create the output folder (permission denied in "
                              f"{path.parent})") from None
        except OSError as exc:
            raise LaminaError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
        created.append(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LaminaError(f"{folder}: output folder is not writable")


@dataclass
class OutputClaim:
    """The outputs a command holds: their lock files and the folders it created for them."""

    outputs: list[Path]
    locks: list[Path] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)

    def release(self, failed: bool = False) -> None:
        """Remove the lock files; after a failure also the folders the claim created, if still empty."""
        for lock in self.locks:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        self.locks.clear()
        if failed:
            for folder in reversed(self.created):
                with contextlib.suppress(OSError):
                    folder.rmdir()


@contextlib.contextmanager
def claim_outputs(outputs: Sequence[Path], overwrite: bool = False) -> Iterator[OutputClaim]:
    """Claim ``outputs`` before any work: folders creatable and writable, none taken, each locked.

    Raises :class:`~lamina.errors.OutputExistsError` for an output that exists (without
    ``overwrite``) or that another process holds, :class:`LaminaError` for a folder that cannot be
    created or written. The locks are released when the block ends; on an exception the
    folders this claim created are removed again if empty (nothing half-written remains: the
    writers are atomic).
    """
    claim = OutputClaim([Path(p) for p in outputs])
    try:
        for out in claim.outputs:
            if (out.exists() or out.is_symlink()) and not overwrite:
                raise OutputExistsError(f"{out}: output already exists (pass --overwrite to replace it)")
            make_output_folder(out.parent if out.parent != Path("") else Path("."), claim.created)
            claim.locks.append(_take_lock(out))
        yield claim
    except BaseException:
        claim.release(failed=True)
        raise
    claim.release()


# ------------------------------------------------------------------ inputs
def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (EXIF rotation applied), without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a folder, not an image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not an image file ({type(exc).__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def expand_inputs(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], bool]:
    """Images named by ``sources`` (files, folders, glob patterns), sorted, and whether it is a batch.

    A folder gives its image files (by suffix, :data:`IMAGE_SUFFIXES`, not recursive); a
    pattern with ``*``, ``?`` or ``[`` is expanded (quote it in the shell). A batch is a
    folder, a pattern or more than one file. Raises :class:`InputFileError` when nothing matches.
    """
    paths: list[Path] = []
    batch = len(sources) > 1
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir():
            batch = True
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise InputFileError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths += found
        elif any(ch in text for ch in "*?[") and not path.exists():
            batch = True
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file())
            if not found:
                raise InputFileError(f"{text}: no file matches this pattern")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise InputFileError(f"{path}: no such image file, folder or pattern")
    return paths, batch


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output names for inputs: their stems, with ``_1``, ``_2`` ... for repeats (``a.png``, ``a.jpg``)."""
    stems, seen = [], {}
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem] - 1}")
    return stems


@dataclass
class BatchReport:
    """What a batch did: outputs ``done``, ``skipped`` (already present) and ``failed`` (``(input, error)``)."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts, and the first failure."""
        text = f"{len(self.done)} written, {len(self.skipped)} already present (skipped), {len(self.failed)} failed"
        return text + (f"; first failure: {_naming(*self.failed[0])}" if self.failed else "")


def _naming(source: Path, message: str) -> str:
    """``message`` prefixed with the input's path unless it names it already."""
    return message if str(source) in message else f"{source}: {message}"


def run_batch(items: Sequence[tuple[Path, Path]], work: Callable[[Path, Path], Any], *, overwrite: bool,
              desc: str, prepare: Callable[[], Any] | None = None,
              echo: Callable[..., Any] = click.echo) -> BatchReport:
    """Run ``work(input, output)`` for each pair, with a progress bar; a failure is reported and skipped.

    ``prepare()`` (loading the model) runs once, just before the first pair that needs work, so a
    finished folder costs no model load.

    Outputs that exist are skipped (complete, since writers are atomic) unless ``overwrite``;
    each output is claimed (:func:`claim_outputs`) just before its work, so two processes can
    share a folder. Only :class:`LaminaError` and ordinary exceptions of one file are caught;
    ``KeyboardInterrupt`` stops the batch (rerun it to resume).
    """
    from .progress import progress

    report = BatchReport()
    for source, out in progress(items, desc=desc, total=len(items)):
        if (out.exists() or out.is_symlink()) and not overwrite:
            report.skipped.append(out)
            continue
        if prepare is not None:
            prepare()
            prepare = None
        try:
            with claim_outputs([out], overwrite=overwrite):
                work(source, out)
        except OutputExistsError as exc:  # taken by another process meanwhile
            report.skipped.append(out)
            echo(f"skipped: {exc}", err=True)
            continue
        except (LaminaError, Exception) as exc:  # noqa: BLE001 - one bad file must not lose the others
            message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, LaminaError):
                message = f"{type(exc).__name__}: {message}"
            report.failed.append((source, message))
            echo(f"failed: {_naming(source, message)}", err=True)
            continue
        report.done.append(out)
    return report


def finish_batch(report: BatchReport, echo: Callable[[str], Any] = click.echo) -> None:
    """Print the summary; exit with status 1 if any input failed."""
    echo(report.summary())
    if report.failed:
        raise click.exceptions.Exit(1)
