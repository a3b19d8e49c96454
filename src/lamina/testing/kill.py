"""kill -9 during training, then the same command again: the check behind the slow test and ``reliability.py --kills``.

For each method a short ``lamina ... train`` run (:data:`TRAIN_COMMANDS`, ``STEPS`` steps, a
save every step) is started in a subprocess, killed with ``SIGKILL`` once it has logged a few
steps (right after a log line, i.e. inside that step's save, or ``delay`` seconds later), and
run again with the same command. :func:`kill_and_resume` reports whether the kill landed
mid-run, whether the rerun finished cleanly (every step logged once, no leftover temporaries of
the killed save, an export newer than the last training state) and whether its weights equal
those of a run that was never killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Steps of every kill run.
STEPS = 8
#: ``lamina`` arguments of each method's short training run (``--out`` is added).
TRAIN_COMMANDS: dict[str, list[str]] = {
    "furrygan": ["furrygan", "train", "--data", "synth", "--preset", "tiny-32", "--batch", "2", "--threads", "1",
                 "--steps", str(STEPS), "--set", "train.checkpoint_every=1", "--set", "train.preview_every=3",
                 "--set", "train.log_every=1"],
    "layeringdiff": ["layeringdiff", "train", "--preset", "tiny", "--threads", "1", "--steps", str(STEPS),
                     "--set", "checkpoint_every=1", "--set", "preview_every=3", "--set", "log_every=1"],
    "bfs": ["bfs", "train", "--preset", "test", "--stage", "layered", "--threads", "1", "--steps", str(STEPS),
            "--set", "checkpoint_every=1", "--set", "preview_every=3", "--set", "log_every=1"],
}
#: The networks each method's training state holds (compared with a run never killed).
NETWORKS: dict[str, tuple[str, ...]] = {"furrygan": ("G", "D", "G_ema"), "layeringdiff": ("unet", "ema"),
                                        "bfs": ("modules", "ema")}
#: Logged steps before the kill.
KILL_AFTER_STEPS = 3


@dataclass
class KillResult:
    """What one kill-and-resume trial showed (``problem`` is empty when everything held)."""

    method: str
    delay: float
    killed_at: int | None = None
    resumed: bool = False
    same_as_straight: bool = False
    problem: str = ""

    @property
    def landed(self) -> bool:
        """The kill hit a run in progress (a saved state between the first and the last step)."""
        return self.killed_at is not None and 1 <= self.killed_at < STEPS


def _command(method: str, out: Path) -> list[str]:
    return [sys.executable, "-c", "from lamina.cli import main; main()", *TRAIN_COMMANDS[method], "--out", str(out)]


def _env(src: Path | None) -> dict[str, str]:
    env = {**os.environ, "LAMINA_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


def _logged_steps(run: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    except (OSError, ValueError, KeyError):
        return []


def kill_and_resume(method: str, folder: Path, delay: float = 0.0, src: Path | None = None) -> KillResult:
    """One trial in ``folder`` (empty): start, ``kill -9`` after :data:`KILL_AFTER_STEPS` logged steps (+ ``delay``
    s), rerun the same command, and run it once more never killed: the weights must be equal.

    ``src``: a ``src`` folder put first on ``PYTHONPATH`` (default: the importing environment's lamina).
    """
    import torch

    result, run, env = KillResult(method, delay), folder / "run", _env(src)
    proc = subprocess.Popen(_command(method, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while len(_logged_steps(run)) < KILL_AFTER_STEPS and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is not None:
            result.problem = f"training ended before the kill: {proc.stderr.read().decode()[-500:]}"
            return result
        time.sleep(delay)  # 0: right after a log line, i.e. in the step's save; else somewhere in the next step
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    try:
        result.killed_at = int(torch.load(run / "training-state.pt", weights_only=True)["step"])
    except (OSError, RuntimeError, KeyError) as exc:
        result.problem = f"no readable training state after the kill: {exc}"
        return result
    resumed = subprocess.run(_command(method, run), env=env, capture_output=True, text=True, timeout=900)
    state = torch.load(run / "training-state.pt", weights_only=True) if resumed.returncode == 0 else None
    export = [p.stat().st_mtime_ns for p in (run / "export").rglob("*") if p.is_file()] if state else []
    problems = [
        (resumed.returncode != 0, f"the rerun failed: {resumed.stderr[-500:]}"),
        (state is not None and state["step"] != STEPS, f"the rerun stopped at step {state and state['step']}"),
        (_logged_steps(run) != list(range(1, STEPS + 1)), f"log steps {_logged_steps(run)}"),
        (bool(list(run.rglob(".*lamina-tmp"))), "temporaries of the killed save left behind"),
        (state is not None and (not export or max(export) < (run / "training-state.pt").stat().st_mtime_ns),
         "the export is older than the last training state"),
    ]
    result.problem = "; ".join(text for bad, text in problems if bad)
    result.resumed = not result.problem
    if result.resumed:
        straight = subprocess.run(_command(method, folder / "straight"), env=env, capture_output=True, text=True,
                                  timeout=900)
        if straight.returncode != 0:
            result.problem = f"the run never killed failed: {straight.stderr[-500:]}"
            return result
        reference = torch.load(folder / "straight" / "training-state.pt", weights_only=True)
        differ = [name for name in NETWORKS[method]
                  if not all(torch.equal(state[name][k], reference[name][k]) for k in reference[name])]
        result.same_as_straight = not differ
        result.problem = f"weights differ from a run never killed: {', '.join(differ)}" if differ else ""
    return result
