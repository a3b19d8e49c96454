"""BFS training side: losses (golden numbers by hand), data, config, training stages, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lamina.bfs import losses as L
from lamina.bfs.config import BFSTrainConfig, resolve_config
from lamina.bfs.data import Manifest, box_mask, collate, composite_sample, grow_box, make_source, over, synth_sample
from lamina.errors import LaminaError


# ----------------------------------------------------------------------------------- losses
def test_flow_matching_golden():
    x0, noise = torch.tensor([2.0]), torch.tensor([-2.0])
    assert L.noisy_latent(x0, noise, torch.tensor([0.25])).item() == pytest.approx(1.0)  # 0.75*2 + 0.25*(-2)
    assert L.flow_target(x0, noise).item() == pytest.approx(-4.0)  # noise - x0
    out = L.flow_matching_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0]]), torch.zeros(1, 2),
                               torch.tensor([[3.0]]), foreground_weight=0.5)
    assert out["loss_x"].item() == pytest.approx(2.5)  # (1 + 4) / 2
    assert out["loss_y"].item() == pytest.approx(4.0)  # (1 - 3)^2
    assert out["loss"].item() == pytest.approx(4.5)  # 2.5 + 0.5 * 4
    only = L.composite_only_loss(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))
    assert set(only) == {"loss", "loss_x"} and only["loss"].item() == pytest.approx(2.5)


def test_partial_alpha_token_weights_golden():
    # A 4x4 alpha, tokens of 2x2 px: token 0 holds 2 partial pixels (0.5, 0.3), token 1 none (0 and 1), token 2 all
    # four (0.4), token 3 one (0.95 is above `high`, 0.01 below `low`, 0.5 partial).
    alpha = torch.tensor([[0.5, 0.3, 0.0, 1.0],
                          [1.0, 0.0, 1.0, 0.0],
                          [0.4, 0.4, 0.95, 0.01],
                          [0.4, 0.4, 0.5, 1.0]]).reshape(1, 1, 4, 4)
    w = L.partial_alpha_token_weights(alpha, 2, 5.0)
    assert w.shape == (1, 4, 1)
    assert w.flatten().tolist() == pytest.approx([3.0, 1.0, 5.0, 2.0])  # 1 + 4 * (2/4, 0, 4/4, 1/4)
    # Weighted row-y loss: errors 1 on token 0 and 0 elsewhere -> 3 * 1 / (3 + 1 + 5 + 2) with one channel.
    out = L.flow_matching_loss(torch.zeros(1, 4, 1), torch.tensor([[[1.0], [0.0], [0.0], [0.0]]]),
                               torch.zeros(1, 4, 1), torch.zeros(1, 4, 1), token_weight_y=w)
    assert out["loss_y"].item() == pytest.approx(3.0 / 11.0)
    same = L.flow_matching_loss(torch.zeros(1, 4, 2), torch.ones(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 2),
                                token_weight_y=torch.ones(1, 4, 1))
    assert same["loss_y"].item() == pytest.approx(1.0)  # unit weights: the plain mean


def test_sigmas_and_kl_golden():
    assert torch.allclose(L.logit_normal_sigmas(3, 0.0, 0.0), torch.full((3,), 0.5))
    s = L.logit_normal_sigmas(1000, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and abs(float(s.mean()) - 0.5) < 0.03
    assert L.kl_loss(torch.ones(2), torch.zeros(2)).item() == pytest.approx(0.5)  # 0.5 (1 + 1 - 1 - 0)
    assert L.kl_loss(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(0.0)


def test_transparency_losses_golden():
    # Two pixels: an opaque red object pixel and a half-transparent black shadow pixel.
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.5]]).reshape(1, 4, 1, 2)
    pred = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.25]]).reshape(1, 4, 1, 2)
    bg = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]).reshape(1, 3, 1, 2)  # blue
    assert L.shadow_weights(target[:, 3:], 4.0).flatten().tolist() == [1.0, 4.0]
    out = L.transparency_losses(pred, target, bg, shadow_weight=4.0)
    assert out["alpha"].item() == pytest.approx(1.0 / 5.0)  # (0*1 + 0.25*4) / (1 + 4)
    assert out["rgb"].item() == pytest.approx(0.5 / 9.0)  # weights a*w = 1, 2 over 3 channels; one error 0.5
    # composite: pixel 0 (0.5,0,0) vs (1,0,0) weight 1; pixel 1 (0,0,0.75) vs (0,0,0.5) weight 4.
    assert out["composite"].item() == pytest.approx((0.5 + 0.25 * 4) / 15.0)
    assert out["loss"].item() == pytest.approx(0.2 + 0.5 / 9.0 + 0.1)
    assert L.transparency_losses(target, target, bg)["loss"].item() == 0.0


def test_identity_and_grey():
    rgba = torch.tensor([1.0, 0.0, 0.0, 0.5]).reshape(1, 4, 1, 1)
    assert L.over_grey(rgba).flatten().tolist() == pytest.approx([0.75, 0.25, 0.25])
    latent = torch.zeros(1, 2, requires_grad=True)
    loss = L.identity_loss(latent, torch.tensor([[1.0, 3.0]]))
    assert loss.item() == pytest.approx(5.0)  # (1 + 9) / 2
    loss.backward()
    assert latent.grad.tolist() == [[-1.0, -3.0]]


# ------------------------------------------------------------------------------------- data
def test_boxes():
    rng = np.random.default_rng(0)
    assert grow_box((10, 12, 20, 30), rng, (0.0, 0.0), 0.0, 64, 64) == (10, 12, 20, 30)
    for _ in range(50):
        x0, y0, x1, y1 = grow_box((0, 50, 30, 64), rng, (0.0, 0.15), 0.05, 64, 64)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    grown = grow_box((20, 20, 40, 40), np.random.default_rng(1), (0.15, 0.15), 0.0, 64, 64)
    assert grown[0] < 20 and grown[2] > 40
    mask = box_mask((1, 2, 4, 3), 5, 6)
    assert mask.sum() == 3 and mask[2, 1] == 1 and mask[2, 4] == 0


def test_synth_sample_ground_truth():
    config = resolve_config("test")
    for seed in range(6):
        s = synth_sample(seed, config, multi=seed % 2 == 1)
        assert s.background.shape == (32, 32, 3) and s.foreground.shape == (32, 32, 4)
        a = s.foreground[:, :, 3]
        np.testing.assert_array_equal(s.composite, over(s.foreground, s.background))
        np.testing.assert_array_equal(s.composite[a == 0], s.background[a == 0])
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
    # multi: instance k's background already holds instances < k (differs from the bare scene background).
    from lamina.bfs.data import _scene_config
    from lamina.data import generate_scene

    differs = False
    for seed in range(10):
        s = synth_sample(seed, config, multi=True)
        differs |= not np.array_equal(s.background, generate_scene(seed, _scene_config(config, "multi")).background)
    assert differs
    dropped = synth_sample(0, BFSTrainConfig(**(config.to_dict() | {"p_drop_caption": 1.0, "object_scale": (0.2, 0.3),
                                                                   "box_grow": (0.0, 0.15)})))
    assert dropped.caption == ""
    kept = synth_sample(0, BFSTrainConfig(**(config.to_dict() | {"p_drop_caption": 0.0, "object_scale": (0.2, 0.3),
                                                                "box_grow": (0.0, 0.15)})))
    assert kept.caption.startswith("a")


def test_synth_samples_over_photographs(tmp_path):
    """``p_photo``: single-object samples over a crop of a photograph of ``photos`` (the same layer, its effects
    now falling on the photo); multi-object samples and, without photos, every sample stay as they were."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 80, dtype=np.float32)
    for i in range(2):  # two "photographs": green 0.3 or 0.7 everywhere, which no procedural background is
        green = np.full((80, 80), 0.3 + 0.4 * i, np.float32)
        _write_rgba(tmp_path / f"photo{i}.png", np.stack([np.outer(ramp, ramp), green, rng.random((80, 80))], 2))
    (tmp_path / "notes.txt").write_text("not a photograph")
    plain = resolve_config("test", p_multi=0.0)
    photos = resolve_config("test", p_multi=0.0, photos=str(tmp_path), p_photo=1.0)
    for seed in range(3):
        a, b = synth_sample(seed, plain), synth_sample(seed, photos)
        np.testing.assert_array_equal(a.foreground, b.foreground)
        assert a.box == b.box and a.caption == b.caption
        assert not np.array_equal(a.background, b.background)
        np.testing.assert_array_equal(b.composite, over(b.foreground, b.background))
        assert np.all(np.abs(b.background[:, :, 1] - 0.3) < 0.01) or np.all(np.abs(b.background[:, :, 1] - 0.7) < 0.01)
    multi = resolve_config("test", photos=str(tmp_path), p_photo=1.0)
    np.testing.assert_array_equal(synth_sample(1, multi, multi=True).background,
                                  synth_sample(1, resolve_config("test"), multi=True).background)
    half = resolve_config("test", p_multi=0.0, photos=str(tmp_path), p_photo=0.5)
    over_photos = [not np.array_equal(synth_sample(s, half).background, synth_sample(s, plain).background)
                   for s in range(20)]
    assert 3 <= sum(over_photos) <= 17
    with pytest.raises(LaminaError, match="p_photo=0.5 needs photos=FOLDER"):
        resolve_config("test", p_photo=0.5)
    with pytest.raises(LaminaError, match="is not a folder of photographs"):
        resolve_config("test", p_photo=0.5, photos=str(tmp_path / "photo0.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaminaError, match="no readable photographs"):
        make_source(resolve_config("test", p_photo=0.5, photos=str(tmp_path / "empty")))


def test_composite_samples_and_collate():
    config = resolve_config("test", stage="composite")
    s = composite_sample(3, config, [])
    assert not s.layered and s.composite.shape == (32, 32, 3)
    assert not np.array_equal(s.composite, s.background)
    source = make_source(config)
    batch = collate([source(i) for i in range(2)])
    assert "foreground" not in batch and batch["mask"].shape == (2, 1, 32, 32)
    batch = collate([synth_sample(i, resolve_config("test")) for i in range(2)])
    assert batch["foreground"].shape == (2, 4, 32, 32) and batch["box"].dtype == torch.int64
    assert len(batch["caption"]) == 2


def _write_rgba(path, rgba):
    mode = "RGBA" if rgba.shape[2] == 4 else "RGB"
    Image.fromarray((np.asarray(rgba) * 255).round().astype(np.uint8), mode).save(path)


def test_manifest(tmp_path):
    bg = np.full((40, 48, 3), 0.5, np.float32)
    fg = np.zeros((40, 48, 4), np.float32)
    fg[10:20, 10:30] = (1.0, 0.0, 0.0, 1.0)
    _write_rgba(tmp_path / "bg.png", bg)
    _write_rgba(tmp_path / "fg.png", fg)
    line = {"background": "bg.png", "foreground_rgba": "fg.png", "box": [10, 10, 30, 20], "caption": "a red box"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    config = resolve_config("test", data=str(tmp_path), p_drop_caption=0.0, box_jitter=0.0)
    s = make_source(config)(0)
    assert s.layered and s.foreground.shape == (32, 32, 4) and s.caption == "a red box"
    assert s.box == (int(10 * 32 / 48), 8, math.ceil(30 * 32 / 48), 16)
    with pytest.raises(LaminaError, match="missing key.*composite"):
        Manifest(tmp_path, 32, layered=False)
    (tmp_path / "bad.jsonl").write_text(json.dumps(line | {"foreground_rgba": "nope.png"}) + "\n")
    with pytest.raises(LaminaError, match="nope.png: no such file"):
        Manifest(tmp_path / "bad.jsonl", 32, layered=True).sample(0, np.random.default_rng(0), config)
    (tmp_path / "box.jsonl").write_text(json.dumps(line | {"box": [5, 5, 2, 9]}) + "\n")
    with pytest.raises(LaminaError, match="box must be"):
        Manifest(tmp_path / "box.jsonl", 32, layered=True)
    _write_rgba(tmp_path / "small.png", fg[:20])
    (tmp_path / "size.jsonl").write_text(json.dumps(line | {"foreground_rgba": "small.png"}) + "\n")
    with pytest.raises(LaminaError, match="foreground_rgba is 48x20 but the background is 48x40"):
        Manifest(tmp_path / "size.jsonl", 32, layered=True).sample(0, np.random.default_rng(0), config)
    with pytest.raises(LaminaError, match="no such manifest"):
        Manifest(tmp_path / "missing", 32, layered=True)


def test_config_errors():
    with pytest.raises(LaminaError, match="unknown BFS training stage"):
        resolve_config("tiny", stage="nope")
    with pytest.raises(LaminaError, match="unknown BFS training preset"):
        resolve_config("huge")
    with pytest.raises(LaminaError, match="unknown BFS training option"):
        resolve_config("tiny", colour=1)
    with pytest.raises(LaminaError, match="lr must be a number"):
        resolve_config("tiny", lr="fast")
    with pytest.raises(LaminaError, match="training data"):
        resolve_config("tiny", data="/nonexistent/folder")
    assert resolve_config("flux-fill").mixed_precision == "bf16"
    assert resolve_config("flux-fill").gradient_checkpointing and not resolve_config("flux-fill").train_base


# ------------------------------------------------------------------------- training and CLI
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Random tiny BFS components saved once as a pipeline folder (32 px, 2 steps): every test starts from it."""
    from lamina.bfs.components import build_components
    from lamina.bfs.pipeline import BFSPipeline

    path = tmp_path_factory.mktemp("bfs") / "init"
    parts = build_components("tiny-kl", seed=0)  # learned VAEs: every stage, ``vae`` included, has work
    BFSPipeline.from_components(parts, resolution=32, inference_steps=2, guidance_scale=1.0,
                                max_sequence_length=24).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("stage", ["vae", "layered", "composite"])
def test_stage_runs_resumes_and_exports(stage, tiny_model, tmp_path):
    from lamina.bfs.pipeline import BFSPipeline
    from lamina.bfs.train import training_loop

    torch.set_num_threads(1)
    run = tmp_path / "run"
    lines: list[str] = []
    config = resolve_config("test", stage=stage, init=tiny_model, preview_every=10)
    export = training_loop(config, run, echo=lines.append)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)
    assert (run / "training-state.pt").is_file() and (export / "model_index.json").is_file()
    saved = json.loads((run / "training-config.json").read_text())
    assert saved["stage"] == stage and saved["init"] == tiny_model

    # Rerun with more steps: resumes at step 2 and only trains step 3.
    lines.clear()
    training_loop(resolve_config("test", stage=stage, init=tiny_model, preview_every=10, total_steps=3), run,
                  echo=lines.append)
    assert any("resuming" in line and "step 2" in line for line in lines)
    assert [json.loads(r)["step"] for r in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(LaminaError, match="different configuration: batch_size"):
        training_loop(resolve_config("test", stage=stage, init=tiny_model, batch_size=3, total_steps=3), run)
    # A cool-down: the learning rate and the EMA's half-life may change when a run resumes.
    training_loop(resolve_config("test", stage=stage, init=tiny_model, preview_every=10, total_steps=4, lr=1e-4,
                                 ema_halflife_nimg=100), run)
    assert [json.loads(r)["step"] for r in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert json.loads((run / "training-config.json").read_text())["lr"] == 1e-4

    pipe = BFSPipeline.from_pretrained(export)
    if stage == "vae":  # latent statistics measured at export
        assert pipe.vae.config.scaling_factor != 1.0 and pipe.trans_vae.config.shift_factor != 0.0
    else:
        before = BFSPipeline.from_pretrained(tiny_model)
        changed = [k for k, v in pipe.joint.state_dict().items() if not torch.equal(v, before.joint.state_dict()[k])]
        assert changed  # the joint adapter was trained
        pipe.set_progress_bar_config(disable=True)
        out = pipe(background=np.full((32, 32, 3), 0.5, np.float32), box=(4, 4, 20, 28), prompt="a red star",
                   num_inference_steps=1, generator=torch.Generator().manual_seed(0))
        layer = out.layers[0].pixels
        assert layer.shape == (32, 32, 4) and 0.0 <= layer.min() and layer.max() <= 1.0


def test_patch_code_components_train_from_scratch_without_a_vae_stage(tmp_path, monkeypatch):
    """``--preset tiny`` from nothing: the linear patch codes are fitted and normalised when the run starts, the
    ``layered`` stage trains and exports them as they are, a resumed run restores them from its state instead of
    fitting them again, and a ``vae`` stage is refused with a clear error."""
    import lamina.bfs.train as bfs_train
    from lamina.bfs.patch_vae import LinearPatchVAE
    from lamina.bfs.pipeline import BFSPipeline
    from lamina.bfs.train import training_loop

    torch.set_num_threads(1)
    config = resolve_config("test", stage="layered", components="tiny", latent_channels=8, preview_every=10)
    pipe = BFSPipeline.from_pretrained(training_loop(config, tmp_path / "run", echo=lambda _: None))
    for vae in (pipe.vae, pipe.trans_vae):
        assert isinstance(vae, LinearPatchVAE) and vae.config.scaling_factor != 1.0
        assert vae.config.latent_channels == 8 and not torch.equal(vae.basis, torch.eye(64)[:, :8])  # fitted
    assert pipe.transformer.config.in_channels == 2 * 4 * 8 + 4 * 16
    assert pipe.trans_vae.config.shift_factor != pipe.vae.config.shift_factor  # each branch normalised on its own

    def no_refit(*_args, **_kwargs):
        raise AssertionError("a resumed run fitted its patch codes again")

    monkeypatch.setattr(bfs_train, "fit_patch_codes", no_refit)
    resumed = BFSPipeline.from_pretrained(training_loop(dataclasses.replace(config, total_steps=3), tmp_path / "run",
                                                       echo=lambda _: None))
    for name in ("vae", "trans_vae"):
        before, after = getattr(pipe, name), getattr(resumed, name)
        assert torch.equal(before.basis, after.basis) and torch.equal(before.center, after.center)
        assert after.config.scaling_factor == before.config.scaling_factor
        assert after.config.shift_factor == before.config.shift_factor
    monkeypatch.undo()
    with pytest.raises(LaminaError, match="nothing to train"):  # before anything is written
        resolve_config("test", stage="vae", components="tiny")
    with pytest.raises(LaminaError, match="nothing to train"):  # a saved model with patch codes
        training_loop(resolve_config("test", stage="vae", init=str(tmp_path / "run" / "export")), tmp_path / "vae",
                      echo=lambda _: None)


def test_transparency_decoder_fine_tune_keeps_everything_else(tiny_model, tmp_path):
    from lamina.bfs.pipeline import BFSPipeline
    from lamina.bfs.train import training_loop

    torch.set_num_threads(1)
    config = resolve_config("test", stage="vae", init=tiny_model, vae_modules="trans_decoder", preview_every=10)
    pipe = BFSPipeline.from_pretrained(training_loop(config, tmp_path / "run", echo=lambda _: None))
    before = BFSPipeline.from_pretrained(tiny_model)
    for name in ("vae", "transformer", "joint"):
        assert all(torch.equal(v, before.components[name].state_dict()[k])
                   for k, v in pipe.components[name].state_dict().items()), name
    new, old = pipe.trans_vae.state_dict(), before.trans_vae.state_dict()
    changed = {k.split(".")[0] for k in new if not torch.equal(new[k], old[k])}
    assert changed == {"decoder", "post_quant_conv"} or changed == {"decoder"}
    assert pipe.trans_vae.config.scaling_factor == before.trans_vae.config.scaling_factor  # latents unchanged
    with pytest.raises(LaminaError, match="vae_modules"):
        resolve_config("test", vae_modules="encoder")


def _cli(*args):
    from click.testing import CliRunner

    from lamina.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_synthesize_cli_two_layers(tiny_model, tmp_path):
    from lamina.io import load

    rng = np.random.default_rng(0)
    background = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(background).save(tmp_path / "bg.png")
    out = tmp_path / "scene.psd"
    result = _cli("synthesize", str(tmp_path / "bg.png"), "--box", "4,4,24,30", "--prompt", "a red star with a shadow",
                  "--box", "20,10,44,36", "--prompt", "a blue heart", "--out", str(out), "--model", tiny_model,
                  "--steps", "1", "--guidance", "2.5", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "scene.sheet.png").is_file()
    layered = load(out)
    assert [layer.name for layer in layered.layers] == ["a red star with a shadow", "a blue heart"]
    np.testing.assert_array_equal((layered.background.rgb * 255).round().astype(np.uint8), background)
    alpha = np.max([layer.alpha for layer in layered.layers], axis=0)
    composite = (layered.composite()[:, :, :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(composite[alpha == 0], background[alpha == 0])  # B bit-exact where alpha = 0


def test_synthesize_layers_sampler_options(tiny_model):
    from lamina.bfs.synthesize import synthesize_layers
    from lamina.bfs.train import load_model

    pipe = load_model(tiny_model)
    background = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    plain = synthesize_layers(pipe, background, [(2, 2, 20, 20)], ["a red star"], num_inference_steps=1)
    guided = synthesize_layers(pipe, background, [(2, 2, 20, 20)], ["a red star"], num_inference_steps=1,
                               guidance_scale=2.5)
    assert plain.layers[0].metadata["guidance_scale"] == pipe.config.guidance_scale
    assert guided.layers[0].metadata["guidance_scale"] == 2.5
    assert not np.array_equal(plain.layers[0].pixels, guided.layers[0].pixels)  # true CFG changed the sample


def test_synthesize_layers_bounded_path_matches_the_full_one(tiny_model, monkeypatch):
    import lamina.bfs.pipeline as bfs_pipeline
    from lamina.bfs.synthesize import synthesize_layers
    from lamina.bfs.train import load_model

    pipe = load_model(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    background = (np.random.default_rng(2).random((40, 56, 3)) * 255).astype(np.uint8)
    boxes, prompts = [(2, 3, 30, 30), (20, 12, 52, 38)], ["a red star", "a blue heart"]
    full = synthesize_layers(pipe, background, boxes, prompts, num_inference_steps=1, seed=3)
    monkeypatch.setattr(bfs_pipeline, "BOUNDED_SIDE", 16)  # this small background now takes the bounded path
    assert pipe.is_bounded(40, 56)
    bounded = synthesize_layers(pipe, background, boxes, prompts, num_inference_steps=1, seed=3)
    assert bounded.background.is_compact and np.array_equal(bounded.background.stored[:3],
                                                            background.transpose(2, 0, 1))
    assert [layer.name for layer in bounded.layers] == prompts
    assert all(layer.stored.dtype == np.uint8 for layer in bounded.layers)  # the 8-bit result's own integers
    assert [layer.metadata for layer in bounded.layers] == [layer.metadata for layer in full.layers]
    # Layer 1 equals the full path's to its 8-bit rounding; layer 2 was made over a composite that differs by
    # that rounding of layer 1 (the full path keeps float32 layers), so it may move a little more.
    np.testing.assert_allclose(bounded.canvas(0), full.canvas(0), rtol=0, atol=0.5 / 255 + 1e-4)
    np.testing.assert_allclose(bounded.canvas(1), full.canvas(1), rtol=0, atol=1e-2)
    alpha = np.max([bounded.canvas(k)[..., 3] for k in range(2)], axis=0)
    composite = bounded.composite_uint8()[..., :3]
    assert np.array_equal(composite[alpha == 0], background[alpha == 0])  # B bit-exact where alpha = 0
    deep = synthesize_layers(pipe, background.astype(np.uint16) * 257, boxes[:1], prompts[:1], num_inference_steps=1)
    assert deep.bit_depth == 16 and deep.layers[0].stored.dtype == np.uint16


def test_synthesize_layers_in_sampling_windows(tiny_model, monkeypatch):
    import lamina.bfs.pipeline as bfs_pipeline
    from lamina.bfs.synthesize import synthesize_layers
    from lamina.bfs.train import load_model

    pipe = load_model(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    pipe.register_to_config(box_share=0.5)
    background = (np.random.default_rng(3).random((72, 96, 3)) * 255).astype(np.uint8)
    boxes, prompts = [(2, 3, 20, 20), (50, 30, 70, 52)], ["a red star", "a blue heart"]
    windows = [pipe.sampling_window(box, 72, 96) for box in boxes]
    assert windows == [(0, 0, 36, 36), (38, 19, 82, 63)]
    full = synthesize_layers(pipe, background, boxes, prompts, num_inference_steps=1, seed=3)
    assert [layer.offset for layer in full.layers] == [w[:2] for w in windows]
    assert [layer.metadata["window"] for layer in full.layers] == [list(w) for w in windows]
    whole = synthesize_layers(pipe, background, boxes[:1], prompts[:1], num_inference_steps=1, crop=False)
    assert whole.layers[0].offset == (0, 0) and whole.layers[0].metadata["window"] == [0, 0, 96, 72]
    monkeypatch.setattr(bfs_pipeline, "BOUNDED_SIDE", 16)  # the bounded path: composite bands cut to each window
    bounded = synthesize_layers(pipe, background, boxes, prompts, num_inference_steps=1, seed=3)
    assert [layer.metadata for layer in bounded.layers] == [layer.metadata for layer in full.layers]
    np.testing.assert_allclose(bounded.canvas(0), full.canvas(0), rtol=0, atol=0.5 / 255 + 1e-4)
    np.testing.assert_allclose(bounded.canvas(1), full.canvas(1), rtol=0, atol=1e-2)
    alpha = np.max([bounded.canvas(k)[..., 3] for k in range(2)], axis=0)
    assert np.array_equal(bounded.composite_uint8()[..., :3][alpha == 0], background[alpha == 0])


def test_synthesize_cli_errors_before_loading(tmp_path):
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "bg.png")
    bg, out = str(tmp_path / "bg.png"), str(tmp_path / "o.psd")
    missing = str(tmp_path / "no-model")  # never reached: every error below comes first
    cases = [
        (["--box", "0,0,8,8", "--box", "1,1,9,9", "--prompt", "a"], "one --prompt per --box"),
        (["--box", "0,0,60,8", "--prompt", "a"], "outside the 48x40 image"),
        (["--box", "0,0,8", "--prompt", "a"], "four integers"),
        (["--box", "8,0,8,8", "--prompt", "a"], "empty"),
    ]
    for extra, message in cases:
        result = _cli("synthesize", bg, *extra, "--out", out, "--model", missing)
        assert result.exit_code == 1 and message in result.output, result.output
    result = _cli("synthesize", bg, "--box", "0,0,8,8", "--prompt", "a", "--out", str(tmp_path / "o.xyz"),
                  "--model", missing)
    assert result.exit_code == 1 and "o.xyz" in result.output
    (tmp_path / "o.psd").write_bytes(b"taken")
    result = _cli("synthesize", bg, "--box", "0,0,8,8", "--prompt", "a", "--out", out, "--model", missing)
    assert result.exit_code == 1 and "already exists" in result.output
    assert (tmp_path / "o.psd").read_bytes() == b"taken"
    result = _cli("synthesize", str(tmp_path / "nope.png"), "--box", "0,0,8,8", "--prompt", "a", "--out",
                  str(tmp_path / "p.psd"), "--model", missing)
    assert result.exit_code == 1 and "nope.png" in result.output
    result = _cli("synthesize", bg, "--box", "0,0,8,8", "--prompt", "a", "--out", str(tmp_path / "p.psd"),
                  "--model", missing)
    assert result.exit_code == 1 and "no-model" in result.output and not (tmp_path / "p.psd").exists()


def test_train_cli_dry_run_and_errors(tmp_path):
    result = _cli("bfs", "train", "--preset", "tiny", "--stage", "vae", "--out", str(tmp_path / "r"), "--set",
                  "lora_rank=4", "--set", "components=tiny-kl", "--dry-run")
    assert result.exit_code == 0 and json.loads(result.output)["lora_rank"] == 4
    result = _cli("bfs", "train", "--preset", "tiny", "--stage", "vae", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "nothing to train" in result.output and not (tmp_path / "r").exists()
    result = _cli("bfs", "train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--set", "colour=1")
    assert result.exit_code == 1 and "unknown BFS training option" in result.output


@pytest.mark.slow
def test_builtin_layers_in_box_with_shadows():
    """The built-in model: alpha mostly inside the (grown) box, shadow regions for "with a shadow" captions, and
    objects of the caption's colour (among the 3 nearest of 12 named colours) far more often than chance.

    The shadow check is loose (dark soft pixels touching the object): the earlier built-ins' soft grey layers passed
    it although their effects IoU was low, and failed the colour check (benchmarks/RESULTS.md, BFS)."""
    from lamina.bfs.evaluate import bfs_method, held_out_cases
    from lamina.bfs.train import load_model
    from lamina.metrics.synthesis import caption_colour_hit, dilate, predicted_regions, shadow_touches_object

    pipe = load_model("builtin")
    pipe.set_progress_bar_config(disable=True)
    method = bfs_method(pipe, seed=0)
    inside, hits, colours, shadow_cases = [], [], [], 0
    for case in held_out_cases(12, int(pipe.config.resolution)):
        target = case.targets[0]
        layer, _ = method(case.background, target.box, target.caption)
        x0, y0, x1, y1 = target.box
        box = np.zeros(layer.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        obj = predicted_regions(layer)["object"]
        inside.append((obj & dilate(box, 4)).sum() / max(obj.sum(), 1))
        colours.append(caption_colour_hit(layer, target.caption, top=3))
        if "with a shadow" in target.caption:
            shadow_cases += 1
            hits.append(shadow_touches_object(layer))
    assert np.mean(inside) > 0.8
    assert shadow_cases and np.mean(hits) > 0.5
    assert np.nanmean(colours) >= 0.5, colours  # chance: 3 in 12; the grey-blob built-ins scored 0.25


def test_synthesis_metrics():
    from lamina.metrics.synthesis import (
        background_change,
        caption_colour_hit,
        iou,
        layer_metrics,
        predicted_regions,
        shadow_touches_object,
    )

    yy, xx = np.mgrid[0:32, 0:32]
    disc = ((yy - 12) ** 2 + (xx - 16) ** 2 <= 36).astype(np.float32)  # a red object
    shadow = ((((yy - 20) / 2.5) ** 2 + ((xx - 16) / 8.0) ** 2) <= 1).astype(np.float32) * (1 - disc) * 0.5
    obj_only = np.zeros((32, 32, 4), np.float32)
    obj_only[..., 0], obj_only[..., 3] = disc, disc
    with_shadow = obj_only.copy()
    with_shadow[..., 3] = disc + shadow  # black, half-transparent shadow under the object
    assert shadow_touches_object(with_shadow) and not shadow_touches_object(obj_only)
    regions = predicted_regions(with_shadow)
    assert regions["effects"].sum() > 10 and not (regions["effects"] & regions["object"]).any()
    m = layer_metrics(with_shadow, disc, shadow / 0.5 * 0.5)
    assert m["total_iou"] == 1.0 and m["object_iou"] == 1.0 and 0.5 < m["effects_iou"] <= 1.0
    assert m["alpha_sad"] == pytest.approx(0.0, abs=1e-6)
    m = layer_metrics(obj_only, disc, shadow)
    assert m["effects_iou"] == 0.0 and m["alpha_sad"] == pytest.approx(float(shadow.sum()) * 1e-3, rel=1e-5)
    assert math.isnan(iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
    bg = np.full((32, 32, 3), 0.25, np.float32)
    assert background_change(over(with_shadow, bg), bg, with_shadow[..., 3]) == 0.0
    changed = bg.copy()
    changed[0, 0] = 0.5
    assert background_change(changed, bg, with_shadow[..., 3]) == 0.25
    # colour (1, 0, 0) is nearest to "red" (0.82, 0.1, 0.08) of the 12 named colours
    assert caption_colour_hit(with_shadow, "a red star with a shadow") == 1.0
    assert caption_colour_hit(with_shadow, "a furry orange ring") == 0.0
    assert caption_colour_hit(with_shadow, "a furry orange ring", top=3) == 1.0  # red, orange, brown are nearest
    assert math.isnan(caption_colour_hit(with_shadow, "a star"))
    assert caption_colour_hit(np.zeros((8, 8, 4), np.float32), "a red star") == 0.0  # no object


def test_bfs_eval_cli(tiny_model):
    result = _cli("bfs", "eval", tiny_model, "--n", "2", "--steps", "1", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output[result.output.index("{"):])
    assert scores["background_change"] == 0.0 and 0.0 <= scores["total_iou"] <= 1.0
    assert scores["sec_per_layer"] > 0
    result = _cli("bfs", "eval", tiny_model, "--n", "1", "--steps", "1", "--mode", "small", "--crop", "--json",
                  "--threads", "1")  # a 128 px canvas for the 32 px model, sampled in a window around the box
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["background_change"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("height, width", [(3000, 4000), (5477, 7303)])
def test_synthesize_on_a_12_and_a_40_mpx_background_within_1_5_gb(tmp_path, height, width):
    """``lamina synthesize`` (built-in model, two objects, PSD + sheet) on a 4000 x 3000 and a 7303 x 5477
    background: peak RSS of the process <= 1.5 GB, and the background comes back bit-exact."""
    import os
    import sys
    from pathlib import Path

    from lamina.io import load
    from lamina.testing.peak import run_measured

    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    image = ((rows * 0.6 + cols * 0.4) * np.array([1.0, 0.8, 0.6], np.float32)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "bg.png")
    boxes = [f"{width // 10},{height // 2},{width * 4 // 10},{height * 9 // 10}",
             f"{width * 55 // 100},{height * 3 // 10},{width * 9 // 10},{height * 3 // 4}"]
    command = [sys.executable, "-m", "lamina", "synthesize", str(tmp_path / "bg.png"), "--box", boxes[0], "--prompt",
               "a red star with a shadow", "--box", boxes[1], "--prompt", "a blue circle with a shadow",
               "--out", str(tmp_path / "out.psd"), "--threads", "1"]
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root / "src"), LAMINA_PROGRESS="0")
    run = run_measured(command, env=env, timeout=900)  # the command's own peak, not this process's size
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.peak_bytes is not None and run.peak_bytes <= 1.5 * (1 << 30)
    layered = load(tmp_path / "out.psd", memory_budget=4 << 30)  # reading it back is not what is measured
    assert len(layered.layers) == 2
    assert np.array_equal(layered.background.quantised(8)[..., :3], image)
