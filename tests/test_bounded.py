"""Bounded memory on large photos (issue 23): windows at a bounded resolution, cropped layers, banded composites."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lamina.layers as layers_module
from lamina.layeringdiff.bounded import BoundedConfig, _upsample, object_window, quantise_background, read_photo
from lamina.layeringdiff.decompose import decompose_image
from lamina.layers import Layer, LayeredImage
from lamina.testing.peak import run_measured

ROOT = Path(__file__).resolve().parent.parent


def scene(height: int = 300, width: int = 400) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A uint8 photo: a horizontal gradient with a red rectangle and its box (x0, y0, x1, y1)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.linspace(60, 200, width).astype(np.uint8)[None, :, None]
    image[:, :, 2] = 170
    y0, y1, x0, x1 = height // 3, 2 * height // 3, 3 * width // 8, 5 * width // 8
    image[y0:y1, x0:x1] = (210, 50, 40)
    return image, (x0 - width // 16, y0 - height // 16, x1 + width // 16, y1 + height // 16)


@pytest.mark.parametrize("hint", ["box", "mask", "auto"])
def test_large_photo_gives_a_cropped_layer_and_an_exact_background_outside_it(hint):
    image, box = scene()
    kwargs = {"box": box} if hint == "box" else {} if hint == "auto" else {
        "mask": (np.abs(image.astype(int) - (210, 50, 40)).sum(axis=2) == 0)}
    small = BoundedConfig(max_side=128, band_rows=37)  # 400 px > 128: the bounded path, downscaled windows
    layered = decompose_image(image, method="classical", bounded=small, **kwargs)
    layer = layered.layers[0]
    left, top = layer.offset
    assert layer.width * layer.height < 0.6 * image.shape[0] * image.shape[1]  # its box, not the canvas
    assert left > 0 and top > 0
    # The object is in the layer, opaque, and the layers recompose the photo.
    inside = layer.alpha[150 - top, 200 - left]
    assert inside > 0.95
    assert layered.metadata["recomposition_psnr"] > 60.0
    np.testing.assert_allclose(layered.composite()[:, :, :3], image / 255.0, atol=1e-4)
    # Outside the layer's box the background is the photo itself.
    background = layered.background.rgb
    outside = np.ones(image.shape[:2], bool)
    outside[top:top + layer.height, left:left + layer.width] = False
    np.testing.assert_allclose(background[outside], image[outside] / 255.0, atol=1e-6)
    # Under the object the background is completed (no red left).
    assert background[150, 200, 0] < 0.6


def test_small_photo_and_no_config_take_the_whole_photo_path():
    image, box = scene(96, 128)
    default = decompose_image(image, box=box, method="classical")
    whole = decompose_image(image, box=box, method="classical", bounded=None)
    assert default.layers[0].offset == (0, 0) and default.layers[0].width == 128
    np.testing.assert_array_equal(default.layers[0].planes, whole.layers[0].planes)
    np.testing.assert_array_equal(default.background.planes, whole.background.planes)


def test_two_objects_and_split_effects_on_the_bounded_path():
    image, box = scene()
    image[20:60, 30:80] = (30, 200, 40)
    layered = decompose_image(image, box=[box, (20, 10, 95, 75)], method="classical",
                              bounded=BoundedConfig(max_side=128), split_effects=True)
    assert [layer.name for layer in layered.layers][-1] == "object_1"
    assert layered.metadata["recomposition_psnr"] > 60.0
    np.testing.assert_allclose(layered.composite()[:, :, :3], image / 255.0, atol=1e-4)


def test_window_and_upsampling_helpers():
    rows, cols = object_window((10, 20, 30, 60), 100, 200, 2.0)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (80, 80) and rows.start == 0
    low = np.random.default_rng(0).random((3, 7, 9), dtype=np.float32)
    import torch

    ref = torch.nn.functional.interpolate(torch.from_numpy(low)[None], size=(31, 40), mode="bilinear",
                                          align_corners=False)[0].numpy()
    out = _upsample(low, (31, 40), (5, 20), (3, 33), np.empty((3, 15, 30), np.float32))
    np.testing.assert_allclose(out, ref[:, 5:20, 3:33], atol=1e-5)


def test_banded_composite_is_bit_identical(monkeypatch):
    rng = np.random.default_rng(3)
    background = rng.random((70, 50, 4), dtype=np.float32)
    layers = [Layer(rng.random((40, 60, 4), dtype=np.float32), name=f"l{k}", offset=(-5 + 9 * k, 20 * k - 3),
                    opacity=0.7, blend_mode=mode) for k, mode in enumerate(["normal", "multiply", "screen"])]
    image = LayeredImage(background, layers)
    whole = [image.composite(), image.composite_uint8(), image.composite(background=False)]
    monkeypatch.setattr(layers_module, "COMPOSITE_BAND_ROWS", 7)
    banded = [image.composite(), image.composite_uint8(), image.composite(background=False)]
    for a, b in zip(whole, banded, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_read_photo_keeps_8_bit_files_in_uint8(tmp_path):
    image, _ = scene(20, 30)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 128, np.uint8)])).save(tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        photo = read_photo(tmp_path / name)
        assert photo.dtype == np.uint8 and photo.shape == (20, 30, 3)
        np.testing.assert_array_equal(photo, image)
    # 16-bit colour stays uint16 (exact), and the bounded path keeps it that way: a compact uint16 background.
    import cv2

    deep = (image.astype(np.uint16) * 257 + np.arange(30, dtype=np.uint16)[None, :, None]).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])
    photo = read_photo(tmp_path / "deep.png")
    assert photo.dtype == np.uint16
    np.testing.assert_array_equal(photo, deep)
    from lamina.errors import InputFileError

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputFileError, match="bad.png"):
        read_photo(tmp_path / "bad.png")


@pytest.mark.slow
@pytest.mark.parametrize("height, width", [(3000, 4000), (5477, 7303)])
def test_a_12_and_a_40_mpx_photo_decompose_within_1_5_gb(tmp_path, height, width):
    """``lamina decompose`` (built-in model, PSD + sheet) on a 4000 x 3000 and a 7303 x 5477 photo: peak RSS of the
    process <= 1.5 GB."""
    image, box = scene(height, width)
    noise = np.random.default_rng(0).integers(-12, 13, image.shape, dtype=np.int16)
    noise += image
    Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).save(tmp_path / "photo.jpg", quality=92)
    del image, noise
    command = [sys.executable, "-m", "lamina", "decompose", str(tmp_path / "photo.jpg"), "--box",
               ",".join(map(str, box)), "--out", str(tmp_path / "out.psd"), "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), LAMINA_PROGRESS="0")
    run = run_measured(command, env=env, timeout=900)  # the command's own peak, not this process's size
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.peak_bytes is not None and run.peak_bytes <= 1.5 * (1 << 30)
    assert (tmp_path / "out.psd").stat().st_size > 0


@pytest.mark.parametrize("max_side", [128, 380])  # 380: the 300 px window runs at full resolution (no upsampling)
def test_bounded_path_stores_compact_layers_that_still_recompose_the_photo(max_side):
    """The background stays uint8 (4 bytes a pixel), the object's layer uint16 (8), and the composite is the photo
    to within the uint16 rounding of the re-solved colour (t / 131070), i.e. at the PSNR cap."""
    image, box = scene()
    layered = decompose_image(image, box=box, method="classical",
                              bounded=BoundedConfig(max_side=max_side, band_rows=37))
    background, layer = layered.background, layered.layers[0]
    assert background.is_compact and background.stored.dtype == np.uint8
    deep = decompose_image(image.astype(np.uint16) * 257, box=box, method="classical",
                           bounded=BoundedConfig(max_side=max_side, band_rows=37))  # 16 bits: uint16 planes
    assert deep.background.stored.dtype == np.uint16 and deep.layers[0].stored.dtype == np.uint16
    assert deep.metadata["recomposition_psnr"] == 100.0
    assert layer.is_compact and layer.stored.dtype == np.uint16
    assert layered.metadata["recomposition_psnr"] == 100.0
    error = np.abs(layered.composite()[:, :, :3].astype(np.float64) - image / 255.0)
    assert error.max() <= 1.0 / 131070 + 1e-6
    assert background.is_compact  # compositing read it in bands, without converting it
    # Outside the layer's box the background holds the photo's own bytes.
    left, top = layer.offset
    outside = np.ones(image.shape[:2], bool)
    outside[top:top + layer.height, left:left + layer.width] = False
    np.testing.assert_array_equal(background.stored[:3].transpose(1, 2, 0)[outside], image[outside])


@pytest.mark.parametrize("max_side", [128, 380])
def test_bands_on_several_threads_give_the_same_layers(max_side):
    """The full-resolution bands run on torch's thread count (run_bands): bit-identical to one thread."""
    import torch

    image, box = scene()
    config = BoundedConfig(max_side=max_side, band_rows=23)  # 9+ bands: more than the pool keeps in flight
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = decompose_image(image, box=box, method="classical", bounded=config)
        torch.set_num_threads(3)
        three = decompose_image(image, box=box, method="classical", bounded=config)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one.all_layers, three.all_layers, strict=True):
        assert a.offset == b.offset
        np.testing.assert_array_equal(a.stored, b.stored)


