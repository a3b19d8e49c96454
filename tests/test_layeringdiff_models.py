"""LayeringDiff with pretrained-model stages, offline: tiny random Grounding DINO, SAM, ViTMatte and
Stable Diffusion, saved to a temporary folder and loaded back through the code users run; FBDD training."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub at import: before anything imports it

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from lamina import LaminaError  # noqa: E402
from lamina.io import load  # noqa: E402

torch.set_num_threads(1)
pytest.importorskip("transformers")
pytest.importorskip("diffusers")


# ----------------------------------------------------------------- tiny models
def bert_tokenizer():
    """A BERT WordPiece tokenizer built in memory; Grounding DINO hard-codes BERT's ids of [CLS], [SEP], '.', '?'."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    special = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
    vocab = {f"[unused{i}]": i for i in range(1030) if i not in special.values()} | special
    vocab |= {word: 1030 + i for i, word in enumerate(["a", "the", "cat", "dog", "red", "ball", "on", "grass"])}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    tk.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", model_max_length=32), len(vocab)


def save_tiny_grounding(root) -> dict[str, str]:
    """Tiny random Grounding DINO, SAM and ViTMatte with their processors, saved under ``root``."""
    import transformers as tf

    torch.manual_seed(0)
    tokenizer, vocab_size = bert_tokenizer()
    detector = tf.GroundingDinoForObjectDetection(tf.GroundingDinoConfig(
        backbone_config=tf.SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                      image_size=32, out_features=["stage2", "stage3", "stage4"],
                                      out_indices=[2, 3, 4]),
        text_config=tf.BertConfig(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=32),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=4, num_feature_levels=3, encoder_n_points=1,
        decoder_n_points=1, max_text_len=32, use_timm_backbone=False, backbone=None, use_pretrained_backbone=False))
    processor = tf.GroundingDinoProcessor(
        image_processor=tf.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer)
    sam = tf.SamModel(tf.SamConfig(
        vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                           output_channels=8, image_size=64, patch_size=16, global_attn_indexes=[0], window_size=2,
                           num_pos_feats=4, mlp_dim=16),
        prompt_encoder_config=dict(hidden_size=8, image_size=64, patch_size=16, mask_input_channels=4,
                                   num_point_embeddings=4),
        mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=8, iou_head_depth=1, num_multimask_outputs=3)))
    sam_processor = tf.SamProcessor(image_processor=tf.SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    matting = tf.VitMatteForImageMatting(tf.VitMatteConfig(
        backbone_config=tf.VitDetConfig(image_size=32, patch_size=16, num_channels=4, hidden_size=8,
                                        num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                        out_features=["stage1"]),
        hidden_size=8, convstream_hidden_sizes=[4, 4, 4], fusion_hidden_sizes=[4, 4, 4, 4]))
    paths = {}
    for role, parts in {"detector": (detector, processor), "segmenter": (sam, sam_processor),
                        "matting": (matting, tf.VitMatteImageProcessor())}.items():
        paths[role] = str(root / role)
        for part in parts:
            part.save_pretrained(paths[role])
    return paths


def save_tiny_sd(path, inpainting: bool = False) -> str:
    """A tiny random Stable Diffusion (inpainting) pipeline (CLIP tokenizer written locally), saved at ``path``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16,
                                in_channels=9 if inpainting else 4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=2)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                                num_hidden_layers=2, vocab_size=1000, bos_token_id=0, eos_token_id=2,
                                                pad_token_id=1))
    words = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>",
             "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={w: i for i, w in enumerate(words)},
                              merges=[("l", "o"), ("lo", "w</w>"), ("e", "r</w>")], unk_token="<unk>",
                              model_max_length=77)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                              clip_sample=False, set_alpha_to_one=False)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return str(path)


def save_tiny_fbdd(path) -> str:
    from lamina.layeringdiff.fbdd import FBDDPipeline, make_scheduler, make_unet

    torch.manual_seed(0)
    FBDDPipeline(make_unet("tiny", sample_size=16, effects=True), make_scheduler()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {**save_tiny_grounding(root), "t2i": save_tiny_sd(root / "sd"), "fbdd": save_tiny_fbdd(root / "fbdd"),
            "inpainting": save_tiny_sd(root / "sd-inpainting", inpainting=True)}


def photo(size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((size, size + 8, 3), 0.3, np.float32) + 0.05 * rng.random((size, size + 8, 3), np.float32)
    image[10:28, 12:30] = (0.9, 0.2, 0.1)
    return image


def failure(result) -> str:
    """What a command run directly (without lamina's main group, which prints LaminaError) failed with."""
    return result.output + str(result.exception)


# ----------------------------------------------------------------------- tests
def test_grounding_chain_from_saved_folders(models) -> None:
    from lamina.layeringdiff.grounding import Grounder, GroundingConfig

    grounder = Grounder(GroundingConfig(detector=models["detector"], segmenter=models["segmenter"],
                                        matting=models["matting"], box_threshold=0.0, text_threshold=0.0))
    image = photo()
    x0, y0, x1, y1 = grounder.detect(image, "the cat")
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 40
    mask = grounder.segment(image, (x0, y0, x1, y1))
    assert mask.shape == (40, 48) and mask.dtype == bool and mask.any()
    estimate = grounder.estimate(image, "the cat")
    assert estimate.alpha.shape == (40, 48) and estimate.alpha.dtype == np.float32
    assert 0.0 <= estimate.alpha.min() and estimate.alpha.max() <= 1.0
    assert (estimate.alpha[estimate.trimap == 1.0] == 1.0).all()
    assert (estimate.alpha[estimate.trimap == 0.0] == 0.0).all()
    # Without a matting model: pymatting on SAM's mask.
    plain = Grounder(GroundingConfig(detector=models["detector"], segmenter=models["segmenter"], matting=None,
                                     box_threshold=0.0, text_threshold=0.0))
    assert plain.estimate(image, "the cat").alpha.shape == (40, 48)
    with pytest.raises(LaminaError, match="no 'the cat' found"):
        Grounder(GroundingConfig(detector=models["detector"], box_threshold=1.01)).detect(image, "the cat")


def test_hub_ids_without_network_fail_clearly(tmp_path) -> None:
    import time

    from transformers import SamModel

    from lamina.layeringdiff.fbdd import load_pipeline
    from lamina.layeringdiff.grounding import from_pretrained, generate_composite

    start = time.time()
    with pytest.raises(LaminaError, match="segmenter 'lamina-test/no-such-model'.*HF_HUB_OFFLINE is set"):
        from_pretrained(SamModel, "lamina-test/no-such-model", "segmenter")
    with pytest.raises(LaminaError, match="text-to-image pipeline"):
        generate_composite("lamina-test/no-such-pipeline", "a cat")
    with pytest.raises(LaminaError, match="cannot load the FBDD model"):
        load_pipeline("lamina-test/no-such-fbdd")
    with pytest.raises(LaminaError, match="not a model folder"):
        from_pretrained(SamModel, tmp_path / "missing", "segmenter")
    assert time.time() - start < 10


def test_unreachable_hub_endpoint_fails_fast(tmp_path) -> None:
    """No probe of our own: with the hub client online but its endpoint refusing connections, loading
    a hub id still ends within seconds in a one-line error naming the model."""
    import subprocess
    import sys

    code = ("from transformers import SamModel\n"
            "from lamina.errors import LaminaError\n"
            "from lamina.hub import from_pretrained\n"
            "from lamina.layeringdiff.fbdd import load_pipeline\n"
            "import time\n"
            "start = time.time()\n"
            "try:\n"
            "    load_pipeline('lamina-test/no-such-fbdd')\n"
            "except LaminaError as exc:\n"
            "    print('FBDD', exc)\n"
            "try:\n"
            "    from_pretrained(SamModel, 'lamina-test/no-such-model', 'segmenter')\n"
            "except LaminaError as exc:\n"
            "    print(time.time() - start)\n"
            "    print('ERROR', exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("ERROR cannot load the segmenter 'lamina-test/no-such-model'"), out
    assert lines[0].startswith("FBDD cannot load the FBDD model 'lamina-test/no-such-fbdd'"), out
    assert "cannot be reached" in lines[0]
    assert "127.0.0.1:9 cannot be reached" in lines[-1] and "HF_HUB_OFFLINE" in lines[-1]
    assert float(lines[1]) < 5.0  # both; the client alone retries a refused connection for ~25 s per file


def test_text_to_layered_file_end_to_end(models, tmp_path) -> None:
    from lamina.layeringdiff.cli import generate

    out = tmp_path / "layers.psd"
    args = ["a cat on grass", "--foreground", "the cat", "--t2i", models["t2i"], "--size", "32", "--t2i-steps", "2",
            "--model", models["fbdd"], "--steps", "2", "--out", str(out),
            *sum((["--grounding-model", f"{role}={models[role]}"] for role in ("detector", "segmenter", "matting")),
                 [])]
    result = CliRunner().invoke(generate, args)
    assert result.exit_code == 0, result.output
    layered = load(out)
    assert layered.size == (32, 32) and len(layered.layers) == 1
    assert (tmp_path / "layers.sheet.png").exists()
    meta = load(out).metadata
    assert meta.get("prompt", "a cat on grass") == "a cat on grass"
    again = CliRunner().invoke(generate, args)
    assert again.exit_code != 0 and "already exists" in failure(again)


def test_photo_to_layered_file_with_a_prompt_and_a_box(models, tmp_path) -> None:
    from lamina.io import write_png
    from lamina.layeringdiff.cli import decompose

    image = tmp_path / "photo.png"
    write_png(photo(), image)
    grounding = sum((["--grounding-model", f"{role}={models[role]}"] for role in ("detector", "segmenter",
                                                                                  "matting")), [])
    runner = CliRunner()
    result = runner.invoke(decompose, [str(image), "--prompt", "the cat", "--model", models["fbdd"], "--steps", "2",
                                       "--out", str(tmp_path / "a.ora"), *grounding])
    # The tiny random detector has a threshold of 0.3: it may find nothing, which must be a clean error.
    assert result.exit_code == 0 or "found in the image" in failure(result), failure(result)
    result = runner.invoke(decompose, [str(image), "--box", "10,8,32,30", "--model", models["fbdd"], "--steps", "2",
                                       "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "b").size == (48, 40) and (tmp_path / "b.sheet.png").exists()
    result = runner.invoke(decompose, [str(image), "--box", "10,8,32,30", "--method", "classical",
                                       "--out", str(tmp_path / "c.psd")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(decompose, [str(image), "--box", "10,8,32,30", "--prompt", "the cat",
                                       "--out", str(tmp_path / "d.psd")])
    assert result.exit_code != 0 and "not --box and --prompt" in failure(result)


def test_training_runs_resumes_and_exports(tmp_path) -> None:
    from lamina.layeringdiff.cli import train
    from lamina.layeringdiff.fbdd import load_pipeline

    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(run), "--steps", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert state["step"] == 2
    config = json.loads((run / "training-config.json").read_text())
    assert config["resolution"] == 16 and config["total_steps"] == 2
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(run), "--steps", "4"])
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    pipe = load_pipeline(run / "export")
    out = pipe(np.random.rand(20, 24, 3).astype(np.float32), np.zeros((20, 24), np.float32), num_inference_steps=2)
    assert out.foreground.shape == (1, 20, 24, 3) and out.effects.shape == (1, 20, 24)
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(run), "--lr", "0.1"])
    assert result.exit_code != 0 and "different configuration: lr (0.0005 -> 0.1)" in failure(result)
    # A run folder of an earlier version (a config without today's keys, e.g. max_loss) still resumes.
    old = {k: v for k, v in json.loads((run / "training-config.json").read_text()).items()
           if k not in ("max_loss", "keep_snapshots")}
    (run / "training-config.json").write_text(json.dumps(old))
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(run), "--steps", "4"])
    assert result.exit_code == 0 and "resuming" in result.output, failure(result)
    # Fine-tuning: a new run starts from the exported weights (and refuses a different architecture).
    tuned = tmp_path / "tuned"
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(tuned), "--steps", "1", "--init",
                                   str(run / "export"), "--set", "lr=0"])
    assert result.exit_code == 0 and "starting from the weights" in result.output, failure(result)
    before, after = load_pipeline(run / "export").unet.state_dict(), load_pipeline(tuned / "export").unet.state_dict()
    assert all(torch.allclose(before[k], after[k]) for k in before)  # lr 0: the EMA export is the init
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(tmp_path / "bad"), "--init", "builtin"])
    assert result.exit_code != 0 and "does not match" in failure(result)
    assert runner.invoke(train, ["--preset", "tiny", "--out", str(run), "-n"]).output.startswith("{")
    result = runner.invoke(train, ["--preset", "tiny", "--out", str(run), "--max-minutes", "0"])
    assert result.exit_code == 2 and "--max-minutes" in result.output  # as in lamina furrygan train


