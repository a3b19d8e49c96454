"""FurryGAN as a tool: FurryGAN.from_pretrained, segment batches (folder, bad file, resume), shared options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lamina.cli import main
from lamina.furrygan import FurryGAN
from lamina.furrygan.inference import BUILTIN_DIR
from lamina.io import load
from lamina.layers import LayeredImage

pytestmark = pytest.mark.skipif(not (BUILTIN_DIR / "model.safetensors").is_file(), reason="built-in model missing")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_from_pretrained_generate_and_segment_pil_numpy_torch():
    gan = FurryGAN.from_pretrained("builtin", device="cpu")
    assert gan.device.type == "cpu" and gan.resolution == 32 and gan.discriminator is not None
    samples = gan.generate(2, truncation=0.5, seed=3)
    assert len(samples) == 2 and all(isinstance(s, LayeredImage) and s.size == (32, 32) for s in samples)
    again = gan.generate(2, truncation=0.5, seed=3)
    np.testing.assert_array_equal(samples[1].layers[0].pixels, again[1].layers[0].pixels)
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    a = gan.segment(Image.fromarray(rgb), steps=2)
    b = gan.segment(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, steps=2)
    assert a.size == (50, 40) and b.size == (50, 40)
    np.testing.assert_allclose(a.layers[0].alpha, b.layers[0].alpha, atol=1e-5)
    both = gan.segment([rgb, rgb[:32, :32]], steps=1, size="model")
    assert [x.size for x in both] == [(32, 32), (32, 32)]
    assert gan.to("cpu") is gan


def test_segment_folder_reports_bad_file_and_resumes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        pixels = (np.random.default_rng(i).random((36, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    (photos / "bad.png").write_bytes(b"broken")
    out = tmp_path / "out"
    result = run("furrygan", "segment", photos, "--out", out, "--steps", "1", "--threads", "1", "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert "2 written, 0 already present (skipped), 1 failed" in result.output and "bad.png" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["p0.psd", "p0_mask.png", "p1.psd", "p1_mask.png"]
    assert load(out / "p1.psd").metadata["source"] == "p1.png"
    (out / "p1.psd").unlink()
    result = run("furrygan", "segment", photos / "p*.png", "--out", out, "--steps", "1", "--format", "psd",
                 "--overwrite")
    assert result.exit_code == 0 and "2 written" in result.output, result.output
    (out / "p1.psd").unlink()
    result = run("furrygan", "segment", photos / "p*.png", "--out", out, "--steps", "1")
    assert result.exit_code == 0 and "1 written, 1 already present" in result.output, result.output


def test_generate_preview_switch_and_device(tmp_path):
    result = run("furrygan", "generate", "--n", "1", "--out", tmp_path / "a.psd", "--no-preview", "--seed", "2")
    assert result.exit_code == 0 and (tmp_path / "a.psd").is_file() and not (tmp_path / "a_sheet.png").exists()
    result = run("furrygan", "generate", "--n", "2", "--out", tmp_path / "b.ora", "--device", "cpu",
                 "--dtype", "float32", "--threads", "1")
    assert result.exit_code == 0 and (tmp_path / "b_001.ora").is_file() and (tmp_path / "b_sheet.png").is_file()
    if not torch.cuda.is_available():
        result = run("furrygan", "generate", "--out", tmp_path / "c.psd", "--device", "cuda")
        assert result.exit_code == 2 and "sees no CUDA device" in result.output
    (tmp_path / "d_001.psd").write_bytes(b"x")  # one of the outputs taken: nothing is written
    result = run("furrygan", "generate", "--n", "2", "--out", tmp_path / "d.psd")
    assert result.exit_code == 1 and "already exists" in result.output and not (tmp_path / "d_000.psd").exists()
