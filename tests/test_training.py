"""Shared training utilities: EMA in images, logs, atomic state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from lamina.training import (
    append_log,
    autocast,
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