def test_training_divergence_guard_and_leftovers(tmp_path) -> None:
    from lamina.errors import TrainingDivergedError
    from lamina.layeringdiff.train import resolve_config, training_loop

    run = tmp_path / "run"
    training_loop(resolve_config("tiny", total_steps=2), run, echo=lambda _: None)
    (run / ".training-state.pt.k9.lamina-tmp").mkdir()  # a save killed mid-write
    (run / "export" / "model_index.json").unlink()  # an export that never finished (killed before it)
    import shutil

    shutil.rmtree(run / "export")
    notices = []
    training_loop(resolve_config("tiny", total_steps=2), run, echo=notices.append)  # finished: re-exports only
    assert (run / "export" / "model_index.json").is_file() and not list(run.glob(".*lamina-tmp"))
    assert any("temporary" in n for n in notices) and any("re-making the export of step 2" in n for n in notices)
    with pytest.raises(TrainingDivergedError, match=r"step 3: loss .*exceeds max_loss=1e-09.*\(step 2\) is kept"):
        training_loop(resolve_config("tiny", total_steps=4, max_loss=1e-9), run, echo=lambda _: None)
    assert torch.load(run / "training-state.pt", weights_only=True)["step"] == 2


def test_training_on_a_folder_of_layers(tmp_path) -> None:
    from lamina.io import write_png
    from lamina.layeringdiff.train import make_batch, make_source, resolve_config

    rng = np.random.default_rng(0)
    (tmp_path / "foregrounds").mkdir()
    (tmp_path / "backgrounds").mkdir()
    cutout = np.zeros((30, 20, 4), np.float32)
    cutout[5:25, 4:16] = (0.8, 0.3, 0.2, 1.0)
    write_png(cutout, tmp_path / "foregrounds" / "a.png")
    write_png(rng.random((50, 70, 3), np.float32), tmp_path / "backgrounds" / "b.png")
    config = resolve_config("tiny", data=str(tmp_path))
    batch = make_batch(make_source(config), [0, 1, 2], config)
    assert batch["image"].shape == (3, 3, 16, 16) and batch["alpha"].shape == (3, 1, 16, 16)
    assert batch["alpha"].amax() > 0.5 and batch["effects"].abs().sum() == 0
    with pytest.raises(LaminaError, match="foregrounds"):
        resolve_config("tiny", data=str(tmp_path / "backgrounds"))
        make_source(resolve_config("tiny", data=str(tmp_path / "backgrounds")))


def test_procedural_objects_on_real_backgrounds(tmp_path) -> None:
    from lamina.data.photo_scenes import PhotoFolder
    from lamina.io import write_png
    from lamina.layeringdiff.train import resolve_config, synth_sample

    photos = tmp_path / "photos"
    photos.mkdir()
    write_png(np.broadcast_to(np.float32([1.0, 0.0, 0.0]), (40, 60, 3)).copy(), photos / "red.png")
    write_png(np.broadcast_to(np.float32([0.0, 0.0, 1.0]), (50, 30, 3)).copy(), photos / "blue.png")
    (photos / "notes.txt").write_text("not a photo")
    every = resolve_config("tiny", real_backgrounds=str(photos), p_real_background=1.0)
    seen = set()
    for seed in range(6):
        sample = synth_sample(seed, every)
        plain = synth_sample(seed, resolve_config("tiny"))
        background = sample["background"]
        assert background.shape == (16, 16, 3) and background.dtype == np.float32
        colours = {tuple(c) for c in np.round(background.reshape(-1, 3), 3)}
        assert colours in ({(1.0, 0.0, 0.0)}, {(0.0, 0.0, 1.0)})  # one photo, uniform: a crop of it
        seen |= colours
        for key in ("rgb", "alpha", "effects"):  # the object and its effects are the procedural ones
            np.testing.assert_array_equal(sample[key], plain[key])
    assert len(seen) == 2
    never = resolve_config("tiny", real_backgrounds=str(photos), p_real_background=0.0)
    np.testing.assert_array_equal(synth_sample(3, never)["background"],
                                  synth_sample(3, resolve_config("tiny"))["background"])
    assert len(PhotoFolder.of(photos).photos) == 2
    with pytest.raises(LaminaError, match="real_backgrounds"):
        resolve_config("tiny", real_backgrounds=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaminaError, match="no readable photographs"):
        PhotoFolder.of(tmp_path / "empty")


