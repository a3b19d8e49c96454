"""Safe single-image reading (every bad input and mode conversion) and atomic PNG writing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamina.errors import InputFileError, LayerError, OutputExistsError
from lamina.io import MAX_IMAGE_PIXELS, atomic_output, read_image, read_rgb, read_rgba, write_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` (its pixel data is a few zero bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(InputFileError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


# ------------------------------------------------------------------ bad input
def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path):
    assert "folder" in _error(tmp_path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    assert "not an image" in _error(path)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    assert "cannot decode" in _error(path)


def test_bomb_over_our_limit_refused_from_header(tmp_path):
    path = _png_header(tmp_path / "bomb.png", 10_000, 5_000)  # 50 MP: over ours (40 MP), under Pillow's
    assert 10_000 * 5_000 > MAX_IMAGE_PIXELS
    assert "more than" in _error(path)


@pytest.mark.parametrize("side", [10_000, 100_000])  # Pillow's warning (> 89 MP), then its error (> 179 MP)
def test_bomb_over_pillows_limit_becomes_our_error(tmp_path, side):
    path = _png_header(tmp_path / "huge.png", side, side)
    assert "decompression bomb" in _error(path, max_pixels=10**12)


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(path)
    assert "more than 99 pixels" in _error(path, max_pixels=99)
    assert read_image(path, max_pixels=100).shape == (10, 10, 3)


# ------------------------------------------------------------ mode conversion
def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (16, 8), (255, 0, 0)).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = read_image(path)
    assert image.shape == (8, 16, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[4, 8], [1, 0, 0], atol=0.05)


def test_16_bit_greyscale_keeps_precision(tmp_path):
    path = tmp_path / "deep.png"
    values = (np.arange(6 * 7).reshape(6, 7) * 1500).astype(np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    image = read_image(path)
    assert image.shape == (6, 7, 3)
    np.testing.assert_allclose(image[:, :, 1], values / 65535, atol=1e-6)


def test_32_bit_integer_greyscale(tmp_path):
    path = tmp_path / "int.tif"
    Image.fromarray(np.full((3, 4), 70000, np.int32), mode="I").save(path)
    np.testing.assert_allclose(read_image(path), 1.0)  # read as 16-bit, clipped


def test_palette_with_transparency_becomes_rgba(tmp_path):
    path = tmp_path / "pal.png"
    image = Image.new("P", (4, 2))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(path, transparency=0)
    pixels = read_image(path)
    assert pixels.shape == (2, 4, 4)
    np.testing.assert_array_equal(pixels[0, 1], [1, 0, 0, 1])
    assert pixels[0, 0, 3] == 0


@pytest.mark.parametrize(("mode", "value", "expected"), [
    ("L", 51, [0.2, 0.2, 0.2]),
    ("LA", (51, 102), [0.2, 0.2, 0.2, 0.4]),
    ("1", 1, [1, 1, 1]),
    ("RGBA", (255, 0, 51, 0), [1, 0, 0.2, 0]),
])
def test_other_modes(tmp_path, mode, value, expected):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (3, 2), value).save(path)
    np.testing.assert_allclose(read_image(path)[1, 2], expected, atol=1e-6)


def test_read_rgb_and_rgba_variants(tmp_path):
    rgba, rgb = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGBA", (3, 2), (10, 20, 30, 40)).save(rgba)
    Image.new("L", (3, 2), 255).save(rgb)
    assert read_rgb(rgba).shape == (2, 3, 3) and read_rgba(rgb).shape == (2, 3, 4)
    assert (read_rgba(rgb)[:, :, 3] == 1).all()


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "rotated.png"
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    Image.fromarray(pixels).save(path, exif=exif)
    image = read_image(path)
    assert image.shape == (3, 2, 3)
    assert image[0, 1, 0] == 1 and image[:, :, 0].sum() == 1  # the marker ends top-right


# -------------------------------------------------------------------- writing
@pytest.mark.parametrize("image", [
    np.full((4, 5, 3), 0.5, np.float32),
    np.zeros((4, 5), np.uint8),
    np.ones((4, 5, 4), np.float64),
    torch.rand(4, 4, 5),
    Image.new("RGB", (5, 4)),
])
def test_write_png_accepts(tmp_path, image):
    path = write_png(image, tmp_path / "out.png")
    assert Image.open(path).size == (5, 4)


def test_write_png_round_trip_exact(tmp_path):
    pixels = np.random.default_rng(1).random((5, 6, 4)).astype(np.float32)
    back = read_image(write_png(pixels, tmp_path / "x.png"))
    assert np.abs(back - pixels).max() <= 0.5 / 255 + 1e-6


def test_write_png_rejects_nan_without_touching_disk(tmp_path):
    pixels = np.zeros((4, 4, 3), np.float32)
    pixels[1, 1, 1] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        write_png(pixels, tmp_path / "nan.png")
    assert list(tmp_path.iterdir()) == []


def test_write_png_refuses_overwrite(tmp_path):
    path = write_png(np.zeros((2, 2, 3)), tmp_path / "x.png")
    with pytest.raises(OutputExistsError, match="x.png"):
        write_png(np.ones((2, 2, 3)), path)
    assert read_image(path).max() == 0
    write_png(np.ones((2, 2, 3)), path, overwrite=True)
    assert read_image(path).min() == 1


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_failure_keeps_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_atomic_output_swaps_folders(tmp_path):
    target = tmp_path / "stack"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["stack"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_atomic_output_creates_parent_folders(tmp_path):
    with atomic_output(tmp_path / "a" / "b" / "c.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_atomic_output_gives_files_the_default_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        for target, make in ((tmp_path / "weights.bin", lambda p: p.write_bytes(b"x")),
                             (tmp_path / "folder", lambda p: (p.mkdir(), (p / "a.bin").write_bytes(b"x")))):
            with atomic_output(target) as tmp:
                make(tmp)
                for f in [tmp] if tmp.is_file() else list(tmp.iterdir()):
                    os.chmod(f, 0o600)  # as safetensors creates its files
            files = [target] if target.is_file() else list(target.iterdir())
            assert all(f.stat().st_mode & 0o777 == 0o644 for f in files)
    finally:
        os.umask(mask)
