"""kill -9 during training, for each method: the same command again resumes and finishes, as if never killed.

Slow (several training processes each): ``pytest -m slow tests/test_training_kill.py``. The default
run covers the same recovery paths without a real kill: the leftovers of a killed save and a
missing or stale export (``test_killed_save_leftovers_and_stale_export`` in test_furrygan.py,
``test_training_divergence_guard_and_leftovers`` in test_layeringdiff_models.py, and the
``RunDir`` tests in test_training.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

STEPS = 8
COMMANDS = {
    "furrygan": ["furrygan", "train", "--data", "synth", "--preset", "tiny-32", "--batch", "2", "--threads", "1",
                 "--steps", str(STEPS), "--set", "train.checkpoint_every=1", "--set", "train.preview_every=3",
                 "--set", "train.log_every=1"],
    "layeringdiff": ["layeringdiff", "train", "--preset", "tiny", "--threads", "1", "--steps", str(STEPS),
                     "--set", "checkpoint_every=1", "--set", "preview_every=3", "--set", "log_every=1"],
}
#: The networks each method's training state holds.
NETWORKS = {"furrygan": ("G", "D", "G_ema"), "layeringdiff": ("unet", "ema")}


def _command(method: str, out: Path) -> list[str]:
    code = "from lamina.cli import main; main()"
    return [sys.executable, "-c", code, *COMMANDS[method], "--out", str(out)]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "LAMINA_PROGRESS": "0",
            "OMP_NUM_THREADS": "1"}


def _logged_steps(run: Path) -> int:
    try:
        return len((run / "log.jsonl").read_text().splitlines())
    except OSError:
        return 0


@pytest.mark.parametrize("method", sorted(COMMANDS))
@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_kill_9_during_training_then_resume(method: str, delay: float, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(_command(method, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while _logged_steps(run) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(delay)  # 0: right after a log line, i.e. in the step's save; else somewhere in the next step
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = torch.load(run / "training-state.pt", weights_only=True)["step"]
    assert 1 <= killed_at < STEPS

    resumed = subprocess.run(_command(method, run), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(run.rglob(".*lamina-tmp"))  # the killed save's temporaries were cleaned
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert state["step"] == STEPS
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == \
        list(range(1, STEPS + 1))
    newest_export = max(p.stat().st_mtime_ns for p in (run / "export").rglob("*") if p.is_file())
    assert newest_export >= (run / "training-state.pt").stat().st_mtime_ns

    # The same as a run never killed.
    straight = subprocess.run(_command(method, tmp_path / "straight"), env=_env(), capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = torch.load(tmp_path / "straight" / "training-state.pt", weights_only=True)
    for name in NETWORKS[method]:
        assert all(torch.equal(state[name][k], reference[name][k]) for k in reference[name]), name
