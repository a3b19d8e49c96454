"""FurryGAN in use: the ``lamina furrygan`` commands, inversion, the pseudo-GT segmenter, data."""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lamina import InputFileError, LaminaError
from lamina.cli import main
from lamina.furrygan import (
    FurryGANDiscriminator,
    FurryGANGenerator,
    ImageFolderDataset,
    Segmenter,
    SynthComposites,
    get_preset,
    invert,
    load_builtin,
    load_discriminator,
    load_generator,
    load_segmenter,
    train_segmenter,
)
from lamina.furrygan.cli import sample_paths
from lamina.furrygan.evaluate import SnapshotScore, best_snapshot, generate_batches, generated_mask_metrics
from lamina.furrygan.inference import (
    BUILTIN_64_DIR,
    BUILTIN_DIR,
    feature_distance,
    noise_regularization,
    pyramid_l1,
    resolve_checkpoint,
    square_window,
    uncrop,
)
from lamina.furrygan.train import STATE_NAME
from lamina.io import load
from lamina.overrides import parse_overrides

torch.set_num_threads(1)

TRAIN = ["furrygan", "train", "--data", "synth", "--preset", "tiny-32", "--batch", "2", "--threads", "1",
         "--set", "train.checkpoint_every=1", "--set", "train.preview_every=2", "--set", "train.log_every=1"]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), env={"LAMINA_PROGRESS": "0"})
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step tiny-32 run on procedural composites, trained through the CLI."""
    path = tmp_path_factory.mktemp("furrygan") / "run"
    result = invoke(*TRAIN, "--out", str(path), "--steps", "2")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "segmenter"
    train_segmenter(path, resolution=32, steps=2, batch=4, channels=4, depth=2, show_progress=False)
    return path


# ============================================================================ train
def test_train_writes_run_and_resumes(run):
    again = invoke(*TRAIN, "--out", str(run), "--steps", "2")  # a rerun at the same length has nothing to do
    assert again.exit_code == 0 and "resuming tiny-32 run" in again.output and "step 2 " in again.output
    cfg = json.loads((run / "training-config.json").read_text())
    assert cfg["train"]["batch_size"] == 2 and cfg["train"]["total_steps"] == 2 and cfg["model"]["resolution"] == 32
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "config.json", "discriminator.safetensors", "model.safetensors"]
    result = invoke(*TRAIN, "--out", str(run), "--steps", "3")  # the same command, longer: resumes at step 2
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert torch.load(run / STATE_NAME, weights_only=True)["step"] == 3
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_train_dry_run_and_errors(tmp_path):
    result = invoke(*TRAIN, "--out", str(tmp_path / "r"), "--set", "loss.min_mask=0.2", "--dry-run")
    assert result.exit_code == 0 and json.loads(result.output)["loss"]["min_mask"] == 0.2
    assert not (tmp_path / "r").exists()
    for args, message in [(["--set", "loss.nope=1"], "unknown config key 'loss.nope'"),
                          (["--set", "novalue"], "--set expects key=value"),
                          (["--preset", "huge"], "unknown FurryGAN preset 'huge'")]:
        result = invoke(*TRAIN, "--out", str(tmp_path / "r"), *args)
        assert result.exit_code == 1 and message in result.output, result.output
    result = invoke("furrygan", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "not a folder of images" in result.output


def test_train_max_minutes(tmp_path):
    # A time limit stops after the step that passes it, saved; the same command without it finishes.
    result = invoke(*TRAIN, "--out", str(tmp_path / "r"), "--steps", "3", "--max-minutes", "1e-9")
    assert result.exit_code == 0 and "stopped after --max-minutes 1e-09 at step 1 of 3" in result.output, result.output
    assert torch.load(tmp_path / "r" / STATE_NAME, weights_only=True)["step"] == 1
    result = invoke(*TRAIN, "--out", str(tmp_path / "r"), "--steps", "3")
    assert result.exit_code == 0 and "step 3 (6 images)" in result.output, result.output
    result = invoke(*TRAIN, "--out", str(tmp_path / "r"), "--max-minutes", "0")
    assert result.exit_code == 2 and "--max-minutes" in result.output


def test_parse_overrides():
    assert parse_overrides(("train.lr=0.001", "model.fine_mask=false", "train.betas=[0, 0.9]", "a.b=text")) == {
        "train.lr": 0.001, "model.fine_mask": False, "train.betas": [0, 0.9], "a.b": "text"}


# ============================================================================ generate
def test_generate_psd_and_contact_sheet(run, tmp_path):
    result = invoke("furrygan", "generate", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path / "a.psd"))
    assert result.exit_code == 0, result.output
    image = load(tmp_path / "a.psd")
    assert image.size == (32, 32) and [layer.name for layer in image.all_layers] == ["background", "foreground"]
    assert Image.open(tmp_path / "a_sheet.png").size[0] > 32
    result = invoke("furrygan", "generate", "--checkpoint", str(run), "--n", "3", "--out", str(tmp_path / "many"),
                    "--format", "ora", "--truncation", "0.5", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "contact_sheet.png", "sample_000.ora", "sample_001.ora", "sample_002.ora"]
    assert load(tmp_path / "many" / "sample_002.ora").metadata["index"] == 2
    again = invoke("furrygan", "generate", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path / "a.psd"))
    assert again.exit_code == 1 and "already exists" in again.output


def test_sample_paths(tmp_path):
    assert sample_paths(tmp_path / "x.psd", 1, "psd") == ([tmp_path / "x.psd"], tmp_path / "x_sheet.png")
    files, sheet = sample_paths(tmp_path / "x.ora", 2, "psd")
    assert files == [tmp_path / "x_000.ora", tmp_path / "x_001.ora"] and sheet == tmp_path / "x_sheet.png"
    assert sample_paths(tmp_path / "d", 1, "psd") == ([tmp_path / "d"], tmp_path / "d_sheet.png")
    assert sample_paths(tmp_path / "d", 2, "stack")[0] == [tmp_path / "d" / f"sample_00{i}" for i in range(2)]
    with pytest.raises(LaminaError, match="use a .psd or .ora"):
        sample_paths(tmp_path / "x.png", 2, "psd")


def test_checkpoint_resolution(run, tmp_path):
    assert resolve_checkpoint(run) == run / "export" == resolve_checkpoint(run / "export")
    assert isinstance(load_discriminator(run), FurryGANDiscriminator)
    with pytest.raises(InputFileError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="not a FurryGAN run or export"):
        load_generator(tmp_path / "empty")
    result = invoke("furrygan", "generate", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "no such checkpoint" in result.output


def test_export_matches_training_export(run, tmp_path):
    result = invoke("furrygan", "export", str(run), "--out", str(tmp_path / "export"))
    assert result.exit_code == 0, result.output
    a, b = load_generator(run).state_dict(), load_generator(tmp_path / "export").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_discriminator(tmp_path / "export") is not None
    result = invoke("furrygan", "export", str(tmp_path), "--out", str(tmp_path / "e2"))
    assert result.exit_code == 1 and "no training state" in result.output


@pytest.mark.skipif(not (BUILTIN_DIR / "model.safetensors").is_file(), reason="built-in model not installed")
def test_builtin_model(tmp_path):
    G = load_builtin()
    assert G.cfg.resolution == 32 and not G.training
    assert load_discriminator("builtin") is not None and load_generator("tiny").cfg == G.cfg
    result = invoke("furrygan", "generate", "--n", "2", "--out", str(tmp_path / "b.psd"))  # builtin by default
    assert result.exit_code == 0 and (tmp_path / "b_001.psd").is_file(), result.output
    assert (BUILTIN_DIR / "model.safetensors").stat().st_size + (BUILTIN_DIR / "discriminator.safetensors").stat(
        ).st_size < 10 * 2**20
    # The 64 px built-in model, by name: generates, and its eval picks the 64 px pseudo-GT segmenter.
    G64 = load_generator("builtin-64")
    assert G64.cfg.resolution == 64 and load_discriminator("builtin-64") is not None
    assert sum(p.stat().st_size for p in BUILTIN_64_DIR.iterdir()) < 10 * 2**20
    result = invoke("furrygan", "generate", "--checkpoint", "builtin-64", "--n", "2", "--out", str(tmp_path / "c.ora"))
    assert result.exit_code == 0 and load(tmp_path / "c_001.ora").size == (64, 64), result.output


# ============================================================================ segment (inversion)
def test_inversion_shapes_and_losses():
    cfg = get_preset("tiny-32")
    G, D = FurryGANGenerator(cfg.model).eval(), FurryGANDiscriminator(cfg.model).eval()
    images = torch.rand(2, 3, 32, 32)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    result = invert(G, images, steps=3, D=D, show_progress=False)
    assert result.alpha.shape == (2, 1, 32, 32) and 0 <= result.alpha.min() and result.alpha.max() <= 1
    assert result.output.w.shape == (2, G.num_ws, G.z_dim) and len(result.losses) == 3
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # G itself is untouched
    layered = result.to_layered(1)
    assert np.allclose(layered.layers[0].rgb, images[1].permute(1, 2, 0).numpy(), atol=1e-6)
    with pytest.raises(InputFileError, match=r"must be \[N, 3, 32, 32\]"):
        invert(G, torch.rand(1, 3, 16, 16), steps=1)


def test_uncrop_maps_the_centre_square_back():
    square = torch.zeros(1, 8, 8)
    square[:, :, 0] = 1.0  # left column of the crop
    out = uncrop(square, 20, 30)  # crop = columns 5..25 of a 30-wide image, 20 rows
    assert out.shape == (1, 20, 30)
    assert square_window(20, 30) == (slice(0, 20), slice(5, 25))
    assert torch.all(out[:, :, :5] == out[:, :, 5:6])  # the strip left of the crop continues its edge
    assert out[0, :, 24].abs().max() < 1e-6 and torch.all(out[:, :, 25:] == out[:, :, 24:25])
    assert uncrop(torch.rand(1, 8, 8), 8, 8).shape == (1, 8, 8)


def test_perceptual_terms():
    a = torch.rand(2, 3, 32, 32)
    assert torch.equal(pyramid_l1(a, a), torch.zeros(2))
    assert pyramid_l1(a, a + 0.1).allclose(torch.full((2,), 0.3))  # 32, 16, 8 px: 3 scales
    feats = [torch.rand(2, 4, 8, 8)]
    assert feature_distance(feats, [f * 3 for f in feats]).abs().max() < 1e-6  # scale invariant per pixel
    smooth = torch.ones(1, 1, 16, 16)
    assert noise_regularization([smooth]) > noise_regularization([torch.randn(1, 1, 16, 16)])


def test_segment_command(run, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(path)
    result = invoke("furrygan", "segment", "--checkpoint", str(run), str(path), "--out", str(tmp_path / "seg"),
                    "--steps", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "seg" / "photo_mask.png").size == (50, 40)  # the image's own size
    layered = load(tmp_path / "seg" / "photo.psd")
    assert layered.layers[0].name == "foreground" and (layered.width, layered.height) == (50, 40)
    original = np.asarray(Image.open(path), np.float32) / 255
    assert np.abs(layered.layers[0].rgb - original).max() <= 1 / 255  # the real pixels, uncropped
    result = invoke("furrygan", "segment", "--checkpoint", str(run), str(path), "--out", str(tmp_path / "seg32"),
                    "--steps", "2", "--size", "model")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "seg32" / "photo_mask.png").size == (32, 32)
    result = invoke("furrygan", "segment", str(tmp_path / "nope.png"), "--out", str(tmp_path / "seg"))
    assert result.exit_code == 1 and "no such image file" in result.output


def test_segment_learning_rate(run, tmp_path, monkeypatch):
    # segment and invert() share one default learning rate (INVERSION_LR); --lr overrides it.
    from lamina.furrygan import inference

    seen, real = [], inference.invert
    monkeypatch.setattr(inference, "invert", lambda *args, **kw: seen.append(kw["lr"]) or real(*args, **kw))
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    for extra in ([], ["--lr", "0.2"]):
        result = invoke("furrygan", "segment", "--checkpoint", str(run), str(path), "--out", str(tmp_path / "seg"),
                        "--steps", "1", "--overwrite", *extra)
        assert result.exit_code == 0, result.output
    assert seen == [inference.INVERSION_LR, 0.2]
    assert inspect.signature(real).parameters["lr"].default == inference.INVERSION_LR


# ============================================================================ segmenter and eval
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # torch.jit files
def test_segmenter_save_load(segmenter_dir, tmp_path):
    seg = load_segmenter(segmenter_dir)
    assert isinstance(seg, Segmenter) and seg.resolution == 32
    images = torch.rand(3, 3, 48, 48)
    prob = seg.predict(images)
    assert prob.shape == (3, 1, 48, 48) and 0 <= prob.min() and prob.max() <= 1
    # Half-precision storage (the shipped 64 px segmenter) loads back as float32, within rounding.
    half = load_segmenter(seg.save(tmp_path / "half", dtype=torch.float16))
    assert next(half.parameters()).dtype == torch.float32
    sizes = [(folder / "model.safetensors").stat().st_size for folder in (tmp_path / "half", segmenter_dir)]
    assert sizes[0] < 0.6 * sizes[1]
    assert torch.allclose(half.predict(images), prob, atol=1e-2)
    # Any local module works as pseudo-GT: TorchScript, or a pickled nn.Module.
    torch.jit.trace(seg.eval(), images[:, :, :32, :32]).save(str(tmp_path / "seg.ts"))
    scripted = load_segmenter(tmp_path / "seg.ts", resolution=32)
    assert torch.allclose(torch.sigmoid(scripted.module(images[:, :, :32, :32])),
                          torch.sigmoid(seg(images[:, :, :32, :32])), atol=1e-6)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.Sigmoid()), tmp_path / "module.pt")
    assert load_segmenter(tmp_path / "module.pt").predict(images).shape == (3, 1, 48, 48)
    torch.save({"not": "a module"}, tmp_path / "dict.pt")
    with pytest.raises(InputFileError, match="not a torch nn.Module"):
        load_segmenter(tmp_path / "dict.pt")
    with pytest.raises(InputFileError, match="no such segmenter"):
        load_segmenter(tmp_path / "missing.pt")


def test_train_segmenter_rejects_indivisible_resolution(tmp_path):
    # One line naming the values, exit 1, and nothing written.
    result = invoke("furrygan", "train-segmenter", "--out", str(tmp_path / "seg"), "--resolution", "40",
                    "--depth", "4", "--steps", "1")
    assert result.exit_code == 1 and "resolution 40 must be divisible by 2**depth = 16" in result.output, result.output
    assert not (tmp_path / "seg").exists()


def test_builtin_segmenter_per_resolution(monkeypatch, segmenter_dir, tmp_path):
    # Each shipped pseudo-GT segmenter is scored at its own resolution: the nearest one is used.
    from lamina.furrygan import segmenter as module

    for resolution, folder in module.BUILTIN_DIRS.items():
        assert load_segmenter("builtin", resolution).resolution == resolution, folder
    assert module.builtin_segmenter_dir() == module.BUILTIN_DIRS[32]
    assert module.builtin_segmenter_dir(128) == module.BUILTIN_DIRS[64]
    assert module.builtin_segmenter_dir(16) == module.BUILTIN_DIRS[32]
    # The switch lies at the geometric midpoint, 45.25 px.
    assert module.builtin_segmenter_dir(45) == module.BUILTIN_DIRS[32]
    assert module.builtin_segmenter_dir(46) == module.BUILTIN_DIRS[64]
    monkeypatch.setattr(module, "BUILTIN_DIRS", {32: segmenter_dir, 64: tmp_path / "not-installed"})
    assert module.builtin_segmenter_dir(64) == segmenter_dir
    monkeypatch.setattr(module, "BUILTIN_DIRS", {32: tmp_path / "not-installed"})
    with pytest.raises(InputFileError, match="not installed"):
        load_segmenter("builtin")


def test_generated_mask_metrics_perfect_with_oracle():
    samples = {"fg": torch.rand(4, 3, 8, 8), "alpha": (torch.rand(4, 1, 8, 8) > 0.5).float()}
    samples["composite"] = samples["fg"]

    class Oracle:
        def predict(self, images):
            return samples["alpha"]

    assert generated_mask_metrics(samples, Oracle())["miou"] == 1.0


def test_eval_command(run, segmenter_dir):
    result = invoke("furrygan", "eval", "--checkpoint", str(run), "--n", "8", "--segmenter", str(segmenter_dir),
                    "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["masks"]) >= {"iou_fg", "miou", "f1"} and "fid_composite" in report["fid_kid"]
    result = invoke("furrygan", "eval", "--checkpoint", str(run), "--n", "4", "--segmenter", str(segmenter_dir),
                    "--real", "none", "--on", "composite", "--inversion", "2", "--inversion-steps", "2")
    assert result.exit_code == 0 and "| miou |" in result.output and "inversion miou" in result.output, result.output
    for device, message in [("gpu0", "'gpu0' is not a torch device"), ("cuda:0", "sees no CUDA device")]:
        if device.startswith("cuda") and torch.cuda.is_available():
            continue
        result = invoke("furrygan", "eval", "--checkpoint", str(run), "--device", device)
        assert result.exit_code == 2 and message in result.output, result.output


def test_select_command(run, segmenter_dir, tmp_path):
    # Every snapshot scored (run keeps one per step: checkpoint_every=1), the scores cached and drawn, the best copied.
    args = ["furrygan", "select", str(run), "--n", "4", "--segmenter", str(segmenter_dir), "--threads", "1"]
    result = invoke(*args, "--json", "--export", str(tmp_path / "best"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    steps = [int(step) for step in report["scores"]]
    assert steps == sorted(steps) and steps[:2] == [1, 2]
    assert report["best"] == max(steps, key=lambda s: (report["scores"][str(s)]["miou"], -s))
    assert (run / "snapshot-scores.png").is_file()
    best = tmp_path / "best"
    assert (best / "model.safetensors").read_bytes() == (
        run / "snapshots" / f"step-{report['best']:07d}" / "model.safetensors").read_bytes()
    # A rerun with the same settings reuses the cached scores (doctored here to make step 1 the best) ...
    cache = json.loads((run / "snapshot-scores.json").read_text())
    cache["scores"]["1"]["masks"]["miou"] = 2.0
    (run / "snapshot-scores.json").write_text(json.dumps(cache))
    result = invoke(*args)
    assert result.exit_code == 0 and "| 1 **best** | 2.0000 |" in result.output, result.output
    # ... unless the snapshot was rewritten since; other settings score afresh. An existing --export
    # is refused before any work.
    weights = run / "snapshots" / "step-0000001" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    result = invoke(*args, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["scores"]["1"]["miou"] <= 1.0
    (run / "snapshot-scores.json").write_text(json.dumps(cache))
    result = invoke(*args, "--seed", "5", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["scores"]["1"]["miou"] <= 1.0
    result = invoke(*args, "--export", str(best))
    assert result.exit_code == 1 and "already exists" in result.output
    result = invoke("furrygan", "select", str(tmp_path))
    assert result.exit_code == 1 and "no snapshots/ folder" in result.output


def test_best_snapshot_prefers_the_earliest_of_equals(tmp_path):
    scores = [SnapshotScore(step, tmp_path, {"miou": miou}) for step, miou in [(1, 0.5), (2, 0.7), (3, 0.7)]]
    assert best_snapshot(scores).step == 2
    with pytest.raises(InputFileError):
        best_snapshot([])


def test_generate_batches_ranges(run):
    samples = generate_batches(load_generator(run), 3, batch=2)
    assert samples["fg"].shape == (3, 3, 32, 32) and samples["alpha"].shape == (3, 1, 32, 32)
    assert 0 <= samples["composite"].min() and samples["composite"].max() <= 1


def test_generate_batches_is_reproducible_and_leaves_the_global_rng_alone(run):
    G = load_generator(run)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generate_batches(G, 3, batch=2, seed=5)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    second = generate_batches(G, 3, batch=2, seed=5)
    assert all(torch.equal(first[k], second[k]) for k in first)  # noise inputs too, not only z
    other = generate_batches(G, 3, batch=2, seed=6)
    assert not torch.equal(first["fg"], other["fg"])


# ============================================================================ data
def test_synth_composites_and_image_folder(tmp_path):
    data = SynthComposites(32, length=5)
    assert len(data) == 5 and data[0].dtype == torch.uint8 and data[0].shape == (3, 32, 32)
    assert torch.equal(data[3], SynthComposites(32, length=5)[3])
    Image.fromarray(np.zeros((30, 60, 3), np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.full((50, 20, 3), 255, np.uint8)).save(tmp_path / "tall.jpg")
    folder = ImageFolderDataset(tmp_path, 16)
    assert len(folder) == 2 and folder[0].shape == (3, 16, 16) and int(folder[0].max()) == 255
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no readable images"):
        ImageFolderDataset(tmp_path / "empty", 16)


# ============================================================================ distributed
@pytest.mark.slow
def test_two_process_training_smoke(tmp_path):
    """CI: ``torchrun --standalone --nproc_per_node 2 -m lamina.furrygan.smoke RUN`` (about 25 s on 2 cores)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAMINA_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lamina.furrygan.smoke", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "smoke ok: 2 process(es), 3 steps of 4" in proc.stdout