def test_builtin_model_is_the_default_and_small(tmp_path) -> None:
    from lamina.data import SCENE_PRESETS, generate_scene
    from lamina.layeringdiff import decompose_image
    from lamina.layeringdiff._util import BUILTIN_MODEL
    from lamina.layeringdiff.fbdd import load_builtin

    size_mb = sum(p.stat().st_size for p in BUILTIN_MODEL.rglob("*") if p.is_file()) / 2**20
    assert size_mb <= 20, size_mb
    pipe = load_builtin()
    assert pipe.config.prefill == "classical" and pipe.unet.config.out_channels == 7
    assert type(pipe.hfa).__name__ == "HFANet"  # the learned high-frequency alignment ships with it
    assert pipe.hfa.config.max_scale == 4.0  # windows up to 256 px over the 64 px UNet (validated there)
    scene = generate_scene(123_456_789, SCENE_PRESETS["default"].with_size(96))
    layered = decompose_image(scene.composite, box=scene.box)  # the default method and model
    assert layered.metadata["method"] == "layeringdiff" and layered.metadata["recomposition_psnr"] > 35
    assert layered.size == (96, 96) and len(layered.layers) == 1
    # The command line, with and without the learned HFA: the same image, other hidden background.
    from lamina.io import write_png
    from lamina.layeringdiff.cli import decompose

    write_png(scene.composite, tmp_path / "scene.png")
    box = ",".join(map(str, scene.box))
    outputs = {}
    for flag, model in (("--hfa", ["--model", "builtin"]), ("--no-hfa", [])):  # builtin: the default, by name
        out = tmp_path / f"{flag}.psd"
        result = CliRunner().invoke(decompose, [str(tmp_path / "scene.png"), "--box", box, flag, *model,
                                                "--out", str(out)])
        assert result.exit_code == 0, failure(result)
        outputs[flag] = load(out)
    backgrounds = [outputs[flag].background.pixels for flag in outputs]
    assert not np.allclose(*backgrounds) and np.abs(backgrounds[0] - backgrounds[1]).max() < 0.5


