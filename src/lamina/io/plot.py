"""Loss curves of a training run's ``log.jsonl``, drawn to a PNG with Pillow (no plotting library needed).

One panel per logged quantity (two columns), against the step: the raw values as a thin
line and an exponential moving average as a thick one, with the value range and the step
range written on the panel. Non-finite values are skipped; records marked ``"diverged"``
are drawn in red as a last point when finite.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import LaminaError
from .images import write_png

#: Keys of a log record that are not curves to plot.
NOT_CURVES = ("step", "nimg", "diverged", "sec_per_step")
PANEL_WIDTH, PANEL_HEIGHT, MARGIN = 420, 140, 6
#: Smoothing of the thick line: EMA with this weight on the newest value (more for short logs:
#: at least ``SMOOTHING_POINTS / len(points)``, so the average spans about that many points at most).
SMOOTHING, SMOOTHING_POINTS = 0.05, 10
RAW_COLOUR, SMOOTH_COLOUR, DIVERGED_COLOUR = (170, 190, 230), (30, 70, 160), (200, 30, 30)


def read_log(path: str | os.PathLike[str]) -> list[dict]:
    """The records of a ``log.jsonl`` (one JSON object per line; unreadable lines are skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def _curves(records: list[dict], keys: Sequence[str] | None) -> dict[str, list[tuple[float, float, bool]]]:
    if keys is None:
        keys = sorted({k for r in records for k, v in r.items()
                       if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)})
    curves: dict[str, list[tuple[float, float, bool]]] = {}
    for key in keys:
        points = [(float(r["step"]), float(r[key]), bool(r.get("diverged"))) for r in records
                  if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if points:
            curves[key] = points
    return curves


def _panel(key: str, points: list[tuple[float, float, bool]], font: ImageFont.ImageFont) -> Image.Image:
    panel = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(panel)
    steps = np.array([p[0] for p in points])
    values = np.array([p[1] for p in points])
    smooth = np.empty_like(values)
    weight = min(1.0, max(SMOOTHING, SMOOTHING_POINTS / len(values)))
    acc = values[0]
    for i, v in enumerate(values):
        acc = v if i == 0 else (1 - weight) * acc + weight * v
        smooth[i] = acc
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0
    s0, s1 = float(steps.min()), float(steps.max())
    s1 = s1 if s1 > s0 else s0 + 1.0
    top, bottom, left, right = 16, PANEL_HEIGHT - 14, MARGIN, PANEL_WIDTH - MARGIN

    def xy(step: float, value: float) -> tuple[float, float]:
        return (left + (step - s0) / (s1 - s0) * (right - left), bottom - (value - lo) / (hi - lo) * (bottom - top))

    draw.rectangle((left, top, right, bottom), outline=(200, 200, 200))
    if len(points) > 1:
        draw.line([xy(s, v) for s, v in zip(steps, values, strict=True)], fill=RAW_COLOUR, width=1)
        draw.line([xy(s, v) for s, v in zip(steps, smooth, strict=True)], fill=SMOOTH_COLOUR, width=2)
    for step, value, diverged in points:
        if diverged:
            x, y = xy(step, value)
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=DIVERGED_COLOUR)
    draw.text((left, 2), f"{key}   last {values[-1]:.4g} (smoothed {smooth[-1]:.4g})", fill="black", font=font)
    draw.text((left + 2, top + 1), f"{hi:.4g}", fill=(90, 90, 90), font=font)
    draw.text((left + 2, bottom - 11), f"{lo:.4g}", fill=(90, 90, 90), font=font)
    draw.text((left, bottom + 2), f"step {s0:.0f}", fill=(90, 90, 90), font=font)
    end = f"{s1:.0f}"
    draw.text((right - draw.textlength(end, font=font), bottom + 2), end, fill=(90, 90, 90), font=font)
    return panel


def plot_log(log: str | os.PathLike[str] | list[dict], path: str | os.PathLike[str], *,
             keys: Sequence[str] | None = None, columns: int = 2) -> Path:
    """Draw the curves of a run log (a ``log.jsonl`` path or its records) to the PNG ``path`` (overwritten).

    Args:
        keys: the quantities to draw (default: every numeric key but step, nimg and timing).
        columns: panels per row.
    Raises:
        LaminaError: the log holds nothing to draw.
    """
    records = read_log(log) if isinstance(log, (str, os.PathLike)) else list(log)
    curves = _curves(records, keys)
    if not curves:
        raise LaminaError(f"{log if isinstance(log, (str, os.PathLike)) else 'the log'}: no finite values to plot")
    font = ImageFont.load_default()
    panels = [_panel(key, points, font) for key, points in curves.items()]
    rows = math.ceil(len(panels) / columns)
    sheet = Image.new("RGB", (columns * (PANEL_WIDTH + MARGIN) + MARGIN, rows * (PANEL_HEIGHT + MARGIN) + MARGIN),
                      (235, 235, 235))
    for i, panel in enumerate(panels):
        row, col = divmod(i, columns)
        sheet.paste(panel, (MARGIN + col * (PANEL_WIDTH + MARGIN), MARGIN + row * (PANEL_HEIGHT + MARGIN)))
    return write_png(np.asarray(sheet), path, overwrite=True)
