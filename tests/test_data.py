"""Procedural scenes (ground truth, determinism, captions) and the dataset loaders/writer."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamina import LayeredImage, OutputExistsError, to_uint8
from lamina.data import (
    COLORS,
    SCENE_PRESETS,
    ImageFolder,
    LayeredFolder,
    ProceduralScenes,
    SceneConfig,
    generate_scene,
    scene_seed,
    write_dataset,
)
from lamina.data.captions import BACKGROUND_PHRASES, FLOOR_PHRASES

SMALL = SCENE_PRESETS["default"].with_size(64)
NO_EFFECTS = replace(SMALL, p_shadow=0.0, p_reflection=0.0)
SEEDS = range(24)


def scene_arrays(scene) -> dict[str, np.ndarray]:
    return {"background": scene.background, "foreground": scene.foreground, "object_alpha": scene.object_alpha,
            "effects_alpha": scene.effects_alpha, "composite": scene.composite}


# ------------------------------------------------------------------- generation
def test_same_seed_same_scene_and_different_seed_differs() -> None:
    a, b, c = generate_scene(7, SMALL), generate_scene(7, SMALL), generate_scene(8, SMALL)
    for key, value in scene_arrays(a).items():
        np.testing.assert_array_equal(value, scene_arrays(b)[key], err_msg=key)
    assert (a.caption, a.box, a.seed) == (b.caption, b.box, b.seed)
    assert [i.name for i in a.instances] == [i.name for i in b.instances]
    assert not np.array_equal(a.composite, c.composite)
    assert not np.array_equal(a.background, c.background)


@pytest.mark.parametrize("preset", sorted(SCENE_PRESETS))
@pytest.mark.parametrize("size", [64, (80, 48)])
def test_shapes_dtypes_and_ranges(preset: str, size: int | tuple[int, int]) -> None:
    config = SCENE_PRESETS[preset].with_size(size)
    w, h = config.size
    for seed in range(6):
        scene = generate_scene(seed, config)
        shapes = {"background": (h, w, 3), "foreground": (h, w, 4), "object_alpha": (h, w),
                  "effects_alpha": (h, w), "composite": (h, w, 3)}
        for key, value in scene_arrays(scene).items():
            assert value.shape == shapes[key], key
            assert value.dtype == np.float32, key
            assert np.isfinite(value).all() and value.min() >= 0.0 and value.max() <= 1.0, key
        assert config.min_objects <= len(scene.instances) <= config.max_objects
        assert scene.size == (w, h)


def test_many_small_scenes_of_any_shape_stay_valid() -> None:
    rng = np.random.default_rng(0)
    for seed in range(240):
        config = SCENE_PRESETS[sorted(SCENE_PRESETS)[seed % 4]].with_size(tuple(rng.integers(16, 72, 2).tolist()))
        scene = generate_scene(seed, config)
        for value in [*scene_arrays(scene).values(), *(inst.rgba for inst in scene.instances)]:
            assert np.isfinite(value).all() and value.min() >= 0.0 and value.max() <= 1.0
        x0, y0, x1, y1 = scene.box
        assert 0 <= x0 < x1 <= config.width and 0 <= y0 < y1 <= config.height


def test_composite_is_exactly_foreground_over_background() -> None:
    for config in (SMALL, SCENE_PRESETS["multi"].with_size(64)):
        for seed in range(8):
            scene = generate_scene(seed, config)
            reference = LayeredImage.from_foreground(scene.background, scene.foreground).composite()
            np.testing.assert_array_equal(scene.composite, reference[..., :3])


def test_foreground_alpha_is_object_over_effects() -> None:
    for seed in SEEDS:
        scene = generate_scene(seed, SMALL)
        oa, ea = scene.object_alpha, scene.effects_alpha
        np.testing.assert_allclose(scene.foreground[..., 3], oa + ea * (1 - oa), atol=2e-6)


def test_no_effects_means_zero_effects_alpha() -> None:
    for seed in range(10):
        scene = generate_scene(seed, NO_EFFECTS)
        assert not scene.effects_alpha.any()
        np.testing.assert_array_equal(scene.foreground[..., 3], scene.object_alpha)


def test_shadows_are_dark_partial_and_darken_the_background() -> None:
    config = replace(SMALL.with_size(96), p_shadow=1.0, p_reflection=0.0)
    for seed in range(10):
        scene = generate_scene(seed, config)
        assert all(inst.attributes["shadow"] in ("cast", "drop") for inst in scene.instances)
        only_shadow = (scene.effects_alpha > 0.02) & (scene.object_alpha == 0)
        assert only_shadow.sum() > 10
        assert scene.effects_alpha.max() < 1.0  # partial alpha
        assert scene.foreground[only_shadow, :3].max() < 0.1  # near-black colour
        assert (scene.composite[only_shadow] <= scene.background[only_shadow] + 1e-6).all()


def test_reflections_lie_below_the_object() -> None:
    config = replace(SMALL.with_size(96), p_shadow=0.0, p_reflection=1.0, backgrounds=("floor",))
    found = 0
    for seed in range(10):
        scene = generate_scene(seed, config)
        (inst,) = scene.instances
        rows = np.flatnonzero(scene.effects_alpha.any(axis=1))
        if rows.size:  # an object standing on the bottom edge has no room for one
            found += 1
            assert inst.attributes["reflection"]
            assert rows.min() >= (inst.box[1] + inst.box[3]) / 2
    assert found >= 5


def test_fur_gives_thin_strands_of_partial_alpha() -> None:
    def partial_fraction(p_fur: float) -> float:
        config = replace(NO_EFFECTS.with_size(128), p_fur=p_fur, p_glass=0.0, p_fur_partial=0.0)
        fractions = []
        for seed in range(8):
            scene = generate_scene(seed, config)
            x0, y0, x1, y1 = scene.box
            a = scene.object_alpha[y0:y1, x0:x1]
            fractions.append(((a > 0.02) & (a < 0.98)).mean())
        return float(np.mean(fractions))

    furry, smooth = partial_fraction(1.0), partial_fraction(0.0)
    assert furry > 0.12 and furry > 2 * smooth


def test_glass_is_semi_transparent() -> None:
    config = replace(NO_EFFECTS.with_size(128), p_glass=1.0, p_fur=0.0)
    for seed in range(5):
        scene = generate_scene(seed, config)
        a = scene.object_alpha
        assert ((a > 0.25) & (a < 0.75)).sum() > 50


def test_box_is_the_tight_box_of_object_alpha() -> None:
    for seed in SEEDS:
        scene = generate_scene(seed, SMALL)
        x0, y0, x1, y1 = scene.box
        visible = scene.object_alpha > 0
        assert visible[y0:y1, x0:x1].sum() == visible.sum() > 0
        assert visible[y0].any() and visible[y1 - 1].any() and visible[:, x0].any() and visible[:, x1 - 1].any()
        for inst in scene.instances:
            assert x0 <= inst.box[0] < inst.box[2] <= x1 and y0 <= inst.box[1] < inst.box[3] <= y1


def test_captions_describe_the_scene() -> None:
    for seed in range(40):
        scene = generate_scene(seed, SMALL)
        (inst,) = scene.instances
        attrs, words = inst.attributes, scene.caption.split()
        assert attrs["color"] in words and attrs["color"] in COLORS
        assert inst.attributes["noun"] in scene.caption
        assert ("furry" in words) == attrs["fur"]
        assert ("glassy" in words) == attrs["glass"]
        assert ("shadow" in words) == (attrs["shadow"] is not None)
        assert ("reflection" in words) == attrs["reflection"]
        family = scene.attributes["background"]
        phrase = FLOOR_PHRASES[scene.attributes["pattern"]] if family == "floor" else BACKGROUND_PHRASES[family]
        assert scene.caption.endswith(phrase)
        assert scene.caption.startswith(inst.caption)


def test_multi_object_instances_composite_to_the_foreground() -> None:
    config = SCENE_PRESETS["multi"].with_size(96)
    for seed in range(6):
        scene = generate_scene(seed, config)
        assert 2 <= len(scene.instances) <= 4
        layered = scene.to_layered()
        assert [layer.name for layer in layered.layers] == [inst.name for inst in scene.instances]
        assert layered.metadata["method"] == "procedural" and layered.metadata["seed"] == seed
        stacked = layered.composite(background=False)
        premultiplied = scene.foreground[..., :3] * scene.foreground[..., 3:]
        np.testing.assert_allclose(stacked[..., 3], scene.foreground[..., 3], atol=1e-5)
        np.testing.assert_allclose(stacked[..., :3] * stacked[..., 3:], premultiplied, atol=1e-5)
        np.testing.assert_allclose(layered.composite()[..., :3], scene.composite, atol=1e-5)
        union = np.zeros_like(scene.object_alpha)
        for inst in scene.instances:
            canvas = inst.canvas(*scene.size)
            assert canvas.shape == scene.foreground.shape
            oa = np.zeros_like(union)
            x, y = inst.offset
            h, w = inst.object_alpha.shape
            oa[y:y + h, x:x + w] = inst.object_alpha
            union += oa * (1 - union)
        np.testing.assert_allclose(union, scene.object_alpha, atol=1e-6)


def test_scene_config_validation() -> None:
    with pytest.raises(ValueError, match="shapes"):
        SceneConfig(shapes=("dodecahedron",))
    with pytest.raises(ValueError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="p_fur"):
        SceneConfig(p_fur=1.5)
    with pytest.raises(ValueError, match="size"):
        SceneConfig(size=8)
    assert SceneConfig(size=(40, 30)).size == (40, 30)
    assert SceneConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    with pytest.raises(ValueError, match="unknown"):
        SceneConfig.from_dict({"colour": "red"})


# --------------------------------------------------------------------- datasets
def test_procedural_dataset_items_and_batches() -> None:
    data = ProceduralScenes(SMALL, length=5, seed=2)
    item = data[3]
    shapes = {"composite": (3, 64, 64), "foreground": (4, 64, 64), "background": (3, 64, 64),
              "object_alpha": (1, 64, 64), "effects_alpha": (1, 64, 64), "box": (4,)}
    for key, shape in shapes.items():
        assert tuple(item[key].shape) == shape, key
    assert item["composite"].dtype == torch.float32 and item["box"].dtype == torch.int64
    assert item["index"] == 3 and item["caption"] == data.scene(3).caption
    np.testing.assert_array_equal(item["composite"].numpy(), generate_scene(scene_seed(2, 3), SMALL).composite
                                  .transpose(2, 0, 1))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch["composite"].shape == (2, 3, 64, 64) and len(batch["caption"]) == 2
    with pytest.raises(IndexError):
        data[5]


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)


def test_image_folder_skips_and_reports_bad_files(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (40, 30))
    write_image(tmp_path / "sub" / "b.png", (20, 50), "RGBA")
    write_image(tmp_path / "broken.png", (32, 32))
    data = (tmp_path / "broken.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        folder = ImageFolder(tmp_path, 24, flip=True)
    assert len(folder) == 2 and len(folder.skipped) == 2
    assert {p.name for p, _ in folder.skipped} == {"broken.png", "notes.jpg"}
    assert {"broken.png", "notes.jpg"} <= {w.message.args[0].split()[3].split("/")[-1].rstrip(":") for w in record}
    item = folder[1]
    assert item["composite"].shape == (3, 24, 24) and item["path"].endswith("b.png")
    assert 0.0 <= float(item["composite"].min()) and float(item["composite"].max()) <= 1.0
    torch.testing.assert_close(folder[0]["composite"], folder[0]["composite"])  # deterministic flip


def test_image_folder_skips_on_access_without_validation(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (16, 16))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folder = ImageFolder(tmp_path, (12, 8), validate=False)
    assert len(folder) == 2
    with pytest.warns(UserWarning, match="b.png"):
        item = folder[1]  # b.png cannot be decoded: falls back to a.png
    assert item["path"].endswith("a.png") and item["composite"].shape == (3, 8, 12)
    assert [p.name for p, _ in folder.skipped] == ["b.png"]


def test_layered_folder_composites_foregrounds_over_backgrounds(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:40, 0:30]
    disc = np.zeros((40, 30, 4), np.uint8)
    disc[..., :3] = (200, 60, 20)
    disc[..., 3] = np.clip(255 * (14 - np.hypot(yy - 20, xx - 15)), 0, 255).astype(np.uint8)
    (tmp_path / "foregrounds").mkdir()
    Image.fromarray(disc, "RGBA").save(tmp_path / "foregrounds" / "red_disc.png")
    write_image(tmp_path / "backgrounds" / "one.jpg", (50, 40), seed=1)
    write_image(tmp_path / "backgrounds" / "two.png", (30, 60), seed=2)
    data = LayeredFolder(tmp_path, 48, seed=5, length=4)
    assert len(data) == 4 and data.skipped == []
    item = data[2]
    for key, channels in (("composite", 3), ("foreground", 4), ("background", 3), ("object_alpha", 1),
                          ("effects_alpha", 1)):
        assert item[key].shape == (channels, 48, 48), key
    assert item["caption"] == "red disc" and not item["effects_alpha"].any()
    expected = item["background"].clone().lerp_(item["foreground"][:3], item["foreground"][3:])
    torch.testing.assert_close(item["composite"], expected, rtol=0, atol=0)
    x0, y0, x1, y1 = item["box"].tolist()
    alpha = item["object_alpha"][0]
    assert alpha.sum() == alpha[y0:y1, x0:x1].sum() > 0
    torch.testing.assert_close(data[2]["composite"], item["composite"])  # fixed by (seed, index)


def test_write_dataset_stack_round_trip(tmp_path: Path) -> None:
    from lamina.io import load

    out = write_dataset(tmp_path / "ds", 3, size=48, seed=4, progress=False)
    index = json.loads((out / "dataset.json").read_text())
    assert index["n"] == 3 and index["size"] == [48, 48] and index["format"] == "stack"
    for record in index["samples"]:
        scene = generate_scene(scene_seed(4, record["index"]), SCENE_PRESETS["default"].with_size(48))
        assert record["caption"] == scene.caption and record["box"] == list(scene.box)
        image = load(out / record["path"])
        assert image.metadata["caption"] == scene.caption
        assert [layer.name for layer in image.layers] == [inst.name for inst in scene.instances]
        np.testing.assert_allclose(image.composite()[..., :3], scene.composite, atol=3 / 255)
        alpha = np.asarray(Image.open(out / record["path"] / "object_alpha.png"), np.float32) / 255
        np.testing.assert_allclose(alpha, scene.object_alpha, atol=0.5 / 255 + 1e-6)
    with pytest.raises(OutputExistsError):
        write_dataset(tmp_path / "ds", 1, size=48, progress=False)
    write_dataset(tmp_path / "ds", 1, size=48, progress=False, overwrite=True)
    assert len(json.loads((out / "dataset.json").read_text())["samples"]) == 1


def test_write_dataset_shards_round_trip(tmp_path: Path) -> None:
    config = SCENE_PRESETS["multi"]
    out = write_dataset(tmp_path / "sh", 5, size=(40, 32), seed=1, config=config, format="shards", shard_size=2,
                        progress=False)
    index = json.loads((out / "dataset.json").read_text())
    assert [s["shard"] for s in index["samples"]] == ["shard_00000.npz"] * 2 + ["shard_00001.npz"] * 2 + [
        "shard_00002.npz"]
    data = ProceduralScenes(config.with_size((40, 32)), 5, seed=1)
    with np.load(out / "shard_00001.npz") as shard:
        assert shard["composite"].shape == (2, 32, 40, 3) and shard["composite"].dtype == np.uint8
        scene = data.scene(3)
        np.testing.assert_array_equal(shard["foreground"][1], to_uint8(scene.foreground))
        np.testing.assert_array_equal(shard["effects_alpha"][1], to_uint8(scene.effects_alpha))
        assert shard["caption"][1] == scene.caption and tuple(shard["box"][1]) == scene.box