# ------------------------------------------------------------------ latent FBDD
def test_latent_fbdd_starts_as_the_inpainting_model(models) -> None:
    from diffusers import UNet2DConditionModel

    from lamina.layeringdiff.latent import LatentFBDDPipeline, widen_unet

    base = UNet2DConditionModel.from_pretrained(models["inpainting"], subfolder="unet")
    unet = widen_unet(base, 4)
    assert (unet.config.in_channels, unet.config.out_channels) == (17, 8)
    # Inputs [z_B, z_F, m, masked, E(I)]: with z_F and E(I) ignored at first, the B half is the inpainting UNet.
    z, m, masked = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 8, 8), torch.randn(2, 4, 8, 8)
    text, t = torch.randn(2, 3, 32), torch.tensor([10, 500])
    with torch.no_grad():
        wide = unet(torch.cat([z, torch.randn(2, 4, 8, 8), m, masked, torch.randn(2, 4, 8, 8)], 1), t,
                    encoder_hidden_states=text).sample
        inpaint = base(torch.cat([z, m, masked], 1), t, encoder_hidden_states=text).sample
    assert torch.allclose(wide[:, :4], inpaint, atol=1e-5) and torch.allclose(wide[:, 4:], inpaint, atol=1e-5)
    plain = UNet2DConditionModel.from_pretrained(models["t2i"], subfolder="unet")
    assert widen_unet(plain, 4).config.in_channels == 17  # a text-to-image UNet also works
    with pytest.raises(LaminaError, match="input / 4 output channels"):
        widen_unet(plain, 3)
    with pytest.raises(LaminaError, match="cannot load the FBDD backbone"):
        LatentFBDDPipeline.from_backbone("lamina-test/no-such-inpainting-model")


