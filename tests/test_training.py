"""Shared training utilities: EMA in images, logs, atomic state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lamina.training import append_log, ema_beta, ema_update_, save_state, trim_log


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
