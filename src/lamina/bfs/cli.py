"""Command line of BFS: ``lamina synthesize`` and ``lamina bfs train|eval``.

Registered lazily by :mod:`lamina.cli`; every command is a thin layer over the Python API. Bad
input is refused before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli_options import (
    out_option,
    overwrite_option,
    preview_option,
    resolve_training_config,
    runtime_options,
    seed_option,
    setup_runtime,
    stop_after_seconds,
    training_options,
)
from ..errors import LaminaError

MODEL_HELP = "BFS model: builtin (the default), a folder (RUN/export or a saved pipeline), or a hub id"


def _quiet() -> None:
    """Silence diffusers'/transformers' loading bars (lamina prints its own progress)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _load(model: str, device: str, dtype: str, threads: int | None):
    """``--threads``/``--device``/``--dtype`` applied, then the BFS model loaded onto the device."""
    from .train import load_model

    _quiet()
    resolved, torch_dtype = setup_runtime(device, dtype, threads, small_model=model == "builtin")
    pipe = load_model(model)
    pipe.to(resolved)
    if torch_dtype != pipe.dtype:  # only a real cast: diffusers warns on any .to(dtype), float32 -> float32 too
        pipe.to(torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@click.command("synthesize")
@click.argument("background", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--box", "boxes", multiple=True, required=True, metavar="X0,Y0,X1,Y1",
              help="where the object goes (pixels, exclusive end); repeat with --prompt, back to front")
@click.option("--prompt", "prompts", multiple=True, required=True,
              help='the object, e.g. "a red star with a shadow"; one per --box, in the same order')
@out_option(help="layered output: .psd, .ora, a path without suffix (PNG-stack folder), or .png (flattened)")
@click.option("--model", default="builtin", show_default=True, help=MODEL_HELP)
@click.option("--steps", type=click.IntRange(1), default=None, help="sampling steps (default: the model's)")
@click.option("--guidance", type=click.FloatRange(0), default=None,
              help="guidance scale (default: the model's): classifier-free, or FLUX.1-Fill's embedded guidance")
@click.option("--crop/--no-crop", default=None,
              help="draw each object in a window around its box, at the model's full resolution (default: as the "
                   "model says; the built-in does), or over the whole background scaled to the model's resolution "
                   "(--no-crop, as the paper does)")
@seed_option(help="random seed: layer k samples with seed + k")
@preview_option
@runtime_options
@overwrite_option
def synthesize(background: Path, boxes: tuple[str, ...], prompts: tuple[str, ...], out: Path, model: str,
               steps: int | None, guidance: float | None, crop: bool | None, seed: int, preview: bool, device: str,
               dtype: str, threads: int | None, overwrite: bool) -> None:
    """Draw captioned objects (with their shadows and reflections) onto BACKGROUND as separate layers.

    Each --box/--prompt pair adds one layer, back to front: the next object is drawn over the
    composite so far. The background is kept bit-exact; the output holds it plus one layer per pair.
    """
    from ..cli_options import output_format, sheet_path, write_layered
    from ..io import read_photo
    from ..io.atomic import check_writable
    from ..layers import Layer, check_box, parse_box

    # Every check before the model loads.
    if len(boxes) != len(prompts):
        raise LaminaError(f"give one --prompt per --box (got {len(boxes)} box(es) and {len(prompts)} prompt(s))")
    output_format(out, allow_png=True)
    check_writable(out, overwrite)
    if preview and out.suffix.lower() != ".png":
        check_writable(sheet_path(out), overwrite)
    if not out.parent.exists():
        raise LaminaError(f"{out}: the folder {out.parent} does not exist")
    if not background.is_file():
        raise LaminaError(f"{background}: no such file")
    # As read (uint8 for 8-bit files, uint16 for 16-bit), kept only as the background layer's planes.
    image = Layer(read_photo(background), name="background")
    height, width = image.height, image.width
    parsed = [check_box(parse_box(text), width, height) for text in boxes]

    from ..progress import progress
    from .synthesize import synthesize_layers

    pipe = _load(model, device, dtype, threads)
    layered = synthesize_layers(pipe, image, parsed, list(prompts), num_inference_steps=steps,
                                guidance_scale=guidance, seed=seed, crop=crop,
                                progress=lambda items: progress(items, desc="BFS layers"))
    layered.metadata["model"] = str(model)
    written = [str(p) for p in write_layered(layered, out, overwrite=overwrite, preview=preview)]
    click.echo(f"wrote {' and '.join(written)}: the background and {len(layered.layers)} layer(s) "
               f"({', '.join(layer.name for layer in layered.layers)})")


@click.group("bfs")
def bfs() -> None:
    """BFS: train the dual-branch layered synthesis model, evaluate it."""


@bfs.command("train")
@click.option("--data", default="synth", show_default=True,
              help="'synth' (procedural scenes), a folder holding manifest.jsonl, or a .jsonl manifest")
@click.option("--preset", default="tiny", show_default=True, help="tiny (CPU, built-in) | flux-fill (GPU) | test")
@click.option("--stage", type=click.Choice(["vae", "layered", "composite"]), default="layered", show_default=True,
              help="vae: the RGB and transparency VAEs; layered: stage 1, both branches on layered data; "
                   "composite: stage 2, the composite branch on unlayered composites")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="run folder; running the same command again resumes")
