"""The options every command shares (lamina.cli_options), devices, tensor helpers, lazy imports, python -m lamina."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lamina.cli_options import (
    BatchReport,
    claim_outputs,
    expand_inputs,
    finish_batch,
    image_size,
    lock_path,
    make_output_folder,
    member_suffix,
    output_format,
    run_batch,
    runtime_options,
    setup_runtime,
    sheet_path,
    unique_stems,
)
from lamina.devices import resolve_device, resolve_dtype, set_threads
from lamina.errors import LaminaError, OutputExistsError
from lamina.tensors import grow_mask, image_and_alpha, resize, resize_array, to_nchw, to_signed

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ------------------------------------------------------------------ devices
def test_resolve_device_and_dtype() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected == resolve_device(None).type
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(" CPU ")
    with pytest.raises(LaminaError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(LaminaError, match="sees no CUDA device"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(LaminaError, match="MPS is not available"):
            resolve_device("mps")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16
    with pytest.raises(LaminaError, match="choose from auto"):
        resolve_dtype("float8", "cpu")
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        assert resolve_dtype("auto", "cuda") == torch.float16
        assert resolve_dtype("auto", "cuda", small_model=True) == torch.float32


def test_set_threads_one_meaning() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # leaves it
        assert torch.get_num_threads() == 1
        with pytest.raises(LaminaError, match="at least 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ options
def test_runtime_options_parse_and_refuse() -> None:
    @click.command()
    @runtime_options
    def cmd(device: str, dtype: str, threads: int | None) -> None:
        dev, dt = setup_runtime(device, dtype, threads)
        click.echo(f"{dev.type} {dt} {threads}")

    runner = CliRunner()
    before = torch.get_num_threads()
    try:
        result = runner.invoke(cmd, ["--device", "cpu", "--dtype", "bfloat16", "--threads", "1"])
        assert result.exit_code == 0 and result.output.strip() == "cpu torch.bfloat16 1", result.output
    finally:
        torch.set_num_threads(before)
    assert runner.invoke(cmd, []).exit_code == 0
    result = runner.invoke(cmd, ["--device", "gpu0"])
    assert result.exit_code == 2 and "not a torch device" in result.output
    assert runner.invoke(cmd, ["--dtype", "float8"]).exit_code == 2
    assert runner.invoke(cmd, ["--threads", "0"]).exit_code == 2
    if not torch.cuda.is_available():
        result = runner.invoke(cmd, ["--device", "cuda"])
        assert result.exit_code == 2 and "sees no CUDA device" in result.output


def test_output_formats_by_suffix(tmp_path) -> None:
    assert output_format(tmp_path / "a.psd") == "psd" and output_format(tmp_path / "a.ORA") == "ora"
    assert output_format(tmp_path / "stack") == "stack" and output_format(tmp_path) == "stack"
    assert output_format(tmp_path / "a.png", allow_png=True) == "png"
    with pytest.raises(LaminaError, match="unknown output format '.png'"):
        output_format(tmp_path / "a.png")
    with pytest.raises(LaminaError, match="unknown output format '.tif'"):
        output_format(tmp_path / "a.tif", allow_png=True)
    assert member_suffix("psd") == ".psd" and member_suffix("stack") == ""
    with pytest.raises(LaminaError):
        member_suffix("png")
    assert sheet_path(tmp_path / "x.psd") == tmp_path / "x.sheet.png"
    assert sheet_path(tmp_path / "x") == tmp_path / "x.sheet.png"


# ------------------------------------------------------------------ claims
def test_claim_outputs_refuses_taken_and_locks(tmp_path) -> None:
    out = tmp_path / "new" / "deeper" / "a.psd"
    with claim_outputs([out]) as claim:
        assert lock_path(out).is_file() and out.parent.is_dir()
        with pytest.raises(OutputExistsError, match="another lamina process is writing"):
            with claim_outputs([out]):
                pass
        assert lock_path(out).is_file()  # the loser does not remove the winner's lock
        assert claim.outputs == [out]
    assert not lock_path(out).exists() and out.parent.is_dir()
    out.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="already exists"):
        with claim_outputs([out]):
            pass
    with claim_outputs([out], overwrite=True):
        pass


def test_claim_removes_created_folders_on_failure(tmp_path) -> None:
    out = tmp_path / "made" / "b.psd"
    with pytest.raises(RuntimeError):
        with claim_outputs([out]):
            raise RuntimeError("work failed")
    assert not (tmp_path / "made").exists() and not lock_path(out).exists()


def test_claim_takes_over_a_dead_process_lock(tmp_path) -> None:
    out = tmp_path / "c.psd"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(out).write_text(dead.stdout)
    with claim_outputs([out]):
        assert lock_path(out).read_text().split()[0] == str(os.getpid())


def test_claim_refuses_unusable_folders(tmp_path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(LaminaError, match="is a file"):
        with claim_outputs([tmp_path / "file" / "sub" / "a.psd"]):
            pass
    if os.geteuid() == 0:
        return  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(LaminaError, match="not writable"):
            make_output_folder(locked)
        with pytest.raises(LaminaError, match="cannot create the output folder"):
            with claim_outputs([locked / "sub" / "a.psd"]):
                pass
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------ inputs and batches
def test_expand_inputs(tmp_path) -> None:
    for name in ("b.png", "a.jpg", "c.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    paths, batch = expand_inputs([tmp_path])
    assert [p.name for p in paths] == ["a.jpg", "b.png"] and batch
    paths, batch = expand_inputs([str(tmp_path / "*.png")])
    assert [p.name for p in paths] == ["b.png"] and batch
    paths, batch = expand_inputs([tmp_path / "b.png"])
    assert len(paths) == 1 and not batch
    assert expand_inputs([tmp_path / "a.jpg", tmp_path / "b.png"])[1]
    with pytest.raises(LaminaError, match="no such image file"):
        expand_inputs([tmp_path / "missing.png"])
    with pytest.raises(LaminaError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.webp")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaminaError, match="no image files"):
        expand_inputs([tmp_path / "empty"])
    assert unique_stems([Path("x/a.png"), Path("y/a.jpg"), Path("b.png")]) == ["a", "a_1", "b"]


def test_image_size_reads_header_with_exif_rotation(tmp_path) -> None:
    Image.new("RGB", (30, 20)).save(tmp_path / "plain.png")
    assert image_size(tmp_path / "plain.png") == (30, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 20 x 30
    Image.new("RGB", (30, 20)).save(tmp_path / "rotated.jpg", exif=exif)
    assert image_size(tmp_path / "rotated.jpg") == (20, 30)
    (tmp_path / "bad.png").write_bytes(b"nonsense")
    with pytest.raises(LaminaError, match="not an image file"):
        image_size(tmp_path / "bad.png")


def test_run_batch_skips_done_reports_bad_and_loads_once(tmp_path) -> None:
    items = [(tmp_path / f"in{i}", tmp_path / f"out{i}") for i in range(4)]
    items[0][1].write_text("done before")
    loads, messages = [], []

    def work(source: Path, out: Path) -> None:
        if source.name == "in2":
            raise LaminaError(f"{source}: broken")
        if source.name == "in3":
            raise ValueError("unexpected")
        out.write_text("ok")

    report = run_batch(items, work, overwrite=False, desc="t", prepare=lambda: loads.append(1),
                       echo=lambda m, **_: messages.append(m))
    assert report.done == [items[1][1]] and report.skipped == [items[0][1]] and len(report.failed) == 2
    assert loads == [1] and items[0][1].read_text() == "done before"
    assert report.failed[1][1] == "ValueError: unexpected" and not any(lock_path(o).exists() for _, o in items)
    assert "1 written, 1 already present (skipped), 2 failed; first failure:" in report.summary()
    with pytest.raises(click.exceptions.Exit):
        finish_batch(report, echo=lambda m: None)
    finish_batch(BatchReport(done=[tmp_path]), echo=lambda m: None)  # no failure: no exit
    loads.clear()
    report = run_batch(items[:2], work, overwrite=False, desc="t", prepare=lambda: loads.append(1))
    assert loads == [] and len(report.skipped) == 2  # a finished folder loads no model


# ------------------------------------------------------------------ tensors
def test_tensor_helpers() -> None:
    x = np.zeros((5, 6, 3), np.uint8)
    x[0, 0] = 255
    t = to_nchw(x, 3, "image")
    assert t.shape == (1, 3, 5, 6) and t[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert to_nchw(np.zeros((5, 6)), 1, "alpha").shape == (1, 1, 5, 6)
    with pytest.raises(LaminaError, match="expected"):
        to_nchw(np.zeros((5, 6, 2)), 3, "image")
    image, alpha = image_and_alpha(np.zeros((4, 4, 3)), np.zeros((4, 4)))
    assert image.shape == (1, 3, 4, 4) and alpha.shape == (1, 1, 4, 4)
    with pytest.raises(LaminaError, match="do not match"):
        image_and_alpha(np.zeros((4, 4, 3)), np.zeros((4, 5)))
    assert resize(torch.ones(1, 2, 8, 8), (4, 4)).shape == (1, 2, 4, 4)
    assert resize_array(np.ones((8, 8)), (2, 3)).shape == (2, 3)
    assert to_signed(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 1
    assert grow_mask(mask, 1).sum() == 9


# ------------------------------------------------------------------ import cost and python -m lamina
def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args] if not code else [sys.executable, "-c", code, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_help_and_import_do_not_load_torch() -> None:
    code = ("import sys\nimport lamina\nfrom lamina.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("NO-TORCH") and "decompose" in result.stdout
    sub = _run(code.replace("main(['--help'])", "main(['decompose', '--help'])"))
    assert sub.stdout.strip().endswith("NO-TORCH") and "--split-effects" in sub.stdout, sub.stderr
    lazy = _run("import lamina, sys; print(lamina.LayeredImage.__name__, 'torch' in sys.modules)")
    assert lazy.stdout.split() == ["LayeredImage", "True"], lazy.stderr


def test_python_dash_m_lamina() -> None:
    result = _run("", "-m", "lamina", "--help")
    assert result.returncode == 0 and "Usage: lamina" in result.stdout, result.stderr
    result = _run("", "-m", "lamina", "--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout
