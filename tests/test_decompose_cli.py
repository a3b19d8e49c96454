"""``lamina decompose`` as a tool: batches, resuming, checks before any model loads, automatic mode, the
Python API objects, layer names from the user's words, effects as their own layer."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from lamina.cli import main
from lamina.cli_options import lock_path
from lamina.data import SCENE_PRESETS, generate_scene
from lamina.errors import LaminaError
from lamina.io import load, write_png
from lamina.layeringdiff import decompose as decompose_module
from lamina.layeringdiff.decompose import decompose_image, split_effects_layers
from lamina.layeringdiff.disassembly import Decomposition, psnr

SIZE = 64


def scene(seed: int = 910_000_000):
    return generate_scene(seed, SCENE_PRESETS["default"].with_size(SIZE))


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    boxes = []
    for i in range(2):
        s = scene(910_000_000 + i)
        write_png(s.composite, folder / f"p{i}.png")
        boxes.append(s.box)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder, boxes


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a command loads a model (the checks must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks")

    monkeypatch.setattr(decompose_module, "make_decomposer", refuse)


# ------------------------------------------------------------------ batches
def test_batch_folder_reports_bad_file_and_resumes(photos, tmp_path, monkeypatch):
    folder, _ = photos
    out = tmp_path / "out"
    result = run("decompose", folder, "--out", out, "--method", "classical", "--no-preview")
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["p0.psd", "p1.psd"]
    assert "2 written, 0 already present (skipped), 1 failed" in result.output and "broken.png" in result.output
    assert load(out / "p0.psd").metadata["source"] == "p0.png"
    # Half done: remove one output; the rerun redoes only that one, loading the model once.
    (out / "p1.psd").unlink()
    calls = []
    real = decompose_module.make_decomposer
    monkeypatch.setattr(decompose_module, "make_decomposer", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = (out / "p0.psd").stat().st_mtime_ns
    result = run("decompose", folder / "*.png", "--out", out, "--method", "classical")
    assert "1 written, 1 already present (skipped), 1 failed" in result.output and calls == [1]
    assert (out / "p1.psd").is_file() and (out / "p1.sheet.png").is_file()
    assert (out / "p0.psd").stat().st_mtime_ns == before  # not redone
    calls.clear()
    result = run("decompose", folder / "p*.png", "--out", out, "--method", "classical")
    assert result.exit_code == 0 and "0 written, 2 already present" in result.output and calls == []
    result = run("decompose", folder / "p*.png", "--out", out, "--method", "classical", "--format", "ora")
    assert result.exit_code == 0 and (out / "p0.ora").is_file() and calls == [1]


def test_batch_refuses_a_file_output_and_masks(photos, tmp_path, no_model):
    folder, _ = photos
    result = run("decompose", folder, "--out", tmp_path / "x.psd")
    assert result.exit_code == 1 and "need an output folder" in result.output
    write_png(np.ones((SIZE, SIZE)), tmp_path / "m.png")
    result = run("decompose", folder, "--mask", tmp_path / "m.png", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "--mask belongs to one image" in result.output


# ------------------------------------------------------------------ checks before the model
def test_checks_before_any_model_loads(photos, tmp_path, no_model):
    folder, boxes = photos
    image = folder / "p0.png"
    result = run("decompose", image, "--box", "0,0,65,10", "--out", tmp_path / "a.psd")
    assert result.exit_code == 1 and "outside the 64x64 image" in result.output
    write_png(np.ones((10, 12)), tmp_path / "small_mask.png")
    result = run("decompose", image, "--mask", tmp_path / "small_mask.png", "--out", tmp_path / "a.psd")
    assert result.exit_code == 1 and "is 12x10 but" in result.output
    (tmp_path / "taken.psd").write_bytes(b"x")
    result = run("decompose", image, "--out", tmp_path / "taken.psd")
    assert result.exit_code == 1 and "already exists" in result.output
    (tmp_path / "file").write_bytes(b"x")
    result = run("decompose", image, "--out", tmp_path / "file" / "a.psd")
    assert result.exit_code == 1 and "cannot create the output folder" in result.output
    result = run("decompose", image, "--out", tmp_path / "a.tif")
    assert result.exit_code == 1 and "unknown output format" in result.output
    result = run("decompose", image, "--box", "1,1,9,9", "--layers", "2", "--out", tmp_path / "a.psd")
    assert result.exit_code == 1 and "--layers 2 needs 2" in result.output
    # A concurrent writer holds the output: this one fails at once.
    lock_path(tmp_path / "b.psd").write_text(f"{__import__('os').getpid()}\n")
    result = run("decompose", image, "--out", tmp_path / "b.psd")
    assert result.exit_code == 1 and "another lamina process is writing" in result.output
    assert not (tmp_path / "a.psd").exists() and not list(tmp_path.glob("*.sheet.png"))


def test_batch_box_checked_per_image_before_loading(tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_png(scene().composite, folder / "big.png")
    write_png(np.zeros((20, 20, 3)), folder / "small.png")
    calls = []
    real = decompose_module.make_decomposer
    monkeypatch.setattr(decompose_module, "make_decomposer", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = run("decompose", folder, "--box", "2,2,40,40", "--method", "classical", "--out", tmp_path / "o",
                 "--no-preview")
    assert result.exit_code == 1 and "small.png: box 2,2,40,40 lies outside the 20x20 image" in result.output
    assert (tmp_path / "o" / "big.psd").is_file() and calls == [1]


def test_device_and_options_refused_early(photos, tmp_path, no_model):
    folder, _ = photos
    import torch

    if not torch.cuda.is_available():
        result = run("decompose", folder / "p0.png", "--device", "cuda", "--out", tmp_path / "a.psd")
        assert result.exit_code == 2 and "sees no CUDA device" in result.output
    result = run("decompose", folder / "p0.png", "--method", "classical", "--steps", "2", "--out", tmp_path / "a")
    assert result.exit_code == 1 and "not classical" in result.output


# ------------------------------------------------------------------ single file, preview, automatic mode
def test_single_file_preview_switch_and_auto_mode(photos, tmp_path):
    folder, boxes = photos
    result = run("decompose", folder / "p0.png", "--out", tmp_path / "a.psd", "--method", "classical",
                 "--threads", "1", "--device", "cpu", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.sheet.png").is_file()
    layered = load(tmp_path / "a.psd")
    assert len(layered.layers) == 1 and layered.layers[0].metadata.get("auto") is True
    result = run("decompose", folder / "p0.png", "--out", tmp_path / "b.ora", "--no-preview",
                 "--box", ",".join(map(str, boxes[0])))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.ora").is_file() and not (tmp_path / "b.ora.sheet.png").exists()
    assert not (tmp_path / "b.sheet.png").exists()


def test_auto_mode_finds_the_object_on_a_plain_scene():
    from lamina.layeringdiff.saliency import salient_boxes

    s = scene(910_000_004)
    x0, y0, x1, y1 = salient_boxes(s.composite)[0]
    bx0, by0, bx1, by1 = s.box
    inter = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
    assert inter / ((bx1 - bx0) * (by1 - by0)) > 0.5  # covers most of the true box
    flat = np.full((32, 32, 3), 0.5, np.float32)
    with pytest.raises(LaminaError, match="nothing that stands out"):
        salient_boxes(flat)



def test_auto_mode_boxes_are_not_held_to_the_tight_box_prior():
    """A saliency box has a margin: automatic regions run without the tight-box prior, a user's box with it."""
    from lamina.layeringdiff.bounded import peel_window
    from lamina.layeringdiff.decompose import make_decomposer, peel
    from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box

    class Recorder:  # a grounder that segments boxes as lamina does, keeping each box's configuration
        def __init__(self):
            self.configs = []

        def estimate_box(self, image, box, config=None):
            self.configs.append(config)
            return foreground_from_box(image, box, config)

    s = scene(910_000_004)
    grounder = Recorder()
    decomposer = make_decomposer("classical")
    config = ForegroundConfig()
    peel(s.composite, [("auto", None), ("box", s.box)], decomposer, config=config, grounder=grounder)
    canvas = np.concatenate([s.composite.transpose(2, 0, 1), np.ones((1, SIZE, SIZE), np.float32)])
    peel_window(canvas.copy(), "auto", None, decomposer, config, grounder)
    peel_window(canvas.copy(), "box", s.box, decomposer, config, grounder)
    assert [c.tight_box for c in grounder.configs] == [None, config.tight_box, None, config.tight_box]
    assert config.tight_box is not None


def test_loose_box_option_turns_the_tight_box_prior_off(photos, tmp_path, monkeypatch):
    folder, boxes = photos
    configs = []
    real = decompose_module.decompose_image
    monkeypatch.setattr(decompose_module, "decompose_image",
                        lambda *a, **k: configs.append(k["config"]) or real(*a, **k))
    box = ",".join(map(str, boxes[0]))
    for name, extra in (("loose.psd", ["--loose-box"]), ("tight.psd", [])):
        result = run("decompose", folder / "p0.png", "--box", box, "--out", tmp_path / name, "--method", "classical",
                     "--no-preview", *extra)
        assert result.exit_code == 0, result.output
    loose, tight = configs
    assert loose.tight_box is None and tight.tight_box is not None

# ------------------------------------------------------------------ Python API
class FakeGrounder:
    """A stand-in for Grounding DINO / SAM: the prompt's object is the scene's true mask."""

    def __init__(self, mask):
        self.mask, self.boxes = mask, []

    def estimate(self, image, phrase, config=None):
        from lamina.layeringdiff.foreground import foreground_from_mask

        return foreground_from_mask(image, self.mask, config)

    def estimate_box(self, image, box, config=None):
        self.boxes.append(tuple(box))
        return self.estimate(image, "", config)


def test_api_inputs_names_and_sam_for_boxes():
    import torch
    from PIL import Image

    from lamina.layeringdiff import LayeringDiff

    s = scene()
    pipe = LayeringDiff.from_pretrained(method="classical")
    as_uint8 = (s.composite * 255).round().astype(np.uint8)
    a = pipe(Image.fromarray(as_uint8), box=s.box)
    b = pipe(torch.from_numpy(as_uint8.astype(np.float32) / 255).permute(2, 0, 1), box=s.box)
    c = pipe(as_uint8, box=s.box)
    for layered in (a, b, c):
        assert layered.size == (SIZE, SIZE) and layered.metadata["recomposition_psnr"] > 60
    np.testing.assert_allclose(a.layers[0].pixels, c.layers[0].pixels, atol=1e-6)
    grounder = FakeGrounder(s.object_alpha > 0.5)
    named = decompose_image(s.composite, prompt="the cat", method="classical", grounder=grounder)
    assert [layer.name for layer in named.layers] == ["the cat"]
    boxed = decompose_image(s.composite, box=s.box, method="classical", grounder=grounder)
    assert grounder.boxes == [tuple(s.box)] and boxed.layers[0].name == "object_1"  # the box went to "SAM"
    auto = decompose_image(s.composite, method="classical", grounder=grounder)
    assert len(grounder.boxes) == 2 and auto.layers[0].metadata["auto"]  # automatic box -> "SAM" too
    custom = decompose_image(s.composite, box=s.box, method="classical", names=["hat"])
    assert custom.layers[0].name == "hat"
    with pytest.raises(LaminaError, match="layer name"):
        decompose_image(s.composite, box=s.box, method="classical", names=["a", "b"])


