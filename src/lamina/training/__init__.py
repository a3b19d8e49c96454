"""What every method's training shares: the run protocol, EMA in images, precision, time limits.

:class:`RunDir` owns a run folder (layout, resolved config JSON and resume check, atomic
training state, ``log.jsonl`` and ``losses.png``, previews, the inference export and snapshots,
the divergence guard, cleanup of a killed save); :class:`Deadline` is ``--max-minutes``. Each
method keeps its own loop, losses and state contents. Importing this package does not import
torch.
"""

from ..errors import ConfigError, TrainingDivergedError
from .ema import EMA, ema_beta, ema_update_
from .precision import PRECISIONS, autocast, float32_precision
from .run import (
    CONFIG_NAME,
    EXPORT_DIR,
    LEGACY_NAMES,
    LOG_NAME,
    PLOT_NAME,
    PREVIEW_DIR,
    SNAPSHOT_DIR,
    STATE_NAME,
    Deadline,
    RunDir,
    append_log,
    config_changes,
    save_state,
    step_name,
    trim_log,
)
from .timing import time_is_up

__all__ = [
    "CONFIG_NAME",
    "EMA",
    "EXPORT_DIR",
    "LEGACY_NAMES",
    "LOG_NAME",
    "PLOT_NAME",
    "PRECISIONS",
    "PREVIEW_DIR",
    "SNAPSHOT_DIR",
    "STATE_NAME",
    "ConfigError",
    "Deadline",
    "RunDir",
    "TrainingDivergedError",
    "append_log",
    "autocast",
    "config_changes",
    "ema_beta",
    "ema_update_",
    "float32_precision",
    "save_state",
    "step_name",
    "time_is_up",
    "trim_log",
]
