"""The core commands of the ``lamina`` CLI, end to end through click."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from lamina.cli import main
from lamina.io import load


def run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env={"LAMINA_PROGRESS": "0"})


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = run("demo", "--out", out, "--n", "2", "--size", "64", "--seed", "3")
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_every_command_with_a_description() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("demo", "convert", "view", "info", "crop", "synth", "metrics"):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split()) > 2  # a one-line description follows the name


def test_demo_writes_every_format(demo_dir: Path) -> None:
    for stem in ("scene_00", "scene_01"):
        assert (demo_dir / f"{stem}.psd").is_file() and (demo_dir / f"{stem}.ora").is_file()
        assert (demo_dir / stem / "layers.json").is_file()
    assert (demo_dir / "contact_sheet.png").is_file()
    decomposed = load(demo_dir / "decomposed_00.psd")  # the built-in LayeringDiff model
    assert decomposed.size == (64, 64) and decomposed.metadata["method"] != "classical"
    sample = load(demo_dir / "furrygan_01.psd")  # the built-in FurryGAN
    assert [layer.name for layer in sample.all_layers] == ["background", "foreground"]
    psd, ora, stack = (load(demo_dir / name) for name in ("scene_00.psd", "scene_00.ora", "scene_00"))
    assert [layer.name for layer in psd.all_layers] == [layer.name for layer in ora.all_layers]
    np.testing.assert_allclose(psd.composite(), stack.composite(), atol=1.5 / 255)
    assert stack.metadata["seed"] == 3 and "caption" in stack.metadata


def test_demo_refuses_to_overwrite(demo_dir: Path) -> None:
    before = (demo_dir / "scene_00.psd").read_bytes()
    result = run("demo", "--out", demo_dir, "--n", "2", "--size", "64", "--seed", "4")
    assert_one_line_error(result, "exists", "--overwrite")
    assert (demo_dir / "scene_00.psd").read_bytes() == before


def test_convert_info_view_crop(demo_dir: Path, tmp_path: Path) -> None:
    ora = tmp_path / "x.ora"
    assert run("convert", demo_dir / "scene_01.psd", ora).exit_code == 0
    assert_one_line_error(run("convert", demo_dir / "scene_01.psd", ora), str(ora))
    assert run("convert", demo_dir / "scene_01.psd", ora, "--overwrite").exit_code == 0
    info = run("info", ora)
    assert info.exit_code == 0 and "64x64" in info.output and "background" in info.output
    sheet = tmp_path / "sheet.png"
    assert run("view", ora, demo_dir / "scene_00", "--out", sheet).exit_code == 0 and sheet.is_file()
    cropped = tmp_path / "crop.psd"
    assert run("crop", ora, cropped, "--box", "8,8,40,32").exit_code == 0
    assert load(cropped).size == (32, 24)


def test_crop_box_outside_the_image_is_refused(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "crop.psd"
    assert_one_line_error(run("crop", demo_dir / "scene_00", out, "--box", "0,0,65,10"), "outside the 64x64 image")
    assert_one_line_error(run("crop", demo_dir / "scene_00", out, "--box", "1,2,3"), "four integers")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_synth_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run("synth", "--out", data, "--n", "3", "--size", "48", "--seed", "1")
    assert result.exit_code == 0, result.output
    same = run("metrics", data, data, "--json")
    assert same.exit_code == 0, same.output
    report = json.loads(same.output)
    assert report["count"] == 3
    assert report["mean"]["alpha_sad"] == 0 and report["mean"]["mask_miou"] == 1
    table = run("metrics", data, data)
    assert "| alpha_mse | 0.0000 |" in table.output
    other = tmp_path / "other"
    assert run("synth", "--out", other, "--n", "3", "--size", "48", "--seed", "2").exit_code == 0
    worse = json.loads(run("metrics", other, data, "--json").output)
    assert worse["mean"]["alpha_sad"] > 0 and worse["mean"]["mask_miou"] < 1
    assert_one_line_error(run("synth", "--out", tmp_path / "x", "--n", "1", "--preset", "nope"), "nope")


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "truncated.psd", "truncated.psd"),
        (b"just some text", "notes.ora", "notes.ora"),
    ],
)
def test_bad_input_files_give_one_line(tmp_path: Path, content: bytes, name: str, needle: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out.psd"
    assert_one_line_error(run("convert", bad, out), needle)
    assert not out.exists()


def test_missing_input_and_unknown_format(tmp_path: Path) -> None:
    assert_one_line_error(run("info", tmp_path / "nope.psd"), "nope.psd")
    assert_one_line_error(run("metrics", tmp_path / "a", tmp_path / "b"), "no such file")
    src = tmp_path / "s"
    assert run("synth", "--out", src, "--n", "1", "--size", "32").exit_code == 0
    assert_one_line_error(run("convert", next(src.iterdir()), tmp_path / "out.xcf"), ".xcf")