def test_fbdd_call_defaults_to_the_models_trained_steps():
    from lamina.layeringdiff.fbdd import FBDDPipeline, make_scheduler, make_unet

    pipe = FBDDPipeline(make_unet("tiny", sample_size=16), make_scheduler(), inference_steps=1)
    pipe.set_progress_bar_config(disable=True)
    pipe(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.float32))
    assert len(pipe.scheduler.timesteps) == 1
    pipe(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.float32), num_inference_steps=3)
    assert len(pipe.scheduler.timesteps) == 3


def test_layeringdiff_from_pretrained_builtin_reads_its_config():
    from lamina.layeringdiff import LayeringDiff
    from lamina.layeringdiff.fbdd import load_builtin

    pipe = LayeringDiff.from_pretrained("builtin", device="cpu")
    assert pipe.decomposer.num_inference_steps == int(load_builtin().config.inference_steps)
    assert pipe.device.type == "cpu" and "LayeringDiff" in repr(pipe)
    s = scene()
    layered = pipe(s.composite, box=s.box)
    assert layered.metadata["method"] == "layeringdiff" and layered.metadata["recomposition_psnr"] > 60


# ------------------------------------------------------------------ effects as their own layer
def _shadowed():
    """A synthetic decomposition: an opaque square with a soft shadow beside it, exactly recomposing."""
    h = w = 24
    background = np.full((h, w, 3), 0.8, np.float32)
    background[:, :, 1] = np.linspace(0.3, 0.9, w)[None]
    alpha = np.zeros((h, w), np.float32)
    alpha[4:12, 4:12] = 1.0
    alpha[12, 4:12] = 0.4  # a soft edge over the shadow
    effects = np.zeros((h, w), np.float32)
    effects[12:18, 4:14] = 0.5
    colour = np.zeros((h, w, 3), np.float32)
    colour[:, :, 0] = 0.9  # the object is red; the shadow black
    total = alpha + effects * (1 - alpha)
    a = alpha[:, :, None]
    rgb = np.where(total[:, :, None] > 0, (a * colour) / np.maximum(total, 1e-6)[:, :, None], 0.0)
    image = total[:, :, None] * rgb + (1 - total[:, :, None]) * background
    part = Decomposition(np.concatenate([rgb, total[:, :, None]], 2).astype(np.float32), background, alpha, effects)
    return image, part


