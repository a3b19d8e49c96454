"""kill -9 during training, for each method: the same command again resumes and finishes, as if never killed.

Slow (several training processes each): ``pytest -m slow tests/test_training_kill.py``. The trial itself is
:func:`lamina.testing.kill.kill_and_resume` (also run by ``benchmarks/reliability.py --kills``). The default
run covers the same recovery paths without a real kill: the leftovers of a killed save and a missing or stale
export (``test_killed_save_leftovers_and_stale_export`` in test_furrygan.py,
``test_training_divergence_guard_and_leftovers`` in test_layeringdiff_models.py, and the ``RunDir`` tests in
test_training.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.testing.kill import TRAIN_COMMANDS, kill_and_resume

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("method", sorted(TRAIN_COMMANDS))
@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_kill_9_during_training_then_resume(method: str, delay: float, tmp_path: Path) -> None:
    result = kill_and_resume(method, tmp_path, delay, src=SRC)
    assert result.landed, result
    assert result.resumed and result.same_as_straight, result.problem
