"""Issue 21: the learned cut-out refiner (network, input window, loss, training, loading, CLI) and photo scenes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lamina.cli import main
from lamina.data.photo_scenes import ObjectFolder, object_scene, photo_scene, resize_rgba, silhouette_shadow
from lamina.errors import ConfigError, LaminaError
from lamina.layeringdiff.cutout import (
    BUILTIN_DIR,
    CutoutNet,
    CutoutNetConfig,
    cutout_loss,
    cutout_window,
    load_refiner,
    network_input,
    object_probability,
    refine_mask,
)
from lamina.layeringdiff.cutout_train import camouflage, make_sample, resolve_config, training_loop
from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box, grabcut_mask, reach_box_sides

TINY = CutoutNetConfig(working_size=32, channels=(8, 16), dilations=(1,))


def _photos(n: int = 3, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size] / size
    planes = [[0.5 + 0.4 * np.sin(6 * (k + 1) * xx), 0.5 + 0.3 * np.cos(4 * yy), 0.3 + 0.1 * k + 0 * xx]
              for k in range(n)]
    noise = [0.05 * rng.standard_normal((size, size, 3)) for _ in range(n)]
    return [np.clip(np.dstack(p) + e, 0, 1).astype(np.float32) for p, e in zip(planes, noise, strict=True)]


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, photo in enumerate(_photos()):
        Image.fromarray((photo * 255).astype(np.uint8)).save(folder / f"p{k}.png")
    return folder


def _cutout(k: int, size: int = 40) -> np.ndarray:
    """An RGBA object: a soft-edged ellipse of a colour gradient (uint8)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = np.hypot((yy - size / 2) / (0.45 * size), (xx - size / 2) / (0.3 * size))
    alpha = np.clip((1.0 - r) * size * 0.3, 0, 1)
    colour = np.dstack([xx / size, yy / size, np.full_like(xx, 0.2 + 0.1 * k)])
    return (np.dstack([colour, alpha]) * 255).astype(np.uint8)


@pytest.fixture
def object_folder(tmp_path):
    folder = tmp_path / "objects"
    (folder / "animals").mkdir(parents=True)
    for k in range(24):
        Image.fromarray(_cutout(k), "RGBA").save(folder / "animals" / f"thing{k}.png")
    glyph = _cutout(0)
    glyph[..., :3] = 0  # one colour: a letter, not an object
    Image.fromarray(glyph, "RGBA").save(folder / "glyph.png")
    Image.fromarray(_cutout(1)[..., :3], "RGB").save(folder / "opaque.png")  # no alpha
    return folder


def test_object_folder_splits_and_skips(object_folder):
    every = ObjectFolder(object_folder)
    assert len(every.objects) == 24 and "glyph.png" not in every.names and "opaque.png" not in every.names
    assert all(o.dtype == np.float32 and o.shape[2] == 4 and 0 <= o.min() and o.max() <= 1 for o in every.objects)
    # Cropped to the object: the opaque part touches every side but one pixel of soft edge.
    assert all((o[1:-1, 1:-1, 3] > 0.5).any(axis=0).all() for o in every.objects)
    splits = {name: ObjectFolder.split_of(Path(name).name) for name in every.names}
    parts = [ObjectFolder.of(object_folder, split).names
             for split in ("train", "validation", "test") if split in splits.values()]
    assert sorted(sum(parts, [])) == sorted(every.names)  # disjoint and complete
    # The split is a fixed function of the file name (crc32), the same on every machine.
    assert [ObjectFolder.split_of(n) for n in ("bear.png", "balloon.png")] == ["train", "validation"]
    with pytest.raises(ConfigError, match="not a folder"):
        ObjectFolder(object_folder / "missing")
    (object_folder / "empty").mkdir()
    with pytest.raises(ConfigError, match="no usable RGBA"):
        ObjectFolder(object_folder / "empty")
    with pytest.raises(ConfigError, match="split"):
        ObjectFolder(object_folder, "holdout")