def test_quantise_background_by_hand():
    """B rounds to 1/255 levels; soft pixels solve F = (I - (1 - t) B) / t; a nearly clear pixel whose F would leave
    [0, 1] takes F = B = I; clear and opaque pixels keep F."""
    image = np.array([[[0.4, 0.4, 0.5, 0.6]]], np.float32).reshape(1, 1, 4).repeat(3, axis=0)  # [3, 1, 4]
    image = np.floor(image * 255 + 0.5) / np.float32(255)  # integer levels, as a uint8 canvas reads
    total = np.array([[0.5, 0.001, 0.0, 1.0]], np.float32)
    foreground = np.full((3, 1, 4), 0.3, np.float32)
    background = np.full((3, 1, 4), 0.2011, np.float32)  # 51.28 / 255: rounds to 51
    levels = quantise_background(image, total, foreground, background, 255.0)
    b = np.float32(51) / np.float32(255)
    # t = 0.5: F = (I - 0.5 B) / 0.5 = 2 I - B
    np.testing.assert_allclose(foreground[:, 0, 0], 2 * image[:, 0, 0] - b, rtol=0, atol=1e-6)
    assert levels[0, 0, 0] == 51
    # t = 0.001: F would be about 200: F = B = I instead.
    np.testing.assert_array_equal(foreground[:, 0, 1], image[:, 0, 1])
    assert levels[0, 0, 1] == round(float(image[0, 0, 1]) * 255)
    # clear (t = 0) and opaque (t = 1) pixels: F untouched, B rounded
    np.testing.assert_array_equal(foreground[:, 0, 2:], np.float32(0.3))
    assert (levels[:, 0, 2:] == 51).all()
    # the recomposition holds on every pixel
    t = total[0]
    recomposed = t * foreground[:, 0] + (1 - t) * levels[:, 0] / np.float32(255)
    np.testing.assert_allclose(recomposed[:, :2], image[:, 0, :2], rtol=0, atol=1e-6)