def test_split_effects_layers_recompose_exactly():
    from lamina.layers import Layer, LayeredImage

    image, part = _shadowed()
    layers = split_effects_layers(part, "cup", {"order": 1})
    assert [layer.name for layer in layers] == ["cup", "cup shadow"]
    obj, effect = layers
    np.testing.assert_array_equal(obj.alpha, part.object_alpha)
    np.testing.assert_array_equal(effect.alpha, part.effects_alpha)
    assert effect.metadata["effects_of"] == "cup" and effect.blend_mode == "multiply"  # a shadow darkens
    layered = LayeredImage(part.background, [effect, obj])  # the core composites multiply exactly (W3C)
    assert psnr(layered.composite()[:, :, :3], image) > 90
    e, c = effect.alpha[:, :, None], effect.rgb  # and by hand: e B C + (1 - e) B under the object
    under = e * part.background * c + (1 - e) * part.background
    a = obj.alpha[:, :, None]
    assert psnr(a * obj.rgb + (1 - a) * under, image) > 90
    # Lighter effect pixels become a screen layer, mixed ones a normal layer; still exact.
    rgb = part.foreground[:, :, :3].copy()
    rgb[14:18, 4:9] = 1.0  # white: lighter than the background
    rgb[14:18, 9:14] = [1.0, 0.0, 0.0]  # red: one channel up, two down
    mixed = Decomposition(np.concatenate([rgb, part.foreground[:, :, 3:]], 2), part.background, part.object_alpha,
                          part.effects_alpha)
    split = split_effects_layers(mixed, "cup")
    assert [(x.name, x.blend_mode) for x in split] == [("cup", "normal"), ("cup shadow", "multiply"),
                                                      ("cup reflection", "screen"), ("cup effects", "normal")]
    expected = LayeredImage(mixed.background, [Layer(mixed.foreground)]).composite()
    assert psnr(LayeredImage(mixed.background, list(reversed(split))).composite(), expected) > 90
    none = Decomposition(part.foreground, part.background, part.object_alpha, np.zeros_like(part.effects_alpha))
    assert len(split_effects_layers(none, "cup")) == 1
    assert isinstance(obj, Layer)


def test_split_effects_option_end_to_end(tmp_path):
    # A scene whose object casts a shadow: --split-effects writes it as its own layer, still recomposing.
    s = scene(910_000_001)  # the classical path finds a shadow in this one
    write_png(s.composite, tmp_path / "s.png")
    result = run("decompose", tmp_path / "s.png", "--box", ",".join(map(str, s.box)), "--method", "classical",
                 "--split-effects", "--out", tmp_path / "s", "--no-preview")
    assert result.exit_code == 0, result.output
    layered = load(tmp_path / "s")
    names = [layer.name for layer in layered.layers]
    assert names[-1] == "object_1" and all(n.startswith("object_1") for n in names)
    assert len(names) > 1 and layered.layers[0].metadata["effects_of"] == "object_1"
    assert psnr(layered.composite()[:, :, :3], s.composite) > 40  # 8-bit PNG stack


def test_seed_option_and_auto_layers(tmp_path):
    s = scene(910_000_001)
    write_png(s.composite, tmp_path / "s.png")
    box = ",".join(map(str, s.box))
    for name, seed in (("a", 3), ("b", 3)):
        result = run("decompose", tmp_path / "s.png", "--box", box, "--seed", seed, "--steps", "1", "--no-preview",
                     "--out", tmp_path / f"{name}.ora")
        assert result.exit_code == 0, result.output
    a, b = load(tmp_path / "a.ora"), load(tmp_path / "b.ora")
    np.testing.assert_array_equal(a.background.pixels, b.background.pixels)
    two = decompose_image(s.composite, layers=2, method="classical")
    assert [layer.name for layer in two.layers] == ["object_2", "object_1"] and two.metadata["regions"] == ["auto"] * 2
    assert two.metadata["recomposition_psnr"] > 60
