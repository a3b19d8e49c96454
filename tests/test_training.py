"""Shared training utilities and the run protocol: EMA in images, logs, atomic state, RunDir."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from lamina.errors import ConfigError, TrainingDivergedError
from lamina.training import (
    EMA,
    Deadline,
    RunDir,
    append_log,
    autocast,
    config_changes,
    ema_beta,
    ema_update_,
    float32_precision,
    save_state,
    time_is_up,
    trim_log,
)


def test_ema_beta_by_hand() -> None:
    # Half-life 10,000 images at batch 32: 0.5 ** (32 / 10000) = 0.997784... (rosinality's constant).
    assert ema_beta(32, 10_000) == pytest.approx(0.5 ** 0.0032)
    # Ramp-up caps the half-life at cur_nimg * rampup: 100 * 0.5 = 50 images -> 0.5 ** (10 / 50).
    assert ema_beta(10, 10_000, cur_nimg=100, rampup=0.5) == pytest.approx(0.5 ** 0.2)
    assert ema_beta(10, 10_000, cur_nimg=0, rampup=0.5) == pytest.approx(0.0)  # starts as a copy


def test_ema_update_by_hand() -> None:
    ema, net = torch.nn.BatchNorm1d(1), torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema_update_(ema, net, beta=0.75, copy_buffers=False)
    assert ema.weight.item() == pytest.approx(0.75 * 1 + 0.25 * 3)
    assert ema.running_mean.item() == 0.0
    ema_update_(ema, net, beta=0.75)
    assert ema.running_mean.item() == 7.0


def test_log_trim_and_state(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    for step in (1, 2, 3):
        append_log(log, {"step": step})
    with log.open("a") as f:
        f.write('{"step": 4, "los')  # a torn line from a crash
    trim_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    save_state({"step": 2, "w": torch.ones(2)}, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "state.pt"]  # no temporary left behind


def test_float32_precision_sets_and_restores() -> None:
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [b.fp32_precision for b in backends]
    for precision, mode in (("fp32", "ieee"), ("tf32", "tf32"), ("bf16", "tf32")):
        with float32_precision(precision):
            assert [b.fp32_precision for b in backends] == [mode, mode]
        assert [b.fp32_precision for b in backends] == before
    with pytest.raises(ValueError, match="fp16"), float32_precision("fp16"):
        pass
    assert [b.fp32_precision for b in backends] == before


def test_autocast_only_for_bf16() -> None:
    x, w = torch.rand(2, 3), torch.rand(3, 4)
    with autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    for precision in ("fp32", "tf32"):
        with autocast(precision, "cpu"):
            assert (x @ w).dtype == torch.float32


def test_time_is_up() -> None:
    now = time.time()
    assert not time_is_up(now, None)
    assert not time_is_up(now, 3600.0)
    assert time_is_up(now - 10.0, 5.0)


def test_time_limit_deadline() -> None:
    assert not Deadline(None).passed()
    assert not Deadline(3600.0).passed()
    assert Deadline(-1.0).passed()


def test_ema_class_follows_half_life() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, halflife_nimg=4, rampup=None)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, cur_nimg=4, batch_size=4)  # one half-life: halfway
    assert ema.model.weight.item() == pytest.approx(0.5)
    assert not ema.model.weight.requires_grad


def test_config_changes_names_nested_keys() -> None:
    saved = {"model": {"width": 8, "depth": 2}, "train": {"total_steps": 10, "lr": 0.1}}
    current = {"model": {"width": 16, "depth": 2}, "train": {"total_steps": 20, "lr": 0.2}, "extra": 1}
    assert config_changes(saved, current) == ["extra", "model.width", "train.lr", "train.total_steps"]
    assert config_changes(saved, current, may_change=("train.", "extra")) == ["model.width"]
    assert config_changes({"sizes": (1, 2)}, {"sizes": [1, 2]}) == []


def _open(path: Path, config: dict, **kwargs) -> RunDir:
    run = RunDir(path, echo=kwargs.pop("echo", None))
    run.open(config, **kwargs)
    return run


def test_run_dir_resume_check_state_and_log(tmp_path: Path) -> None:
    config = {"model": {"width": 8}, "train": {"total_steps": 4}}
    run = _open(tmp_path / "run", config, may_change=("train.",))
    assert json.loads(run.config_path.read_text()) == config
    assert run.load_state() is None and run.saved_step is None
    for step in (1, 2, 3):
        run.log({"step": step, "loss": 1.0 / step})
    run.save_state({"step": 2, "config": config, "w": torch.ones(2)})
    assert run.saved_step == 2
    # Resume with a longer run: allowed; the log is trimmed to the state's step.
    longer = {"model": {"width": 8}, "train": {"total_steps": 8}}
    resumed = _open(tmp_path / "run", longer, may_change=("train.",))
    state = resumed.load_state()
    assert state["step"] == 2 and torch.equal(state["w"], torch.ones(2))
    assert [json.loads(line)["step"] for line in resumed.log_path.read_text().splitlines()] == [1, 2]
    assert json.loads(resumed.config_path.read_text()) == longer
    # Another architecture: refused, naming the key and both values; nothing rewritten.
    with pytest.raises(ConfigError, match=r"model.width \(8 -> 16\)"):
        _open(tmp_path / "run", {"model": {"width": 16}, "train": {"total_steps": 8}}, may_change=("train.",))
    assert json.loads(resumed.config_path.read_text()) == longer
    # A saved config in an older form is normalized before comparing (renamed keys, new defaults).
    run.config_path.write_text(json.dumps({"model": {"width": 8}, "train": {"steps": 8}}))
    renamed = lambda d: {**d, "train": {"total_steps": d["train"].get("total_steps", d["train"].get("steps"))}}  # noqa: E731
    _open(tmp_path / "run", longer, normalize=renamed)


def test_run_dir_new_run_forgets_an_unsaved_log(tmp_path: Path) -> None:
    run = _open(tmp_path, {"a": 1})
    run.log({"step": 1})
    run = _open(tmp_path, {"a": 2})  # no state: a new run, any config, an empty log
    assert run.log_path.read_text() == ""


def test_run_dir_cleans_temporaries_of_a_killed_save(tmp_path: Path) -> None:
    (tmp_path / ".training-state.pt.abc123.lamina-tmp").mkdir()
    (tmp_path / ".training-state.pt.abc123.lamina-tmp" / "training-state.pt").write_bytes(b"half")
    (tmp_path / ".config.json.tmp").write_text("{")
    (tmp_path / "snapshots" / ".step-0000002.x.lamina-tmp").mkdir(parents=True)
    (tmp_path / "keep.tmp").write_text("not ours")
    notices = []
    _open(tmp_path, {"a": 1}, echo=notices.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "snapshots", "training-config.json"]
    assert list((tmp_path / "snapshots").iterdir()) == []
    assert notices and "3 temporary" in notices[0]


def test_run_dir_export_staleness_and_snapshots(tmp_path: Path) -> None:
    run = _open(tmp_path, {"a": 1})
    assert not run.export_is_stale()  # no state: nothing to export
    run.save_state({"step": 1})
    assert run.export_is_stale()  # a state without an export (killed between the two)
    write = lambda folder: (folder / "model.safetensors").write_bytes(b"w")  # noqa: E731
    assert run.export(write, 1, snapshot=True) == tmp_path / "export"
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert (tmp_path / "snapshots" / "step-0000001" / "model.safetensors").is_file()
    assert not run.export_is_stale()
    time.sleep(0.01)
    run.save_state({"step": 2})  # a newer state than the export
    assert run.export_is_stale()
    run.export(write, 2)
    assert not run.export_is_stale()
    assert not (tmp_path / "snapshots" / "step-0000002").exists()


def test_run_dir_divergence_guard(tmp_path: Path) -> None:
    run = _open(tmp_path, {"a": 1})
    run.check_losses(1, {"loss": 0.5}, max_loss=10.0)
    with pytest.raises(TrainingDivergedError, match="no training state had been written yet"):
        run.check_losses(1, {"loss": float("nan")})
    run.save_state({"step": 3})
    with pytest.raises(TrainingDivergedError, match=r"step 4: loss d=20 is not finite or exceeds max_loss=10.*"
                                                    r"last good training state \(step 3\)"):
        run.check_losses(4, {"g": 1.0, "d": 20.0}, max_loss=10.0)
    last = json.loads(run.log_path.read_text().splitlines()[-1])
    assert last["step"] == 4 and last["diverged"] is True and last["d"] == 20.0


def test_run_dir_migrates_an_old_furrygan_layout(tmp_path: Path) -> None:
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "model.safetensors").write_bytes(b"w")
    (tmp_path / "samples").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"model": {"width": 8}}))
    torch.save({"step": 5, "config": {"model": {"width": 8}}}, tmp_path / "training-state.pt")
    notices = []
    run = _open(tmp_path, {"model": {"width": 8}}, echo=notices.append)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["export", "previews", "training-config.json", "training-state.pt"]
    assert notices == [f"migrated the run folder {tmp_path} to the current layout: config.json -> "
                       "training-config.json, pretrained -> export, samples -> previews"]
    assert run.load_state()["step"] == 5
    with pytest.raises(ConfigError, match="model.width"):  # the old config is checked too
        (tmp_path / "training-config.json").unlink()
        _open(tmp_path, {"model": {"width": 9}}).load_state()


# A loop on the run protocol that saves its state and export at every step (a real kill lands in a save).
_KILLABLE_LOOP = """
import sys
import torch
from lamina.training import RunDir

run = RunDir(sys.argv[1], echo=print)
config = {"total_steps": int(sys.argv[2])}
run.open(config)
state = run.load_state()
w, step = (state["w"], state["step"]) if state else (torch.zeros(4096), 0)
write = lambda folder: torch.save(w, folder / "w.pt")
if run.export_is_stale():
    run.export(write, step)
while step < config["total_steps"]:
    w, step = w + 1, step + 1
    run.log({"step": step, "loss": float(w[0])})
    run.save_state({"step": step, "w": w, "config": config})
    run.export(write, step)
"""


def test_kill_9_in_a_run_protocol_loop_then_resume(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    run, steps = tmp_path / "run", 120
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _KILLABLE_LOOP, str(run), str(steps)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if (run / "log.jsonl").is_file() and len((run / "log.jsonl").read_text().splitlines()) >= 20:
                break
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = torch.load(run / "training-state.pt", weights_only=True)["step"]
    assert killed_at < steps
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert state["step"] == steps and torch.equal(state["w"], torch.full((4096,), float(steps)))
    assert torch.equal(torch.load(run / "export" / "w.pt"), state["w"])
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == \
        list(range(1, steps + 1))
    assert not list(run.glob(".*"))  # no temporaries of the killed save
