"""Command line of LayeringDiff: ``lamina decompose``, ``lamina generate`` and ``lamina layeringdiff train``.

Registered lazily by :mod:`lamina.cli`; every command is a thin layer over the Python API and
shares its options with the other methods (:mod:`lamina.cli_options`). All argument checks
(devices, boxes against each image's size, masks, the output folder, outputs already taken)
happen, and the outputs are claimed, before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..cli_options import (
    format_option,
    out_option,
    overwrite_option,
    preview_option,
    resolve_training_config,
    runtime_options,
    seed_option,
    stop_after_seconds,
    training_options,
)
from ..errors import LaminaError

LAYERED_HELP = ("output: .psd, .ora, or a path without suffix (PNG-stack folder); with several inputs (a folder or "
                "a glob) a folder that receives one file per image (--format)")


def _threads(threads: int | None) -> None:
    """Cap torch's CPU threads, and numba's (pymatting's shared matting, ``ForegroundConfig(matting="sm")``)."""
    from ..devices import set_threads

    set_threads(threads)


_common_decompose_options = [
    click.option("--method", type=click.Choice(["layeringdiff", "classical"]), default="layeringdiff",
                 show_default=True, help="learned FBDD (built-in model unless --model) or weight-free classical"),
    click.option("--model", help="FBDD model: folder saved by a training run (RUN/export), hub id, "
                                 "or builtin (the default)"),
    click.option("--steps", type=click.IntRange(1), default=None, help="FBDD denoising steps (default: the model's)"),
    click.option("--hfa/--no-hfa", default=True, show_default=True,
                 help="FBDD: the model's learned high-frequency alignment, if it has one (--no-hfa: closed form "
                      "only, faster)"),
    click.option("--self-similar/--no-self-similar", "self_similar", default=True, show_default=True,
                 help="FBDD: under an opaque object, continue a repeating background texture (checks, tiles, "
                      "stripes, brick) from where the photo shows it; a background without one is left alone"),
    click.option("--cutout-model", "cutout_model", default="builtin", show_default=True,
                 help="the learned refiner of GrabCut's cut-out from a box (it says where the object is, GrabCut "
                      "runs again from that): builtin, a folder saved by lamina layeringdiff train-cutout, or none "
                      "(GrabCut's mask as it is)"),
    click.option("--loose-box", "loose_box", is_flag=True,
                 help="the --box leaves a wide margin around the object: do not assume that the object touches "
                      "every side of it (by default a side the cut-out does not reach is joined to it along the "
                      "refiner's most likely path)"),
    click.option("--split-effects", is_flag=True,
                 help="write each object's shadow and reflection as their own layers under the object (blend "
                      "modes multiply and screen), so effects can be toggled in an editor"),
    click.option("--grounding-model", "grounding", multiple=True, metavar="ROLE=ID",
                 help="detector=ID (Grounding DINO, for --prompt), segmenter=ID (SAM: also segments --box and "
                      "automatic boxes), matting=ID (ViTMatte); hub ids or local folders"),
]


def _decompose_options(func: Any) -> Any:
    for option in reversed(_common_decompose_options):
        func = option(func)
    return seed_option(help="seed of the FBDD sampling noise")(func)


class _Settings:
    """What ``decompose`` and ``generate`` share: the parsed options, checked, and the models loaded once."""

    def __init__(self, *, method: str, model: str | None, steps: int | None, seed: int, hfa: bool,
                 self_similar: bool, split_effects: bool, grounding: tuple[str, ...], prompts: tuple[str, ...],
                 device: str, dtype: str, cutout_model: str = "builtin", loose_box: bool = False) -> None:
        if method == "classical" and (model is not None or steps is not None):
            raise LaminaError("--model and --steps apply to --method layeringdiff (FBDD), not classical")
        self.method, self.model, self.device, self.dtype = method, model, device, dtype
        self.options: dict[str, Any] = {}
        if method == "layeringdiff":
            self.options = {"seed": seed, "hfa": hfa} | ({"num_inference_steps": steps} if steps else {})
            if not self_similar:
                self.options["self_similar"] = None
        self.split_effects = split_effects
        self.refiner = None if cutout_model.lower() == "none" else cutout_model
        self.loose_box = loose_box
        from .grounding import parse_model_roles

        self.grounding = parse_model_roles(grounding)
        self.use_grounder = bool(prompts) or bool(self.grounding)
        self.decomposer: Any = None
        self.grounder: Any = None

    def load(self) -> None:
        """Load the decomposer (and the grounding models' config) once, after every check has passed."""
        from .decompose import make_decomposer

        if self.refiner is not None:
            from .cutout import load_refiner

            load_refiner(self.refiner)  # a wrong folder fails here, before any work
        if self.use_grounder:
            from .grounding import Grounder, GroundingConfig

            self.grounder = Grounder(GroundingConfig(**self.grounding, device=self.device, dtype=self.dtype))
        self.decomposer = make_decomposer(self.method, self.model, device=self.device, dtype=self.dtype,
                                          **self.options)

    def run(self, image: Any, *, boxes: tuple[str, ...] = (), masks: list[Any] | None = None,
            prompts: tuple[str, ...] = (), layers: int | None = None) -> Any:
        from .decompose import decompose_image

        # Boxes (given or automatic) go to SAM only when the user named one; prompts always need the grounder.
        grounder = self.grounder if prompts or "segmenter" in self.grounding else None
        from .foreground import ForegroundConfig, without_tight_box

        config = ForegroundConfig(refiner=self.refiner)
        kwargs: dict[str, Any] = {"layers": layers, "decomposer": self.decomposer, "grounder": grounder,
                                  "split_effects": self.split_effects,
                                  "config": without_tight_box(config) if self.loose_box else config}
        if boxes:
            kwargs["box"] = list(boxes)
        elif masks:
            kwargs["mask"] = masks
        elif prompts:
            kwargs["prompt"] = list(prompts)
        return decompose_image(image, **kwargs)


def _check_hints(boxes: tuple[str, ...], masks: tuple[Path, ...], prompts: tuple[str, ...],
                 layers: int | None) -> list[Any]:
    """At most one kind of hint, parsed boxes, and their number against ``--layers``; returns the boxes."""
    from ..layers import parse_box

    given = [name for name, v in (("--box", boxes), ("--mask", masks), ("--prompt", prompts)) if v]
    if len(given) > 1:
        raise LaminaError(f"give the object(s) with one of --box, --mask or --prompt, not {' and '.join(given)} "
                          "(or none of them: automatic mode)")
    count = len(boxes) or len(masks) or len(prompts)
    if count and layers is not None and layers != count:
        raise LaminaError(f"--layers {layers} needs {layers} {given[0]} option(s) front to back, got {count}")
    return [parse_box(b) for b in boxes]


def _check_boxes(parsed: list[Any], size: tuple[int, int], what: str) -> None:
    from ..layers import check_box

    for box in parsed:
        try:
            check_box(box, *size)
        except LaminaError as exc:
            raise LaminaError(f"{what}: {exc}") from None


@click.command("decompose")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE|FOLDER|GLOB...")
@click.option("--box", "boxes", multiple=True, metavar="X0,Y0,X1,Y1",
              help="object box (exclusive end); repeat front to back for several objects (with SAM given as "
                   "--grounding-model segmenter=ID, SAM segments it; otherwise GrabCut)")
@click.option("--mask", "masks", multiple=True, type=click.Path(path_type=Path),
              help="object mask image (white = object); repeat front to back (one input image only)")
@click.option("--prompt", "prompts", multiple=True,
              help='object phrase, e.g. "the cat" (Grounding DINO -> SAM -> ViTMatte); repeat front to back; the '
                   "layer is named by it")
@click.option("--layers", type=click.IntRange(1), default=None,
              help="objects to peel (= number of boxes/masks/prompts; automatic mode: the N most salient)")
@out_option(help=LAYERED_HELP)
@format_option
@_decompose_options
@runtime_options
@overwrite_option
@preview_option
def decompose(inputs: tuple[str, ...], boxes: tuple[str, ...], masks: tuple[Path, ...], prompts: tuple[str, ...],
              layers: int | None, out: Path, fmt: str, method: str, model: str | None, steps: int | None,
              hfa: bool, self_similar: bool, cutout_model: str, loose_box: bool, split_effects: bool,
              grounding: tuple[str, ...], seed: int, device: str, dtype: str, threads: int | None, overwrite: bool,
              preview: bool) -> None:
    """Split photos into a completed background and one layer per object (shadows included).

    IMAGE is a photo; a FOLDER or a quoted GLOB ("photos/*.jpg") decomposes every image into the
    folder --out, loading the model once: outputs already there are skipped (rerun to resume),
    a bad file is reported and the others go on; the exit status is 1 if any failed. With no
    --box, --mask or --prompt the most salient object is found automatically (no weights needed).
    """
    from ..cli_options import (
        BatchReport,
        claim_outputs,
        expand_inputs,
        finish_batch,
        image_size,
        make_output_folder,
        member_suffix,
        output_format,
        run_batch,
        setup_runtime,
        sheet_path,
        unique_stems,
        write_layered,
    )
    from ..io import read_image
    from .bounded import read_photo

    paths, batch = expand_inputs(inputs)
    parsed = _check_hints(boxes, masks, prompts, layers)
    if batch and masks:
        raise LaminaError("--mask belongs to one image: decompose one image at a time, or use --box, --prompt or "
                          "automatic mode for a folder")
    setup_runtime(device, dtype, threads)  # an unavailable device fails here, before any model loads
    settings = _Settings(method=method, model=model, steps=steps, seed=seed, hfa=hfa, self_similar=self_similar,
                         split_effects=split_effects, grounding=grounding, prompts=prompts, device=device,
                         dtype=dtype, cutout_model=cutout_model, loose_box=loose_box)
    if not batch:
        output_format(out)
        size = image_size(paths[0])
        _check_boxes(parsed, size, str(paths[0]))
        mask_arrays = [read_image(m) for m in masks]
        for path, array in zip(masks, mask_arrays, strict=True):
            if (array.shape[1], array.shape[0]) != size:
                raise LaminaError(f"--mask {path} is {array.shape[1]}x{array.shape[0]} but {paths[0]} is "
                                  f"{size[0]}x{size[1]}")
        with claim_outputs([out] + ([sheet_path(out)] if preview else []), overwrite):
            settings.load()
            layered = settings.run(read_photo(paths[0]), boxes=boxes, masks=mask_arrays, prompts=prompts,
                                   layers=layers)
            write_layered(layered, out, overwrite=overwrite, preview=preview)
        _report(layered, out, preview)
        return
    if out.suffix:
        raise LaminaError(f"--out {out}: several inputs need an output folder (a path without suffix); each file's "
                          "format is --format")
    outputs = [out / f"{stem}{member_suffix(fmt)}" for stem in unique_stems(paths)]
    early = BatchReport()
    items = []
    for path, target in zip(paths, outputs, strict=True):
        try:
            _check_boxes(parsed, image_size(path), str(path))
        except LaminaError as exc:
            early.failed.append((path, str(exc)))
            continue
        items.append((path, target))
    make_output_folder(out)

    def work(source: Path, target: Path) -> None:
        layered = settings.run(read_photo(source), boxes=boxes, prompts=prompts, layers=layers)
        layered.metadata["source"] = source.name
        write_layered(layered, target, overwrite=overwrite, preview=preview)

    report = run_batch(items, work, overwrite=overwrite, desc=f"decompose -> {out}", prepare=settings.load)
    report.failed = early.failed + report.failed
    finish_batch(report)


def _report(layered: Any, out: Path, preview: bool) -> None:
    from ..cli_options import sheet_path

    sheet = f" and {sheet_path(out)}" if preview else ""
    click.echo(f"wrote {out} ({len(layered.layers)} layer(s) over the background){sheet}; recomposition "
               f"PSNR {layered.metadata.get('recomposition_psnr', float('nan')):.1f} dB")


@click.command("generate")
@click.argument("prompt")
@click.option("--foreground", "phrases", multiple=True, required=True,
              help='phrase naming the foreground object in PROMPT; repeat front to back (names its layer)')
@click.option("--t2i", required=True, help="diffusers text-to-image pipeline: hub id or local folder")
@click.option("--size", type=click.IntRange(8), default=None, help="image side in px (default: the model's)")
@click.option("--t2i-steps", type=click.IntRange(1), default=30, show_default=True)
@click.option("--guidance", type=float, default=7.0, show_default=True)
@out_option(help="output: .psd, .ora, or a path without suffix (PNG-stack folder)")
@_decompose_options
@runtime_options
@overwrite_option
@preview_option
def generate(prompt: str, phrases: tuple[str, ...], t2i: str, size: int | None, t2i_steps: int, guidance: float,
             out: Path, method: str, model: str | None, steps: int | None, hfa: bool, self_similar: bool,
             cutout_model: str, loose_box: bool, split_effects: bool, grounding: tuple[str, ...], seed: int,
             device: str, dtype: str, threads: int | None, overwrite: bool, preview: bool) -> None:
    """Generate a composite from PROMPT, find the --foreground object(s) by text, and split it into layers.

    The text-to-image, grounding and FBDD models run on --device (the GPU when there is one) in
    --dtype (auto: float16 on a GPU for the pretrained models).
    """
    from ..cli_options import claim_outputs, output_format, setup_runtime, sheet_path, write_layered
    from .grounding import generate_composite

    setup_runtime(device, dtype, threads)
    output_format(out)
    settings = _Settings(method=method, model=model, steps=steps, seed=seed, hfa=hfa, self_similar=self_similar,
                         split_effects=split_effects, grounding=grounding, prompts=phrases, device=device,
                         dtype=dtype, cutout_model=cutout_model, loose_box=loose_box)
    with claim_outputs([out] + ([sheet_path(out)] if preview else []), overwrite):
        image = generate_composite(t2i, prompt, size=size, num_inference_steps=t2i_steps, guidance_scale=guidance,
                                   seed=seed, device=device, dtype=dtype)
        settings.load()
        layered = settings.run(image, prompts=phrases)
        layered.metadata["prompt"] = prompt
        layered.metadata["t2i"] = str(t2i)
        write_layered(layered, out, overwrite=overwrite, preview=preview)
    _report(layered, out, preview)


@click.group("layeringdiff")
def layeringdiff() -> None:
    """LayeringDiff: train the FBDD decomposition model, its learned HFA and the cut-out refiner."""


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
@training_options(batch_help="global batch size, all processes together (batch_size)",
                  set_example="--set resolution=128 --set hole_weight=2")
def train(data: str, preset: str, run_dir: Path, backbone: str | None, init: str | None, total_steps: int | None,
          batch_size: int | None, lr: float | None, seed: int | None, overrides: tuple[str, ...],
          max_minutes: float | None, threads: int | None, dry_run: bool) -> None:
    """Train FBDD (the learned disassembly) or its HFA on procedural scenes or your own layers; exports RUN/export."""
    from .train import resolve_config, training_loop

    config = resolve_training_config(resolve_config, preset, overrides, data=data, backbone=backbone, init=init,
                                     total_steps=total_steps, batch_size=batch_size, lr=lr, seed=seed)
    if dry_run:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    _threads(threads)
    export = training_loop(config, run_dir, echo=click.echo, stop_after_s=stop_after_seconds(max_minutes))
    click.echo(f"inference export: {export} (use it with: lamina decompose IMAGE --model {export} ...); previews in "
               f"{run_dir / 'previews'}, losses in {run_dir / 'log.jsonl'}")


@layeringdiff.command("train-cutout")
@click.option("--photos", type=click.Path(file_okay=False, exists=True), default=None,
              help="folder of photographs for the scenes' backgrounds and object textures (at least two)")
@click.option("--objects", type=click.Path(file_okay=False, exists=True), default=None,
              help="folder of real objects' RGBA cut-outs (true alpha; its train split is used): a share p_object "
                   "of the scenes (--set p_object=0.7) puts one of them over the photograph")
@click.option("--preset", default="builtin", show_default=True, help="builtin | tiny")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="run folder; running the same command again resumes")
@training_options(batch_help="global batch size, all processes together (batch_size)",
                  set_example="--set workers=2 --set net.channels=[16,32,64]")
def train_cutout(photos: str | None, objects: str | None, preset: str, run_dir: Path, total_steps: int | None,
                 batch_size: int | None, lr: float | None, seed: int | None, overrides: tuple[str, ...],
                 max_minutes: float | None, threads: int | None, dry_run: bool) -> None:
    """Train the cut-out refiner (GrabCut's mask from a box, corrected by a small CNN) on composites over PHOTOS."""
    from .cutout_train import resolve_config, training_loop

    config = resolve_training_config(resolve_config, preset, overrides, photos=photos, objects=objects,
                                     total_steps=total_steps, batch_size=batch_size, lr=lr, seed=seed)
    if dry_run:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    _threads(threads)
    export = training_loop(config, run_dir, echo=click.echo, stop_after_s=stop_after_seconds(max_minutes))
    click.echo(f"inference export: {export} (use it with: lamina decompose IMAGE --box ... --cutout-model {export}); "
               f"previews in {run_dir / 'previews'}, losses in {run_dir / 'log.jsonl'}")
