"""Loss curves of run logs (lamina.io.plot)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lamina import LaminaError
from lamina.io import plot_log, read_log
from lamina.io.plot import PANEL_HEIGHT, SMOOTH_COLOUR


def test_plot_log_draws_one_panel_per_quantity(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "nimg": 16 * s, "sec_per_step": 0.5, "G/adv": 1.0 / s, "D/adv": float(s % 3)})
             for s in range(1, 30)]
    lines.insert(3, "{not json")  # a torn line is skipped
    lines.append(json.dumps({"step": 30, "G/adv": float("nan"), "D/adv": 1e6, "diverged": True}))
    log.write_text("\n".join(lines) + "\n")
    assert len(read_log(log)) == 30
    out = plot_log(log, tmp_path / "losses.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] < 2 * PANEL_HEIGHT  # two curves (D/adv, G/adv) side by side: one row
    assert (image == SMOOTH_COLOUR).all(axis=-1).sum() > 50  # the smoothed lines are drawn
    assert (image == (200, 30, 30)).all(axis=-1).any()  # the diverged point of D/adv
    plot_log(log, tmp_path / "losses.png", keys=["G/adv"], columns=1)  # overwritten
    with pytest.raises(LaminaError, match="no finite values"):
        plot_log([{"step": 1, "x": float("inf")}], tmp_path / "none.png")
