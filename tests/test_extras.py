"""The base install works without the extras; a missing extra is a one-line error naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lamina.errors import LaminaError, MissingDependencyError
from lamina.extras import require

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Run in a fresh interpreter in which transformers, accelerate and torchmetrics cannot be imported.
WITHOUT_EXTRAS = """
import sys
for name in ("transformers", "accelerate", "torchmetrics"):
    sys.modules[name] = None  # `import name` now raises ImportError, as when it is not installed

import lamina, lamina.io, lamina.training, lamina.metrics, lamina.furrygan, lamina.layeringdiff, lamina.bfs
from lamina.errors import MissingDependencyError
from lamina.cli import main  # every command group loads

def error(call):
    try:
        call()
    except MissingDependencyError as exc:
        return str(exc)
    return "no error"

import torch
from torch.utils.data import TensorDataset
from lamina.furrygan.config import get_preset
from lamina.furrygan.train import training_loop
from lamina.layeringdiff.grounding import Grounder
from lamina.metrics.fid import fid_kid_from_features

print(error(lambda: training_loop(get_preset("tiny-32"), TensorDataset(torch.rand(2, 3, 32, 32)), "unused")))
print(error(lambda: Grounder()._load("segmenter")))
print(error(lambda: fid_kid_from_features(torch.rand(4, 8), torch.rand(4, 8))))
from lamina.bfs.train import load_model

print(error(lambda: load_model("builtin")))
main(["demo", "--out", "demo", "--n", "1", "--size", "32"], standalone_mode=False)  # BFS rows skipped
import os

print(sorted(name for name in os.listdir("demo") if name.startswith("bfs")))
"""


def test_base_install_without_extras(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={"PYTHONPATH": SRC, "LAMINA_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert [line for line in out.stdout.splitlines() if not line.startswith("wrote ")] == [
        "accelerate is not installed: this needs pip install 'lamina[train]'",
        "transformers is not installed: this needs pip install 'lamina[prompt]'",
        "torchmetrics.image.fid is not installed: this needs pip install 'lamina[eval]'",
        "transformers is not installed: this needs pip install 'lamina[prompt]'",
        "[]",
    ]
    assert "BFS rows skipped" in out.stderr
    assert not (tmp_path / "unused").exists()  # refused before the run folder is made


def test_require() -> None:
    assert require("json").dumps([1]) == "[1]"
    with pytest.raises(MissingDependencyError, match=r"no_such_module_x is not installed.*lamina\[train\]") as info:
        require("no_such_module_x", "train")
    assert isinstance(info.value, LaminaError) and isinstance(info.value, ImportError)
