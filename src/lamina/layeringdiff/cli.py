"""Command line of LayeringDiff: ``lamina decompose``, ``lamina generate`` and ``lamina layeringdiff train``.

Registered lazily by :mod:`lamina.cli`; every command is a thin layer over the Python API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import LaminaError

LAYERED_HELP = "output: .psd, .ora, or a folder path (PNG stack); a contact sheet is written beside it"


def _threads(threads: int | None) -> None:
    """Cap torch's CPU threads, and numba's (pymatting's matting and foreground estimation)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        try:
            import numba
        except ImportError:  # pragma: no cover - numba comes with pymatting
            return
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _sheet_path(out: Path) -> Path:
    return out.with_name(out.name + ".sheet.png") if out.suffix == "" else out.with_suffix(".sheet.png")


def _check_outputs(out: Path, sheet: Path, overwrite: bool) -> None:
    """Fail before any work when an output exists (and not ``--overwrite``) or has an unknown suffix."""
    from ..io import layered_format
    from ..io.atomic import check_writable

    layered_format(out)
    check_writable(out, overwrite)
    check_writable(sheet, overwrite)


def _write(layered: Any, out: Path, overwrite: bool) -> None:
    from ..io import save, save_contact_sheet

    sheet = _sheet_path(out)
    _check_outputs(out, sheet, overwrite)
    save(layered, out, overwrite=overwrite)
    save_contact_sheet(layered, sheet, overwrite=overwrite)
    click.echo(f"wrote {out} ({len(layered.layers)} layer(s) over the background) and {sheet}; recomposition "
               f"PSNR {layered.metadata.get('recomposition_psnr', float('nan')):.1f} dB")


_common_decompose_options = [
    click.option("--method", type=click.Choice(["layeringdiff", "classical"]), default="layeringdiff",
                 show_default=True, help="learned FBDD (built-in model unless --model) or weight-free classical"),
    click.option("--model", help="FBDD model: folder saved by a training run (RUN/export), hub id, "
                                 "or builtin (the default)"),
    click.option("--steps", type=click.IntRange(1), default=None, help="FBDD denoising steps (default: the model's)"),
    click.option("--seed", type=int, default=0, show_default=True, help="seed of the FBDD sampling noise"),
    click.option("--hfa/--no-hfa", default=True, show_default=True,
                 help="FBDD: the model's learned high-frequency alignment, if it has one (--no-hfa: closed form "
                      "only, faster)"),
    click.option("--self-similar/--no-self-similar", "self_similar", default=True, show_default=True,
                 help="FBDD: under an opaque object, continue a repeating background texture (checks, tiles, "
                      "stripes, brick) from where the photo shows it; a background without one is left alone"),
    click.option("--grounding-model", "grounding", multiple=True, metavar="ROLE=ID",
                 help="for --prompt: detector=ID, segmenter=ID, matting=ID (hub ids or local folders)"),
    click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads"),
    click.option("--overwrite", is_flag=True, help="replace existing outputs"),
]


def _decompose_options(func: Any) -> Any:
    for option in reversed(_common_decompose_options):
        func = option(func)
    return func


def _grounding_models(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        role, sep, value = pair.partition("=")
        if not sep or role not in ("detector", "segmenter", "matting"):
            raise LaminaError(f"--grounding-model {pair!r}: use detector=ID, segmenter=ID or matting=ID")
        out[role] = value
    return out


def _decompose(image: Any, *, boxes: tuple[str, ...], masks: tuple[Path, ...], prompts: tuple[str, ...],
               layers: int | None, method: str, model: str | None, steps: int | None, seed: int, hfa: bool,
               self_similar: bool, grounding: tuple[str, ...]) -> Any:
    from ..io import read_image
    from .decompose import decompose_image

    given = [name for name, v in (("--box", boxes), ("--mask", masks), ("--prompt", prompts)) if v]
    if len(given) != 1:
        raise LaminaError("give the object(s) with exactly one of --box, --mask or --prompt")
    options = {}
    if method == "layeringdiff":
        options = {"seed": seed, "hfa": hfa} | ({"num_inference_steps": steps} if steps else {})
        if not self_similar:
            options["self_similar"] = None
    kwargs: dict[str, Any] = {"layers": layers, "method": method, "model": model, "options": options}
    if boxes:
        return decompose_image(image, box=list(boxes), **kwargs)
    if masks:
        return decompose_image(image, mask=[read_image(p) for p in masks], **kwargs)
    from .grounding import Grounder, GroundingConfig

    grounder = Grounder(GroundingConfig(**_grounding_models(grounding)))
    return decompose_image(image, prompt=list(prompts), grounder=grounder, **kwargs)


@click.command("decompose")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--box", "boxes", multiple=True, metavar="X0,Y0,X1,Y1",
              help="object box (exclusive end); repeat front to back for several objects")
@click.option("--mask", "masks", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="object mask image (white = object); repeat front to back")
@click.option("--prompt", "prompts", multiple=True,
              help='object phrase, e.g. "the cat" (Grounding DINO -> SAM -> ViTMatte); repeat front to back')
@click.option("--layers", type=click.IntRange(1), default=None, help="objects to peel (= number of boxes/masks)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help=LAYERED_HELP)
@_decompose_options
def decompose(image: Path, boxes: tuple[str, ...], masks: tuple[Path, ...], prompts: tuple[str, ...],
              layers: int | None, out: Path, method: str, model: str | None, steps: int | None, seed: int,
              hfa: bool, self_similar: bool, grounding: tuple[str, ...], threads: int | None,
              overwrite: bool) -> None:
    """Split the photo IMAGE into a completed background and one layer per object (shadows included)."""
    from ..io import read_rgb

    _threads(threads)
    _check_outputs(out, _sheet_path(out), overwrite)
    layered = _decompose(read_rgb(image), boxes=boxes, masks=masks, prompts=prompts, layers=layers,
                         method=method, model=model, steps=steps, seed=seed, hfa=hfa, self_similar=self_similar,
                         grounding=grounding)
    _write(layered, out, overwrite)


@click.command("generate")
@click.argument("prompt")
@click.option("--foreground", "phrases", multiple=True, required=True,
              help='phrase naming the foreground object in PROMPT; repeat front to back')
@click.option("--t2i", required=True, help="diffusers text-to-image pipeline: hub id or local folder")
@click.option("--size", type=click.IntRange(8), default=None, help="image side in px (default: the model's)")
@click.option("--t2i-steps", type=click.IntRange(1), default=30, show_default=True)
@click.option("--guidance", type=float, default=7.0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help=LAYERED_HELP)
@_decompose_options
def generate(prompt: str, phrases: tuple[str, ...], t2i: str, size: int | None, t2i_steps: int, guidance: float,
             out: Path, method: str, model: str | None, steps: int | None, seed: int, hfa: bool,
             self_similar: bool, grounding: tuple[str, ...], threads: int | None, overwrite: bool) -> None:
    """Generate a composite from PROMPT, find the --foreground object(s) by text, and split it into layers."""
    from .grounding import generate_composite

    _threads(threads)
    _check_outputs(out, _sheet_path(out), overwrite)
    image = generate_composite(t2i, prompt, size=size, num_inference_steps=t2i_steps, guidance_scale=guidance,
                               seed=seed)
    layered = _decompose(image, boxes=(), masks=(), prompts=phrases, layers=None, method=method, model=model,
                         steps=steps, seed=seed, hfa=hfa, self_similar=self_similar, grounding=grounding)
    layered.metadata["prompt"] = prompt
    layered.metadata["t2i"] = str(t2i)
    _write(layered, out, overwrite)


@click.group("layeringdiff")
def layeringdiff() -> None:
    """LayeringDiff: train the FBDD decomposition model and its learned HFA."""


@layeringdiff.command("train")
@click.option("--data", default="synth", show_default=True,
              help="'synth' (procedural scenes) or a folder with foregrounds/ (RGBA PNG) and backgrounds/")
@click.option("--preset", default="builtin", show_default=True,
              help="tiny | builtin | small | latent-sd | builtin-hfa (the learned HFA over --init's FBDD)")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="run folder; running the same command again resumes")
@click.option("--backbone", default=None,
              help="inpainting model (hub id or folder) to fine-tune as a latent FBDD (with --preset latent-sd)")
@click.option("--init", default=None,
              help="fine-tune: start from a saved FBDD's weights ('builtin', RUN/export or hub id); with "
                   "--preset builtin-hfa: the frozen FBDD the HFA is trained for")
@click.option("--steps", "total_steps", type=click.IntRange(1), default=None, help="total optimisation steps")
@click.option("--batch", "batch_size", type=click.IntRange(1), default=None,
              help="global batch size, all processes together (batch_size)")
@click.option("--lr", type=float, default=None, help="learning rate")
@click.option("--seed", type=int, default=None, help="data and initialisation seed")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override any training option (JSON values), e.g. --set resolution=128 --set hole_weight=2")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="stop (after saving) after this long; rerun to resume")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads")
@click.option("-n", "--dry-run", is_flag=True, help="print the resolved config and exit")
def train(data: str, preset: str, run_dir: Path, backbone: str | None, init: str | None, total_steps: int | None,
          batch_size: int | None, lr: float | None, seed: int | None, overrides: tuple[str, ...],
          max_minutes: float | None, threads: int | None, dry_run: bool) -> None:
    """Train FBDD (the learned disassembly) or its HFA on procedural scenes or your own layers; exports RUN/export."""
    from ..overrides import parse_overrides
    from .train import resolve_config, training_loop

    flags = dict(data=data, backbone=backbone, init=init, total_steps=total_steps, batch_size=batch_size, lr=lr,
                 seed=seed)
    config = resolve_config(preset, **(parse_overrides(overrides) | {k: v for k, v in flags.items() if v is not None}))
    if dry_run:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    _threads(threads)
    export = training_loop(config, run_dir, echo=click.echo,
                           stop_after_s=None if max_minutes is None else max_minutes * 60.0)
    click.echo(f"inference export: {export} (use it with: lamina decompose IMAGE --model {export} ...); previews in "
               f"{run_dir / 'previews'}, losses in {run_dir / 'log.jsonl'}")
