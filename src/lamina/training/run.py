"""The run protocol every method's training loop follows: one folder layout, one vocabulary.

A run folder (``--out``) holds::

    training-config.json    the resolved configuration (written at every start)
    training-state.pt       everything needed to resume (replaced atomically); rerunning resumes
    log.jsonl               one JSON line per logged step: {"step", "nimg", <losses>, "sec_per_step", ...}
    losses.png              the log's curves (lamina.io.plot_log)
    previews/step-NNNNNNN.png   contact sheets of the EMA model
    export/                 the inference export (save_pretrained: config.json + *.safetensors)
    snapshots/step-NNNNNNN/ the export of every checkpoint, when the method keeps them

and the configuration uses the same names in every method: ``batch_size`` (global, all
processes), ``total_steps``, ``log_every``, ``preview_every``, ``checkpoint_every`` (state +
export), ``keep_snapshots``, ``max_loss``, ``seed``. A loop written on :class:`RunDir`::

    run = RunDir(out, is_main=acc.is_main_process, echo=echo)
    run.open(cfg.to_dict(), may_change=("train.",), normalize=lambda d: Cfg.from_dict(d).to_dict())
    state = run.load_state()              # None for a new run; its config checked; log trimmed to its step
    ...build networks, load ``state`` into them...
    if run.export_is_stale():             # killed between state and export, or finished without one
        run.export(write_export, step)
    deadline = Deadline(stop_after_s)
    for step in range(start, total):
        ...losses = {"loss": 0.3, ...}
        run.check_losses(step + 1, losses, cfg.max_loss)   # TrainingDivergedError, nothing saved
        run.log({"step": step + 1, ...}); run.plot()
        run.save_state({...}); run.export(write_export, step + 1, snapshot=True)
        if deadline.passed(acc): break

Only the main process writes; every process may call every method (the others return at
once), except that :meth:`RunDir.open` and :meth:`RunDir.load_state` check the configuration
on all processes, so a mismatch stops them all. Callers put ``accelerator.wait_for_everyone()``
after ``open`` and after each save.

Older layouts are migrated on :meth:`RunDir.open` with one message: FurryGAN runs before this
protocol had ``config.json``, ``pretrained/`` and ``samples/`` (and the config keys ``batch``,
``save_every``, ``image_every``, ``sample_psi``, renamed by the method's ``from_dict``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LaminaError, TrainingDivergedError
from ..io.atomic import atomic_output

CONFIG_NAME = "training-config.json"
STATE_NAME = "training-state.pt"
LOG_NAME = "log.jsonl"
PLOT_NAME = "losses.png"
EXPORT_DIR = "export"
PREVIEW_DIR = "previews"
SNAPSHOT_DIR = "snapshots"
#: Names in run folders of earlier lamina versions (FurryGAN) -> today's.
LEGACY_NAMES = {"config.json": CONFIG_NAME, "pretrained": EXPORT_DIR, "samples": PREVIEW_DIR}
#: Suffix of the temporaries of :func:`lamina.io.atomic_output`; a killed save leaves them behind.
TEMP_SUFFIXES = (".lamina-tmp", ".tmp")


def step_name(step: int) -> str:
    """``"step-0001234"``: the name of a step's preview (``.png``) and snapshot folder."""
    return f"step-{step:07d}"


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two (nested) config dicts, less those allowed to change.

    ``may_change`` holds keys (``"total_steps"``) or prefixes ending in a dot (``"train."``).
    """
    allowed = tuple(may_change)
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    changed = [key for key in sorted(set(flat_saved) | set(flat_current))
               if flat_saved.get(key, _MISSING) != flat_current.get(key, _MISSING)]
    return [key for key in changed
            if not any(key == a or (a.endswith(".") and key.startswith(a)) for a in allowed)]


_MISSING = object()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


class Deadline:
    """The ``--max-minutes`` time limit of one call: every process gets the same answer."""

    def __init__(self, limit_s: float | None) -> None:
        self.start, self.limit_s = time.time(), limit_s

    def passed(self, accelerator: Any = None) -> bool:
        """Whether the limit has passed on any process (a collective call when there are several)."""
        from .timing import time_is_up

        return time_is_up(self.start, self.limit_s, accelerator)

    def elapsed(self) -> float:
        return time.time() - self.start


class RunDir:
    """A training run's folder: layout, config check, resumable state, log, plot, previews, exports.

    Args:
        path: the run folder (created by :meth:`open`).
        is_main: whether this process writes (``accelerator.is_main_process``).
        echo: where one-line notices go (migration, re-export, cleanup).
    """

    def __init__(self, path: str | os.PathLike[str], *, is_main: bool = True,
                 echo: Callable[[str], None] | None = print) -> None:
        self.path = Path(path).expanduser()
        self.is_main = is_main
        self.echo = echo or (lambda _: None)
        self.config: dict[str, Any] | None = None
        self.may_change: tuple[str, ...] = ()
        self.normalize: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d
        #: The step of the newest training state on disk (None: none yet).
        self.saved_step: int | None = None
        self._last_log_time = time.time()  # for sec_per_step in log_step (reset by open)

    # ------------------------------------------------------------------ layout
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def state_path(self) -> Path:
        return self.path / STATE_NAME

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME

    @property
    def plot_path(self) -> Path:
        return self.path / PLOT_NAME

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    def preview_path(self, step: int) -> Path:
        """``previews/step-NNNNNNN.png``."""
        return self.path / PREVIEW_DIR / f"{step_name(step)}.png"

    def snapshot_dir(self, step: int) -> Path:
        """``snapshots/step-NNNNNNN/``."""
        return self.path / SNAPSHOT_DIR / step_name(step)

    def has_state(self) -> bool:
        return self.state_path.is_file()

    # ------------------------------------------------------------------ start
    def open(self, config: dict[str, Any], *, may_change: Iterable[str] = (),
             normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Start or resume: clean a killed save's temporaries, migrate an old layout, check and write the config.

        Args:
            config: the resolved configuration as a JSON dict (``cfg.to_dict()``).
            may_change: keys or ``"section."`` prefixes that may differ from the saved run's
                (run length, bookkeeping); any other difference is a :class:`ConfigError`
                naming the keys.
            normalize: the method's ``lambda d: Config.from_dict(d).to_dict()``, applied to a saved
                config before comparing (renames old keys, fills new ones with their defaults).
        """
        self.config, self.may_change = config, tuple(may_change)
        self._last_log_time = time.time()
        if normalize is not None:
            self.normalize = normalize
        if self.path.exists() and not self.path.is_dir():
            raise LaminaError(f"{self.path}: the run folder is a file")
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            self._remove_temporaries()
            self._migrate()
        if self.has_state():
            saved = self._saved_config()
            if saved is not None:
                self.check_config(saved)
        if self.is_main:
            with atomic_output(self.config_path, overwrite=True) as staged:
                staged.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            if not self.has_state():  # a new run (or one killed before its first save): no log to keep
                self.trim_log(0)

    def check_config(self, saved: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` naming every key of ``saved`` (a resumed run's config) that may not differ."""
        try:
            saved = self.normalize(dict(saved))
        except LaminaError as exc:
            raise ConfigError(f"{self.path} holds a run whose configuration cannot be read ({exc}); "
                              "choose another --out") from None
        changed = config_changes(saved, self.config or {}, self.may_change)
        if changed:
            shown = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(self.config or {}, k)!r})" for k in changed[:8])
            more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
            raise ConfigError(f"{self.path} holds a run with a different configuration: {shown}{more}; resume it "
                              "with the same options or choose another --out")

    def _saved_config(self) -> dict[str, Any] | None:
        for path in (self.config_path, self.path / "config.json"):
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    return data
        return None

    def _remove_temporaries(self) -> None:
        """Temporaries of a save that was killed (``.training-state.pt.*.lamina-tmp`` and the like)."""
        removed = []
        for folder in (self.path, self.path / SNAPSHOT_DIR, self.path / PREVIEW_DIR):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIXES):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry.name)
        if removed:
            self.echo(f"removed {len(removed)} temporary file(s) of an interrupted save in {self.path}")

    def _migrate(self) -> None:
        """Rename an older layout's files (``config.json``, ``pretrained/``, ``samples/``) to today's."""
        if not (self.has_state() or (self.path / "pretrained").is_dir()):
            return  # only a run folder is migrated (an export folder also has a config.json)
        moved = []
        for old, new in LEGACY_NAMES.items():
            if (self.path / old).exists() and not (self.path / new).exists():
                os.replace(self.path / old, self.path / new)
                moved.append(f"{old} -> {new}")
        if moved:
            self.echo(f"migrated the run folder {self.path} to the current layout: {', '.join(moved)}")

    # ------------------------------------------------------------------ state
    def load_state(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The training state (``torch.load``, tensors only), or None for a new run.

        Its ``"config"`` entry, when present, is checked like the saved config JSON, and the
        log is trimmed to its ``"step"`` (lines past it were written after the state).
        """
        if not self.has_state():
            return None
        import torch

        try:
            state = torch.load(self.state_path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state gets the same one-line error
            raise LaminaError(f"{self.state_path}: cannot read the training state ({str(exc).splitlines()[0]}); "
                              "move it away to start over") from None
        if not isinstance(state, dict) or "step" not in state:
            raise LaminaError(f"{self.state_path}: not a lamina training state (no step)")
        if isinstance(state.get("config"), dict):
            self.check_config(state["config"])
        self.saved_step = int(state["step"])
        self.trim_log(self.saved_step)
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        """Write the training state atomically (main process); ``state["step"]`` is required."""
        self.saved_step = int(state["step"])
        if self.is_main:
            save_state(state, self.state_path)

    def export(self, write: Callable[[Path], Any], step: int, snapshot: bool = False) -> Path:
        """The inference export: ``write(folder)`` fills a staged folder that replaces ``export/`` atomically.

        With ``snapshot`` the same is written to ``snapshots/step-NNNNNNN/``. Call it after
        :meth:`save_state`: an export newer than the state is complete (:meth:`export_is_stale`).
        """
        if self.is_main:
            targets = [self.export_dir] + ([self.snapshot_dir(step)] if snapshot else [])
            for target in targets:
                with atomic_output(target, overwrite=True) as staged:
                    staged.mkdir()
                    write(staged)
        return self.export_dir

    def export_is_stale(self) -> bool:
        """Whether a training state exists and ``export/`` is missing or older than it.

        A kill between the state save and the export (or an export that failed) leaves it so;
        the loop then exports again before training on.
        """
        if not self.has_state():
            return False
        files = [p for p in self.export_dir.rglob("*") if p.is_file()] if self.export_dir.is_dir() else []
        if not files:
            return True
        return max(p.stat().st_mtime_ns for p in files) < self.state_path.stat().st_mtime_ns

    # ------------------------------------------------------------------ log, plot, guard
    def log(self, record: dict[str, Any]) -> None:
        """Append one record (needs ``"step"``) to ``log.jsonl`` (main process)."""
        if self.is_main:
            append_log(self.log_path, record)

    def trim_log(self, step: int) -> None:
        """Drop log lines past ``step`` (main process)."""
        if self.is_main:
            trim_log(self.log_path, step)

    def plot(self) -> None:
        """Redraw ``losses.png`` from the log (main process)."""
        if self.is_main and self.log_path.is_file():
            from ..io import plot_log

            plot_log(self.log_path, self.plot_path)

    def log_step(self, step: int, losses: Mapping[str, Any], accelerator: Any, *, batch_size: int,
                 max_loss: float = math.inf, log_every: int = 1) -> dict[str, Any] | None:
        """After an optimisation step: average the loss tensors over processes, guard against divergence
        (:meth:`check_losses`), and every ``log_every`` steps append a record with ``nimg`` and
        ``sec_per_step`` (since the previous record) to the log. Returns that record (main process), else None."""
        import torch

        stacked = torch.stack([v.detach().float() for v in losses.values()])
        if accelerator.num_processes > 1:
            stacked = accelerator.reduce(stacked, reduction="mean")
        values = dict(zip(losses, stacked.cpu().tolist(), strict=True))
        self.check_losses(step, values, max_loss, record={"nimg": step * batch_size})
        if not (self.is_main and step % log_every == 0):
            return None
        now = time.time()
        record = {"step": step, "nimg": step * batch_size, **{k: round(v, 6) for k, v in values.items()},
                  "sec_per_step": round((now - self._last_log_time) / log_every, 4)}
        self._last_log_time = now
        self.log(record)
        return record

    def check_losses(self, step: int, losses: Mapping[str, float], max_loss: float = math.inf,
                     record: Mapping[str, Any] | None = None) -> None:
        """Divergence guard: stop when a loss is NaN/Inf or its magnitude exceeds ``max_loss``.

        The step is logged with ``"diverged": true`` and :class:`TrainingDivergedError` raised
        before anything of this step is saved, naming the last good state. ``losses`` are
        floats (the same on every process: reduce them first), ``record`` extra log fields.
        """
        bad = {k: float(v) for k, v in losses.items() if not abs(float(v)) <= max_loss}
        if not bad:
            return
        self.log({"step": step, **(record or {}), "diverged": True, **{k: float(v) for k, v in losses.items()}})
        if self.saved_step is not None:
            kept = f"the last good training state (step {self.saved_step}) is kept in {self.state_path}"
        else:
            kept = "no training state had been written yet"
        bound = "" if math.isinf(max_loss) else f" or exceeds max_loss={max_loss:g}"
        terms = ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
        raise TrainingDivergedError(f"step {step}: loss {terms} is not finite{bound}; training stopped and {kept} "
                                    "(lower the learning rate, or resume from it)")


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "(absent)"
        value = value[part]
    return value


# ----------------------------------------------------------------------------- files
def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    import torch

    with atomic_output(path, overwrite=True) as staged:
        torch.save(state, staged)


def append_log(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON record (a line of the run's ``log.jsonl``)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_log(path: str | os.PathLike[str], step: int) -> None:
    """Drop log lines past ``step``: they were written after the state a resumed run starts from."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _log_step(line) <= step]
    if len(kept) != len(lines):
        with atomic_output(path, overwrite=True) as staged:
            staged.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _log_step(line: str) -> float:
    """The step of a log line; a torn or blank line (a crash mid-write) counts as past any step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")