def test_resize_rgba_keeps_the_colour_under_alpha_zero_out():
    rgba = np.zeros((4, 6, 4), np.float32)
    rgba[:, :3] = (1.0, 0.0, 0.0, 1.0)  # opaque red
    rgba[:, 3:] = (0.0, 1.0, 0.0, 0.0)  # transparent green: must not tint the edge
    small = resize_rgba(rgba, 2, 2)  # each output pixel averages 3 columns: 1.5 red, 1.5 transparent
    assert small.shape == (2, 2, 4) and small.dtype == np.float32
    np.testing.assert_allclose(small[:, 0], [[1.0, 0.0, 0.0, 1.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(small[:, 1, 3], 0.0, atol=1e-6)
    edge = resize_rgba(rgba[:, 2:4], 1, 4)  # one red and one transparent column: half opaque, still red
    np.testing.assert_allclose(edge[:, 0], [[1.0, 0.0, 0.0, 0.5]] * 4, atol=1e-6)


def test_silhouette_shadow_lies_behind_and_leans():
    alpha = np.zeros((64, 64), np.float32)
    alpha[20:40, 28:36] = 1.0  # an upright bar standing on row 39
    rng = np.random.default_rng(0)
    shadow = silhouette_shadow(alpha, rng)
    assert shadow.shape == alpha.shape and 0 <= shadow.min() and shadow.max() <= 0.75
    outside = shadow * (alpha < 0.5)
    rows, cols = np.nonzero(outside > 0.05)
    assert rows.size and rows.max() <= 42 and rows.min() >= 39 - 0.45 * 20 - 4  # behind, at most 45 % long
    rng = np.random.default_rng(0)
    length, lean = rng.uniform(0.12, 0.45), rng.uniform(-1.0, 1.0)
    centre = (outside.sum(axis=0) * np.arange(64)).sum() / outside.sum()
    assert np.sign(centre - 31.5) == np.sign(lean) and length > 0
    assert not silhouette_shadow(np.zeros((8, 8), np.float32), rng).any()


def test_object_scene_is_exact_with_its_shadow_in_the_layer(object_folder):
    objects = ObjectFolder(object_folder).objects
    photos = _photos()
    a, b = object_scene(3, 64, photos, objects, p_shadow=1.0), object_scene(3, 64, photos, objects, p_shadow=1.0)
    assert np.array_equal(a["composite"], b["composite"]) and a["box"] == b["box"]
    layer = a["layer"]
    over = layer[..., 3:] * layer[..., :3] + (1 - layer[..., 3:]) * a["background"]
    np.testing.assert_allclose(a["composite"], over, atol=1e-5)
    assert np.all(layer[..., 3] >= a["object_alpha"] - 1e-6)
    assert (layer[..., 3] - a["object_alpha"]).max() > 0.1  # the shadow belongs to the layer
    x0, y0, x1, y1 = a["box"]
    rows, cols = np.nonzero(a["object_alpha"] > 0.5)
    assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
    plain = object_scene(3, 64, photos, objects, p_shadow=0.0)
    np.testing.assert_allclose(plain["layer"][..., 3], plain["object_alpha"])


def test_photo_scene_is_exact_and_deterministic():
    photos = _photos()
    a, b = photo_scene(7, 64, photos), photo_scene(7, 64, photos)
    assert np.array_equal(a["composite"], b["composite"]) and a["box"] == b["box"]
    layer = a["layer"]
    over = layer[..., 3:] * layer[..., :3] + (1 - layer[..., 3:]) * a["background"]
    np.testing.assert_allclose(a["composite"], over, atol=1e-5)
    x0, y0, x1, y1 = a["box"]
    rows, cols = np.nonzero(a["object_alpha"] > 0)
    assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
    loose = photo_scene(7, 64, photos, pad=0.2)["box"]
    assert loose[0] <= x0 and loose[2] >= x1 and (loose[2] - loose[0]) >= (x1 - x0)


def test_camouflage_gives_part_of_the_object_its_surroundings_colours():
    """Alpha, box and background stay; a part of the object moves to the colour next to it; the rest stays."""
    size = 64
    background = np.zeros((size, size, 3), np.float32)
    background[:, :, 0] = 0.9  # a red saucer ...
    background[:, :, 2] = np.linspace(0.0, 0.4, size)[None, :]  # ... with a gradient, for the spread
    yy, xx = np.mgrid[0:size, 0:size]
    alpha = (np.hypot(yy - 32, xx - 32) < 14).astype(np.float32)
    layer = np.dstack([np.full((size, size), 0.2), np.full((size, size), 0.8), np.full((size, size), 0.3),
                       alpha]).astype(np.float32)  # ... and a green object
    composite = alpha[..., None] * layer[..., :3] + (1 - alpha[..., None]) * background
    scene = {"composite": composite, "layer": layer, "background": background, "object_alpha": alpha,
             "box": (16, 16, 48, 48), "truth": "stale once recoloured"}
    out = camouflage(scene, np.random.default_rng(3))
    for key in ("background", "object_alpha", "box"):
        assert out[key] is scene[key]
    assert "truth" not in out
    assert out["layer"] is not layer and np.array_equal(out["layer"][..., 3], alpha)
    over = alpha[..., None] * out["layer"][..., :3] + (1 - alpha[..., None]) * background
    np.testing.assert_allclose(out["composite"], over, atol=1e-6)
    outside = alpha == 0
    np.testing.assert_array_equal(out["composite"][outside], composite[outside])
    moved = np.abs(out["layer"][..., :3] - layer[..., :3]).sum(-1) > 0.3
    share = moved[alpha > 0].mean()
    assert 0.25 <= share <= 1.0  # CAMOUFLAGE_AREA, less the soft edge
    # The moved part is red now, near the saucer's colour; the rest is still the object's green.
    red = out["layer"][moved]
    assert red[:, 0].mean() > 0.6 and red[:, 1].mean() < 0.3
    kept = (alpha > 0) & ~moved
    if kept.any():
        np.testing.assert_allclose(out["layer"][kept][:, :3].mean(0), [0.2, 0.8, 0.3], atol=0.1)
    # Deterministic in its generator; drawn only when asked for (old runs see their old samples).
    assert np.array_equal(camouflage(scene, np.random.default_rng(3))["composite"], out["composite"])
    photos = _photos()
    plain, camo = resolve_config("tiny", photos="x"), resolve_config("tiny", photos="x", p_camouflage=1.0)
    assert resolve_config("tiny", photos="x", p_camouflage=0.0) == plain
    assert not np.array_equal(make_sample(4, plain, photos)["input"], make_sample(4, camo, photos)["input"])
    with pytest.raises(ConfigError, match="p_camouflage"):
        resolve_config("tiny", photos="x", p_camouflage=1.5)


def test_window_and_input_planes():
    assert cutout_window((10, 20, 30, 60), 0.25) == (-10, 10, 60)  # side = 40 * 1.5, centred on the box
    image = np.full((40, 50, 3), 0.25, np.float32)
    mask = np.zeros((40, 50), bool)
    mask[5:15, 2:12] = True
    config = CutoutNetConfig(working_size=16, channels=(8, 16), dilations=(1,), context=0.5)
    inputs, (x, y, side) = network_input(image, (0, 0, 20, 20), mask, config)
    assert inputs.shape == (6, 16, 16) and inputs.dtype == np.float32
    assert (x, y, side) == (-10, -10, 40)  # the window leaves the image at the top left
    np.testing.assert_allclose(inputs[:3], -0.5)  # image 0.25 -> [-1, 1]
    box_plane, inside = inputs[4], inputs[5]
    assert box_plane[4:12, 4:12].min() == 1.0 and box_plane[0, 0] == -1.0 and box_plane[14, 14] == -1.0
    assert inside[0, 0] == -1.0 and inside[15, 15] == 1.0  # outside / inside the image
    assert inputs[3].max() == 1.0 and inputs[3].min() == -1.0


def test_network_shapes_backward_and_untrained_net_keeps_grabcut():
    net = CutoutNet(TINY)
    x = torch.rand(2, 6, 32, 32) * 2 - 1
    out = net(x)
    assert out.logits.shape == (2, 1, 32, 32)
    out.logits.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    # Zero-initialised head: the logits are GrabCut's mask times the prior gain.
    torch.testing.assert_close(out.logits, TINY.prior_gain * x[:, 3:4])
    with pytest.raises(LaminaError, match=r"\[N, 6, S, S\]"):
        net(torch.zeros(1, 5, 32, 32))
    scene = photo_scene(3, 64, _photos())
    grabcut = grabcut_mask(scene["composite"], scene["box"])
    refined = refine_mask(net.eval(), scene["composite"], scene["box"], grabcut)
    assert refined.dtype == bool and refined.shape == grabcut.shape
    assert (refined != grabcut).mean() < 0.02  # only resampling at the working size differs
    x0, y0, x1, y1 = scene["box"]
    outside = np.ones_like(refined)
    outside[y0:y1, x0:x1] = False
    assert not refined[outside].any()


def test_mirror_average_is_the_mean_of_the_window_and_its_mirror():
    torch.manual_seed(0)
    net = CutoutNet(TINY)
    torch.nn.init.normal_(net.head[-1].weight, std=0.3)  # a trained-looking, asymmetric net
    net.eval()
    scene = photo_scene(3, 64, _photos())
    image, box = scene["composite"], scene["box"]
    grabcut = grabcut_mask(image, box)
    inputs, (x, y, side) = network_input(image, box, grabcut, TINY)
    with torch.no_grad():
        both = torch.sigmoid(net(torch.from_numpy(np.stack([inputs, inputs[:, :, ::-1].copy()]))).logits)[:, 0]
    expected = ((both[0] + both[1].flip(-1)) / 2).numpy()
    plain = object_probability(net, image, box, grabcut)
    mirrored = object_probability(net, image, box, grabcut, mirror=True)
    assert not np.allclose(plain, mirrored, atol=1e-3)
    import cv2

    window = cv2.resize(expected, (side, side), interpolation=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = box
    np.testing.assert_allclose(mirrored[y0:y1, x0:x1], window[y0 - y:y1 - y, x0 - x:x1 - x], atol=1e-5)


def test_cutout_loss_golden_numbers():
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    losses = cutout_loss(logits, target)
    # p = 0.5 everywhere: BCE = ln 2; Dice = 1 - 2 * 0.5 / (1 + 1) = 0.5.
    assert losses["bce"].item() == pytest.approx(math.log(2.0))
    assert losses["dice"].item() == pytest.approx(0.5)
    assert losses["loss"].item() == pytest.approx(math.log(2.0) + 0.5)
    # p = (0.75, 0.25): BCE = -ln 0.75; Dice = 1 - 2 * 0.75 / (1 + 1) = 0.25; weight 2.
    losses = cutout_loss(torch.tensor([[[[math.log(3.0), -math.log(3.0)]]]]), target, dice_weight=2.0)
    assert losses["bce"].item() == pytest.approx(-math.log(0.75), rel=1e-5)
    assert losses["dice"].item() == pytest.approx(0.25, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(-math.log(0.75) + 0.5, rel=1e-5)


def test_save_load_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    net = CutoutNet(TINY)
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    net.save_pretrained(tmp_path / "refiner")
    saved = json.loads((tmp_path / "refiner" / "config.json").read_text())
    assert saved["channels"] == [8, 16] and saved["_class_name"] == "CutoutNet"
    loaded = CutoutNet.from_pretrained(tmp_path / "refiner")
    x = torch.rand(1, 6, 32, 32)
    torch.testing.assert_close(loaded(x).logits, net.eval()(x).logits)
    with pytest.raises(LaminaError, match="not a cut-out refiner"):
        CutoutNet.from_pretrained(tmp_path)
    (tmp_path / "refiner" / "config.json").write_text(json.dumps({"channels": [8, 24], "dilations": [1],
                                                                  "working_size": 32}))
    with pytest.raises(LaminaError, match="weights do not fit"):
        CutoutNet.from_pretrained(tmp_path / "refiner")
    with pytest.raises(ConfigError, match="multiple"):
        CutoutNetConfig(working_size=31, channels=(8, 16))


def test_builtin_refiner_loads_and_is_small():
    net = load_refiner("builtin")
    assert isinstance(net, CutoutNet) and not net.training
    size = sum(p.stat().st_size for p in BUILTIN_DIR.iterdir())
    assert size < 5 * 2**20
    assert (BUILTIN_DIR / "README.md").is_file()


def test_foreground_from_box_uses_the_refiner(tmp_path):
    scene = photo_scene(11, 64, _photos())
    plain = foreground_from_box(scene["composite"], scene["box"], ForegroundConfig(refiner=None))
    assert np.array_equal(plain.mask, grabcut_mask(scene["composite"], scene["box"]))
    # A refiner that marks the whole box as object (head bias large): the mask is the box.
    net = CutoutNet(TINY)
    with torch.no_grad():
        net.head[-1].bias.fill_(50.0)
    net.save_pretrained(tmp_path / "all")
    estimate = foreground_from_box(scene["composite"], scene["box"], ForegroundConfig(refiner=tmp_path / "all"))
    x0, y0, x1, y1 = scene["box"]
    assert estimate.mask[y0:y1, x0:x1].all() and estimate.mask.sum() == (x1 - x0) * (y1 - y0)
    # Where GrabCut finds nothing (a flat image), the refiner still looks; if it finds nothing either: an error.
    flat = np.full((64, 64, 3), 0.5, np.float32)
    with pytest.raises(LaminaError, match="GrabCut found no object"):
        foreground_from_box(flat, (16, 16, 48, 48), ForegroundConfig(refiner=None))
    found = foreground_from_box(flat, (16, 16, 48, 48), ForegroundConfig(refiner=tmp_path / "all"))
    assert found.mask.sum() == 32 * 32
    # A refiner that finds nothing: the second GrabCut pass has nothing to start from, GrabCut's mask stays.
    with torch.no_grad():
        net.head[-1].bias.fill_(-50.0)
    net.save_pretrained(tmp_path / "none")
    estimate = foreground_from_box(scene["composite"], scene["box"], ForegroundConfig(refiner=tmp_path / "none"))
    assert np.array_equal(estimate.mask, plain.mask)
    with pytest.raises(LaminaError, match="neither GrabCut nor the cut-out refiner"):
        foreground_from_box(flat, (16, 16, 48, 48), ForegroundConfig(refiner=tmp_path / "none"))
    with pytest.raises(LaminaError, match="refiner"):
        ForegroundConfig(refiner=3)
    for bad in ({"refiner_threshold": 0.0}, {"refiner_threshold": 1.0}, {"refiner_unknown": 0.6},
                {"refiner_grabcut": 0.5}, {"refiner_grabcut": -0.1}, {"tight_box": 0.5}, {"tight_box": -0.1},
                {"tight_box_probability": 1.5}):
        with pytest.raises(LaminaError, match=next(iter(bad))):
            ForegroundConfig(**bad)


def test_grabcut_from_a_prior_keeps_its_sure_pixels():
    from scipy import ndimage

    scene = photo_scene(11, 96, _photos())
    image, box = scene["composite"], scene["box"]
    truth = scene["object_alpha"] > 0.5
    core = ndimage.binary_erosion(truth, iterations=3)
    far = ~ndimage.binary_dilation(truth, iterations=3)
    prior = np.where(core, 1.0, np.where(far, 0.0, np.where(truth, 0.6, 0.4))).astype(np.float32)
    mask = grabcut_mask(image, box, prior=prior)
    assert mask[core].all() and not mask[far].any()  # fixed where the prior is sure
    x0, y0, x1, y1 = box
    assert not mask[:y0].any() and not mask[:, :x0].any() and not mask[y1:].any() and not mask[:, x1:].any()
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
    # Nothing sure: GrabCut may move every pixel of the box.
    loose = grabcut_mask(image, box, prior=np.where(truth, 0.7, 0.3).astype(np.float32), sure=0.0)
    assert loose.dtype == bool and loose.any()
    with pytest.raises(LaminaError, match="marks no object"):
        grabcut_mask(image, box, prior=np.zeros(truth.shape, np.float32))


def test_reach_box_sides_follows_the_probability_to_a_far_side():
    rng = np.random.default_rng(0)
    image = np.clip(0.5 + 0.03 * rng.standard_normal((64, 64, 3)), 0, 1).astype(np.float32)
    image[12:52, 28:36] = (0.2, 0.3, 0.9)  # a blue bar, the object
    image[24:52, 28:36] = 1.0  # ... whose lower part is white
    box = (26, 10, 38, 54)
    mask = np.zeros((64, 64), bool)
    mask[24:52, 28:36] = True  # the cut-out missed the blue top: 14 of the box's 44 rows away from its top
    probability = np.zeros((64, 64), np.float32)
    probability[24:52, 28:36] = 0.9
    probability[12:24, 31:33] = 0.3  # the refiner, unsure, along the middle of the missed part

    grown, sides = reach_box_sides(image, box, mask, probability, 0.07, 0.05)
    assert sides == ("top",)
    rows = np.flatnonzero(grown.any(axis=1))
    assert rows[0] <= 10 + 0.07 * 44  # the top side is reached
    assert grown[14:24, 31:33].all()  # along the likely route
    assert not grown[:, :26].any() and not grown[:, 38:].any() and not grown[:10].any()  # never outside the box
    # Off the likely route the refiner is sure of the background: the path is not taken.
    same, sides = reach_box_sides(image, box, mask, np.where(mask, 0.9, 0.0).astype(np.float32), 0.07, 0.05)
    assert sides == () and same is mask
    # Within the tolerance of every side (or no mask at all): nothing to do.
    assert reach_box_sides(image, box, mask, probability, 0.35, 0.05)[1] == ()
    assert reach_box_sides(image, box, np.zeros_like(mask), probability, 0.07, 0.05)[1] == ()


def test_large_holes():
    from lamina.layeringdiff.foreground import large_holes

    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:25, 10:25] = False  # a hole of 225 px in a filled area of 900 px (share 0.25)
    mask[28:30, 28:30] = False  # a hole of 4 px
    assert large_holes(mask, 0.3).sum() == 0
    big = large_holes(mask, 0.2)
    assert big.sum() == 225 and big[10:25, 10:25].all()
    assert large_holes(mask, 0.001).sum() == 229
    assert not large_holes(mask, 1.0).any()
    opened = mask.copy()
    opened[10:25, 5:10] = False  # the big region now reaches the outside: not a hole
    assert large_holes(opened, 0.001).sum() == 4


def test_uncertain_pixels_join_the_unknown_band():
    from lamina.layeringdiff.foreground import TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, _matte

    scene = photo_scene(4, 64, _photos())
    hard = scene["object_alpha"] > 0.5
    config = ForegroundConfig(effects=False)
    plain = _matte(scene["composite"], hard, config)
    uncertain = np.zeros_like(hard)
    rows, cols = np.nonzero(plain.trimap == TRIMAP_FOREGROUND)
    uncertain[rows[0], cols[0]] = True
    banded = _matte(scene["composite"], hard, config, uncertain=uncertain)
    assert banded.trimap[rows[0], cols[0]] == TRIMAP_UNKNOWN
    assert np.array_equal(banded.trimap[~uncertain], plain.trimap[~uncertain])
    # A band that would leave no sure foreground is not applied (matting needs both classes).
    everything = _matte(scene["composite"], hard, config, uncertain=np.ones_like(hard))
    assert np.array_equal(everything.trimap, plain.trimap)


def test_training_runs_resumes_and_exports(photo_folder, tmp_path):
    config = resolve_config("tiny", photos=str(photo_folder))
    photos = [np.asarray(Image.open(p), np.float32) / 255 for p in sorted(photo_folder.iterdir())]
    sample = make_sample(0, config, photos)
    assert sample["input"].shape == (6, 32, 32) and sample["target"].shape == (1, 32, 32)
    assert 0.0 <= sample["target"].min() and sample["target"].max() <= 1.0
    run = tmp_path / "run"
    export = training_loop(config, run, echo=lambda _: None)
    assert (export / "model.safetensors").is_file() and (run / "previews" / "step-0000004.png").is_file()
    first = CutoutNet.from_pretrained(export)
    messages = []
    training_loop(resolve_config("tiny", photos=str(photo_folder), total_steps=6), run, echo=messages.append)
    assert any("resuming" in m and "step 4" in m for m in messages)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert not torch.equal(CutoutNet.from_pretrained(export).head[-1].weight, first.head[-1].weight)
    with pytest.raises(ConfigError, match="different configuration"):
        training_loop(resolve_config("tiny", photos=str(photo_folder), lr=0.5), run, echo=lambda _: None)
    with pytest.raises(ConfigError, match="photos"):
        training_loop(resolve_config("tiny"), tmp_path / "other", echo=lambda _: None)
    # A run may start from a refiner at another working size (the weights do not depend on it), not another width.
    larger = training_loop(resolve_config("tiny", photos=str(photo_folder), init=str(export), total_steps=1,
                                          **{"net.working_size": 64}), tmp_path / "larger", echo=lambda _: None)
    assert CutoutNet.from_pretrained(larger).config.working_size == 64
    with pytest.raises(ConfigError, match="another size"):
        training_loop(resolve_config("tiny", photos=str(photo_folder), init=str(export),
                                     **{"net.channels": [8, 8]}), tmp_path / "wider", echo=lambda _: None)
    with pytest.raises(ConfigError, match="unknown"):
        resolve_config("tiny", nope=1)


def test_training_on_real_objects(photo_folder, object_folder, tmp_path):
    """With ``objects`` the samples put the folder's train split over the photographs; previews show held-out ones."""
    with pytest.raises(ConfigError, match="objects=FOLDER"):
        resolve_config("tiny", photos=str(photo_folder), p_object=0.5)
    config = resolve_config("tiny", photos=str(photo_folder), objects=str(object_folder), p_object=1.0)
    photos = [np.asarray(Image.open(p), np.float32) / 255 for p in sorted(photo_folder.iterdir())]
    plain = resolve_config("tiny", photos=str(photo_folder))
    assert not np.array_equal(make_sample(0, config, photos)["target"], make_sample(0, plain, photos)["target"])
    export = training_loop(config, tmp_path / "run", echo=lambda _: None)
    assert (export / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "training-config.json").read_text())
    assert saved["objects"] == str(object_folder) and saved["p_object"] == 1.0
    done = CliRunner().invoke(main, ["layeringdiff", "train-cutout", "--preset", "tiny", "--photos", str(photo_folder),
                                     "--objects", str(object_folder), "--set", "p_object=0.5", "--out",
                                     str(tmp_path / "cli"), "--dry-run"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["objects"] == str(object_folder)


def test_cli_train_cutout_and_decompose_option(photo_folder, tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["layeringdiff", "train-cutout", "--preset", "tiny", "--photos", str(photo_folder),
                                "--out", str(tmp_path / "run"), "--steps", "2"])
    assert done.exit_code == 0, done.output
    assert "inference export" in done.output
    scene = photo_scene(2, 64, _photos())
    Image.fromarray((scene["composite"] * 255).astype(np.uint8)).save(tmp_path / "in.png")
    box = ",".join(map(str, scene["box"]))
    for model in ("none", str(tmp_path / "run" / "export")):
        done = runner.invoke(main, ["decompose", str(tmp_path / "in.png"), "--box", box, "--method", "classical",
                                    "--cutout-model", model, "--out", str(tmp_path / f"out-{len(model)}"),
                                    "--no-preview"])
        assert done.exit_code == 0, done.output
    done = runner.invoke(main, ["decompose", str(tmp_path / "in.png"), "--box", box, "--cutout-model",
                                str(tmp_path / "missing"), "--out", str(tmp_path / "bad")])
    assert done.exit_code != 0 and "not a cut-out refiner" in done.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_builtin_refiner_beats_grabcut_on_photo_scenes():
    """On composites over scikit-image's validation photographs the default cut-out (the built-in refiner and
    its second GrabCut pass) is closer to the true object alpha than GrabCut's alone."""
    skimage = pytest.importorskip("skimage")

    root = Path(skimage.__file__).parent / "data"
    photos = [np.asarray(Image.open(root / name).convert("RGB"), np.float32) / 255.0
              for name in ("astronaut.png", "chelsea.png", "motorcycle_left.png", "brick.png", "grass.png")]
    sad = {None: [], "builtin": []}
    for seed in range(36):
        scene = photo_scene(700_000_000 + seed, 256, photos)
        for refiner in sad:
            try:
                alpha = foreground_from_box(scene["composite"], scene["box"],
                                            ForegroundConfig(refiner=refiner, effects=False)).alpha
            except LaminaError:  # nothing found: what the user gets is no object
                alpha = np.zeros_like(scene["object_alpha"])
            sad[refiner].append(np.abs(alpha - scene["object_alpha"]).sum())
    # Measured 2026-12-07: 2371 -> 1491 (-37 %); with the refiner cooled down and no hole limit (ninth session)
    # 2372 -> 1384 (-42 %). GrabCut alone finds nothing in 2 of the 36 boxes.
    assert np.mean(sad["builtin"]) < 0.8 * np.mean(sad[None]), sad


def test_config_values_refuses_unknown_keys_and_wrong_types():
    from lamina.overrides import config_values

    assert config_values(CutoutNetConfig, {"channels": [8, 16], "prior_gain": 1}, "net") == {
        "channels": (8, 16), "prior_gain": 1.0}
    with pytest.raises(ConfigError, match="unknown net option\\(s\\): a, b"):
        config_values(CutoutNetConfig, {"b": 1, "a": 2}, "net", ConfigError)
    with pytest.raises(ConfigError, match="working_size"):
        CutoutNetConfig.from_dict({"working_size": "big"})
    from lamina.layeringdiff.cutout_train import CutoutTrainingConfig

    nested = CutoutTrainingConfig.from_dict({"net": {"working_size": 32, "channels": [8, 16], "dilations": [1]}})
    assert nested.net == TINY