@click.option("--init", default=None, help="start from a saved BFS model (RUN/export, a folder, a hub id or builtin)")
@click.option("--base", default=None, help="FLUX.1-Fill-style model (hub id or folder) to put BFS on (flux-fill)")
@training_options(set_example="--set resolution=32 --set lora_rank=4")
def train(data: str, preset: str, stage: str, run_dir: Path, init: str | None, base: str | None,
          total_steps: int | None, batch_size: int | None, lr: float | None, seed: int | None,
          overrides: tuple[str, ...], max_minutes: float | None, threads: int | None, dry_run: bool) -> None:
    """Train one BFS stage on procedural scenes or your manifest; exports RUN/export (BFSPipeline.from_pretrained)."""
    from .config import resolve_config
    from .train import training_loop

    config = resolve_training_config(resolve_config, preset, overrides, data=data, stage=stage, init=init, base=base,
                                     total_steps=total_steps, batch_size=batch_size, lr=lr, seed=seed)
    if dry_run:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    _quiet()
    setup_runtime("auto", "auto", threads)
    export = training_loop(config, run_dir, echo=click.echo, stop_after_s=stop_after_seconds(max_minutes))
    click.echo(f"export: {export} (use it with: lamina synthesize IMAGE --box ... --prompt ... --model {export})")


@bfs.command("eval")
@click.argument("model", default="builtin")
@click.option("--n", "count", type=click.IntRange(1), default=16, show_default=True, help="held-out scenes")
@click.option("--mode", type=click.Choice(["single", "multi", "small"]), default="single", show_default=True,
              help="one object per scene, 2-4 placed back to front, or one small object on a canvas 4x the "
                   "model's resolution (a small box on a photo)")
@click.option("--steps", type=click.IntRange(1), default=None, help="sampling steps (default: the model's)")
@click.option("--guidance", type=click.FloatRange(0), default=None, help="guidance scale (default: the model's)")
@click.option("--crop/--no-crop", default=None,
              help="sample in a window around each box, or over the whole background (default: as the model says)")
@seed_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@runtime_options
def evaluate(model: str, count: int, mode: str, steps: int | None, guidance: float | None, crop: bool | None,
             seed: int, as_json: bool, device: str, dtype: str, threads: int | None) -> None:
    """Evaluate a BFS model (RUN, RUN/export, a folder, a hub id or builtin) on held-out procedural scenes."""
    from ..training import EXPORT_DIR
    from .evaluate import SMALL_CANVAS, bfs_method, evaluate_method, held_out_cases

    path = Path(model).expanduser()
    if path.is_dir() and (path / EXPORT_DIR / "model_index.json").is_file():
        model = str(path / EXPORT_DIR)
    pipe = _load(model, device, dtype, threads)
    resolution = int(pipe.config.resolution)
    cases = held_out_cases(count, resolution * SMALL_CANVAS if mode == "small" else resolution, mode=mode)
    result = evaluate_method(bfs_method(pipe, steps=steps, seed=seed, guidance_scale=guidance, crop=crop), cases)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{model}: {count} held-out {mode} scene(s)\n\n| metric | value |\n|---|---|")
    for key, value in result.items():
        click.echo(f"| {key} | {value:.4f} |")