def test_latent_fbdd_pipeline_round_trip_and_loss(models, tmp_path) -> None:
    from lamina.layeringdiff.fbdd import FBDDDecomposer, load_pipeline
    from lamina.layeringdiff.latent import LatentFBDDPipeline, latent_fbdd_loss

    pipe = LatentFBDDPipeline.from_backbone(models["inpainting"], inference_steps=2)
    assert pipe.working_size() == (32, 32) and pipe.vae_scale_factor == 2
    pipe.save_pretrained(tmp_path / "latent")
    loaded = load_pipeline(tmp_path / "latent")  # the class comes from model_index.json
    assert type(loaded) is LatentFBDDPipeline and loaded.config.inference_steps == 2
    for name, value in pipe.unet.state_dict().items():
        assert torch.equal(value, loaded.unet.state_dict()[name]), name
    image, alpha = np.random.default_rng(0).random((20, 28, 3), np.float32), np.zeros((20, 28), np.float32)
    alpha[5:15, 8:20] = 1.0
    out = loaded(image, alpha, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.foreground.shape == (1, 20, 28, 3) and out.background.shape == (1, 20, 28, 3) and out.effects is None
    recomposed = alpha[..., None] * out.foreground[0] + (1 - alpha[..., None]) * out.background[0]
    assert np.abs(recomposed - image).max() < 1e-4  # projected onto the composite
    # Outside the hole the background keeps the image's own high frequencies (HFA): it is close to the image.
    outside = np.abs(out.background[0] - image)[alpha == 0].mean()
    assert 0.0 <= outside < 0.5
    # The loss: finite, differentiable in the UNet only.
    x = torch.rand(2, 3, 32, 32)
    a = torch.zeros(2, 1, 32, 32)
    a[:, :, 8:24, 8:24] = 1.0
    losses = latent_fbdd_loss(pipe, pipe.unet, x, a, x, torch.rand(2, 3, 32, 32), torch.tensor([1, 900]),
                              generator=torch.Generator().manual_seed(0))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and pipe.unet.conv_in.weight.grad is not None
    assert pipe.vae.encoder.conv_in.weight.grad is None
    layered = FBDDDecomposer.load(loaded).decompose(image, alpha)
    assert layered.foreground.shape == (20, 28, 4)


def test_latent_training_from_a_backbone_resumes_and_exports(models, tmp_path) -> None:
    from lamina.layeringdiff.cli import train
    from lamina.layeringdiff.fbdd import load_pipeline

    run = tmp_path / "run"
    small = ["resolution=16", "log_every=1", "checkpoint_every=1", "preview_every=2", "preview_count=1",
             "inference_steps=2", "warmup_steps=1"]
    args = ["--preset", "latent-sd", "--backbone", models["inpainting"], "--out", str(run), "--threads", "1",
            "--batch", "2", "--steps", "2", *sum((["--set", item] for item in small), [])]
    runner = CliRunner()
    result = runner.invoke(train, args)
    assert result.exit_code == 0, failure(result)
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step-0000002.png"]
    result = runner.invoke(train, [*args, "--steps", "3"])
    assert result.exit_code == 0 and "resuming" in result.output, failure(result)
    result = runner.invoke(train, [*args, "--set", "resolution=30", "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "multiple of 4" in failure(result)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    pipe = load_pipeline(run / "export")
    assert type(pipe).__name__ == "LatentFBDDPipeline" and pipe.working_size() == (16, 16)
    from lamina.layeringdiff.train import resolve_config

    with pytest.raises(LaminaError, match="no effects channel"):
        resolve_config("builtin", backbone=models["inpainting"])
    with pytest.raises(LaminaError, match="unknown training option"):
        resolve_config("builtin", no_such_option=1)
    # --set values are JSON: a wrong type is named, never silently kept ("False" is a true string).
    for key, value, message in (("effects", "False", "effects must be true or false"),
                                ("lr", "abc", "lr must be a number"), ("total_steps", 2.5, "must be an integer"),
                                ("object_scale", [0.1], "object_scale must have 2 items")):
        with pytest.raises(LaminaError, match=message):
            resolve_config("builtin", **{key: value})
    assert resolve_config("builtin", lr=1, object_scale=[0.1, 0.2]).lr == 1.0


def test_hfa_stage_trains_over_a_frozen_fbdd_resumes_and_exports(tmp_path) -> None:
    from lamina.layeringdiff.cli import train
    from lamina.layeringdiff.fbdd import load_pipeline
    from lamina.layeringdiff.hfa import HFANet
    from lamina.layeringdiff.train import resolve_config

    fbdd = save_tiny_fbdd(tmp_path / "fbdd")
    run = tmp_path / "hfa"
    args = ["--preset", "tiny", "--out", str(run), "--init", fbdd, "--set", "stage=hfa", "--set", "hfa_sizes=[16,24]",
            "--set", "hfa_channels=4", "--threads", "1"]
    runner = CliRunner()
    result = runner.invoke(train, [*args, "--steps", "2"])
    assert result.exit_code == 0, failure(result)
    assert set(torch.load(run / "training-state.pt", weights_only=True)) >= {"hfa", "ema", "step"}
    result = runner.invoke(train, [*args, "--steps", "4"])
    assert result.exit_code == 0 and "resuming" in result.output, failure(result)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(np.isfinite(r["background"]) and np.isfinite(r["foreground"]) for r in log)
    exported, frozen = load_pipeline(run / "export"), load_pipeline(fbdd)
    assert isinstance(exported.hfa, HFANet) and exported.hfa.config.channels == 4
    assert exported.hfa.config.max_scale == 24 / 16  # the largest trained size over the UNet's working size
    same = exported.unet.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in frozen.unet.state_dict().items())  # FBDD untouched
    assert any(p.abs().sum() > 0 for p in exported.hfa.conv_out.parameters())  # the HFA learned something
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    # An HFA stage needs a pixel-space FBDD to train over.
    with pytest.raises(LaminaError, match="--init"):
        resolve_config("tiny", stage="hfa")
    with pytest.raises(LaminaError, match="unknown training stage"):
        resolve_config("tiny", stage="vae")
    assert resolve_config("builtin-hfa").init == "builtin"
    # Fine-tuning: a new run over the export starts from its HFA (or not, with hfa_from_init=false).
    again = [*args[:3], str(tmp_path / "again"), "--init", str(run / "export"), *args[6:], "--steps", "1"]
    result = runner.invoke(train, again)
    assert result.exit_code == 0 and "starting from the HFA" in result.output, failure(result)
    result = runner.invoke(train, [*again[:3], str(tmp_path / "fresh"), *again[4:], "--set", "hfa_from_init=false"])
    assert result.exit_code == 0 and "starting from the HFA" not in result.output, failure(result)
    result = runner.invoke(train, [*again[:3], str(tmp_path / "wider"), *again[4:], "--set", "hfa_channels=6"])
    assert result.exit_code == 0 and "another size" in result.output, failure(result)
