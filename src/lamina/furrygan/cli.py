"""``lamina furrygan ...``: train, generate layered images, segment real images, evaluate.

Thin commands over :mod:`lamina.furrygan`; every failure a user can cause is a
:class:`lamina.LaminaError`, printed by the ``lamina`` entry point as one line. A
checkpoint (``--checkpoint``) is a run folder, an export folder, or ``builtin``/``tiny`` (32 px) or
``builtin-64``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..cli_options import (
    device_option,
    format_option,
    overwrite_option,
    preview_option,
    resolve_training_config,
    runtime_options,
    seed_option,
    stop_after_seconds,
    training_options,
)
from ..cli_options import threads_option as _threads
from ..errors import InputFileError, LaminaError

LAYERED_SUFFIXES = (".psd", ".ora")


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's (and numba's) CPU threads; ``None`` leaves torch's default (shared meaning)."""
    from ..devices import set_threads

    set_threads(threads)


def _device(device: str) -> str:
    """The resolved ``--device`` as a torch device string (``auto`` -> cuda / mps / cpu)."""
    from ..devices import resolve_device

    return str(resolve_device(device))


def _checkpoint_option(func: Any) -> Any:
    return click.option("--checkpoint", "checkpoint", default="builtin", show_default=True,
                        help="Run folder, export folder (config.json + model.safetensors), builtin/tiny (the 32 px "
                             "built-in model) or builtin-64.")(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def furrygan() -> None:
    """FurryGAN (Bae et al., ECCV 2022): a GAN that draws a foreground, a background and a fine alpha mask."""


# ----------------------------------------------------------------------------- train
def build_dataset(data: str, resolution: int):
    """``"synth"``: procedural composites; otherwise a folder of images (resized and centre-cropped)."""
    from .datasets import ImageFolderDataset, SynthComposites

    if data == "synth":
        return SynthComposites(resolution)
    return ImageFolderDataset(data, resolution)


@furrygan.command()
@click.option("--data", default="synth", show_default=True,
              help="A folder of images, or 'synth' for lamina's procedural scenes.")
@click.option("--preset", default="tiny-32", show_default=True, help="Starting configuration (see --list-presets).")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder; rerunning the same command resumes from it.")
@training_options(batch_help="global batch size, all processes together (at least 2)", min_batch=2,
                  set_example="--set loss.min_mask=0.2 --set model.fine_mask=false")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader processes.")
@click.option("--list-presets", is_flag=True, is_eager=True, expose_value=False, help="List the presets and exit.",
              callback=lambda ctx, _, value: _list_presets(ctx) if value else None)
def train(data: str, preset: str, run_dir: Path, total_steps: int | None, batch_size: int | None, lr: float | None,
          seed: int | None, overrides: tuple[str, ...], max_minutes: float | None, threads: int | None, dry_run: bool,
          workers: int) -> None:
    """Train FurryGAN on a folder of images or on procedural scenes (composites only, never masks)."""
    from .config import get_preset

    cfg = resolve_training_config(lambda name, **values: get_preset(name).with_overrides(values), preset, overrides,
                                  prefix="train.", total_steps=total_steps, batch_size=batch_size, lr=lr, seed=seed)
    if dry_run:
        click.echo(cfg.to_json(), nl=False)
        return
    if data != "synth" and not Path(data).is_dir():
        raise InputFileError(f"--data {data}: not a folder of images (or 'synth')")
    _set_threads(threads)
    from .train import EXPORT_DIR, LOG_NAME, PREVIEW_DIR, STATE_NAME, training_loop

    dataset = build_dataset(data, cfg.model.resolution)
    resumed = (run_dir / STATE_NAME).is_file()
    click.echo(f"{'resuming' if resumed else 'starting'} {preset} run in {run_dir}: {len(dataset)} training images "
               f"at {cfg.model.resolution} px, {cfg.train.total_steps} steps of {cfg.train.batch_size}")
    result = training_loop(cfg, dataset, run_dir, num_workers=workers, echo=click.echo,
                           stop_after_s=stop_after_seconds(max_minutes))
    click.echo(f"step {result.step} ({result.nimg} images): export in {run_dir / EXPORT_DIR}, "
               f"previews in {run_dir / PREVIEW_DIR}, losses in {run_dir / LOG_NAME}")
    if result.timed_out:
        click.echo(f"stopped after --max-minutes {max_minutes:g} at step {result.step} of {cfg.train.total_steps}; "
                   "run the same command again to resume")


def _list_presets(ctx: click.Context) -> None:
    from .config import PRESETS

    for name, cfg in PRESETS.items():
        m = cfg.model
        click.echo(f"{name:<10} {m.resolution} px, channels <= {m.channel_max}, {cfg.train.total_steps} steps "
                   f"of {cfg.train.batch_size}")
    ctx.exit()


@furrygan.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def export(run_dir: Path, out_dir: Path) -> None:
    """Export a run's latest state (EMA generator + discriminator) as config.json + safetensors."""
    from .inference import export_run

    export_run(run_dir, out_dir)
    click.echo(f"exported {run_dir} to {out_dir}")


# ----------------------------------------------------------------------------- generate
def sample_paths(out: Path, n: int, fmt: str) -> tuple[list[Path], Path]:
    """Where ``generate`` writes ``n`` layered files and the contact sheet.

    * ``x.psd`` / ``x.ora``: one sample is ``x.psd``; several are ``x_000.psd``, ``x_001.psd``, ...
      beside it. The sheet is ``x_sheet.png`` beside them.
    * a path without suffix: one sample is a PNG-stack folder with ``x_sheet.png`` beside it;
      several go into the folder ``x`` as ``sample_000.<fmt>`` (``fmt``: psd, ora or a PNG
      stack) with ``x/contact_sheet.png``.
    """
    suffix = out.suffix.lower()
    if suffix in LAYERED_SUFFIXES:
        files = [out] if n == 1 else [out.with_name(f"{out.stem}_{i:03d}{suffix}") for i in range(n)]
        return files, out.with_name(f"{out.stem}_sheet.png")
    if suffix:
        raise LaminaError(f"--out {out}: use a .psd or .ora file, or a folder path without suffix")
    if n == 1:
        return [out], out.with_name(f"{out.name}_sheet.png")
    ext = "" if fmt == "stack" else f".{fmt}"
    return [out / f"sample_{i:03d}{ext}" for i in range(n)], out / "contact_sheet.png"


@furrygan.command()
@_checkpoint_option
@click.option("--n", "count", type=click.IntRange(1, 10_000), default=8, show_default=True, help="Number of samples.")
@click.option("--truncation", type=click.FloatRange(0, 2), default=0.7, show_default=True,
              help="Truncation psi (1: none; the paper evaluates 1.0 and 0.7).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="x.psd / x.ora, or a folder path (see the help text above).")
@format_option
@seed_option(help="latent seed")
@runtime_options
@overwrite_option
@preview_option
def generate(checkpoint: str, count: int, truncation: float, out: Path, fmt: str, seed: int, device: str,
             dtype: str, threads: int | None, overwrite: bool, preview: bool) -> None:
    """Generate two-layer images (background + foreground with FurryGAN's alpha) and a contact sheet.

    --out x.psd (or .ora) writes x.psd for one sample, x_000.psd ... for several, and the
    contact sheet x_sheet.png beside them. --out a folder path without suffix writes one PNG
    stack (one sample) or a folder of sample_000.psd ... plus contact_sheet.png.
    """
    from ..cli_options import claim_outputs, setup_runtime
    from ..io import save, save_contact_sheet
    from .inference import generate as sample
    from .inference import load_generator, resolve_checkpoint

    torch_device, torch_dtype = setup_runtime(device, dtype, threads, small_model=True)
    files, sheet = sample_paths(out, count, fmt)
    resolve_checkpoint(checkpoint)  # a missing checkpoint is reported before the outputs are claimed
    with claim_outputs([*files] + ([sheet] if preview else []), overwrite):
        G = load_generator(checkpoint, torch_device).to(torch_dtype)
        images = sample(G, count, truncation_psi=truncation, seed=seed)
        for image, path in zip(images, files, strict=True):
            image.metadata["checkpoint"] = str(checkpoint)
            save(image, path, overwrite=overwrite)
        if preview:
            save_contact_sheet(images[:64], sheet, overwrite=overwrite)
    where = files[0] if count == 1 else f"{files[0]} ... {files[-1].name}"
    click.echo(f"wrote {count} layered image(s): {where}" + (f"; contact sheet {sheet}" if preview else ""))


# ----------------------------------------------------------------------------- segment
@furrygan.command()
@_checkpoint_option
@click.argument("images", nargs=-1, required=True, metavar="IMAGE|FOLDER|GLOB...")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <name>_mask.png and <name>.<format> per image.")
@click.option("--steps", type=click.IntRange(1), default=300, show_default=True, help="Inversion steps.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Adam learning rate of the inversion [default: lamina.furrygan.inference.INVERSION_LR, tuned on "
                   "the built-in model; StyleGAN2's projector uses 0.1].")
@click.option("--feature-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Weight of the discriminator-feature perceptual term (0: multi-scale pixel L1 only; on the "
                   "built-in model pixels alone gave better masks).")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True, help="Images inverted together.")
@format_option
@click.option("--size", "out_size", type=click.Choice(["original", "model"]), default="original", show_default=True,
              help="Mask and layers at each image's own size, or at the model's resolution (its centre crop).")
@seed_option
@device_option
@_threads
@overwrite_option
def segment(checkpoint: str, images: tuple[str, ...], out_dir: Path, steps: int, lr: float | None,
            feature_weight: float, batch: int, fmt: str, out_size: str, seed: int, device: str,
            threads: int | None, overwrite: bool) -> None:
    """Segment images by GAN inversion: fit w+ and noise to each image, then read the generator's mask.

    IMAGES are files, folders or quoted globs ("photos/*.jpg"); the model loads once. Images
    whose outputs are already in --out are skipped (rerun to resume); a bad file is reported
    and the others go on (exit status 1 at the end if any failed).

    The model sees each image resized (short side) and centre-cropped to its resolution. With
    ``--size original`` (the default) the mask is mapped back onto the whole image (the
    strips outside the crop continue the mask's edges) and the layered file holds the
    original pixels; ``--size model`` keeps the crop at the model's resolution.
    """
    import torch

    from ..cli_options import (
        BatchReport,
        claim_outputs,
        expand_inputs,
        finish_batch,
        make_output_folder,
        member_suffix,
        setup_runtime,
        unique_stems,
    )
    from ..data.datasets import resize_crop
    from ..io import read_rgb, save, write_png
    from .inference import INVERSION_LR, invert, load_discriminator, load_generator, resolve_checkpoint

    torch_device, _ = setup_runtime(device, "float32", threads)  # inversion optimises in float32
    lr = INVERSION_LR if lr is None else lr
    paths, _ = expand_inputs(images)
    resolve_checkpoint(checkpoint)
    make_output_folder(out_dir)
    ext = member_suffix(fmt)
    outputs = [(out_dir / f"{stem}_mask.png", out_dir / f"{stem}{ext}") for stem in unique_stems(paths)]
    report = BatchReport()
    todo = []
    for path, pair in zip(paths, outputs, strict=True):
        if all(p.exists() for p in pair) and not overwrite:
            report.skipped.append(pair[1])
        else:
            todo.append((path, pair))
    models: dict[str, Any] = {}
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        claimed = []
        for path, pair in chunk:  # claim each image's outputs, read it; a failure drops that image only
            # Half of a pair (the mask without the layers: a run stopped between the two writes) is redone.
            leftover = overwrite or any(p.exists() for p in pair)
            try:
                claim = claim_outputs([p for p in pair if overwrite or not p.exists()], overwrite)
                claim.__enter__()
            except LaminaError as exc:
                report.failed.append((path, str(exc)))
                continue
            try:
                pixels = torch.from_numpy(read_rgb(path).transpose(2, 0, 1).copy())
                claimed.append((path, pair, claim, pixels, leftover))
            except LaminaError as exc:
                claim.__exit__(None, None, None)
                report.failed.append((path, str(exc)))
        if not claimed:
            continue
        try:
            if not models:
                models["G"] = load_generator(checkpoint, torch_device)
                models["D"] = load_discriminator(checkpoint, torch_device) if feature_weight else None
                if feature_weight and models["D"] is None:
                    click.echo("note: the checkpoint has no discriminator; inverting with the pixel loss only",
                               err=True)
            G, D = models["G"], models["D"]
            originals = [item[3] for item in claimed]
            target = torch.stack([resize_crop(rgb, G.cfg.resolution, G.cfg.resolution) for rgb in originals])
            result = invert(G, target, steps=steps, lr=lr, D=D, feature_weight=feature_weight, seed=seed + start)
            for i, (path, (mask_path, layered_path), _, original, replace) in enumerate(claimed):
                if out_size == "original":
                    alpha, layered = result.alpha_at(i, *original.shape[1:]), result.to_layered_at(i, original)
                else:
                    alpha, layered = result.alpha[i].float().cpu(), result.to_layered(i)
                layered.metadata["source"] = path.name
                write_png(alpha[0].numpy(), mask_path, overwrite=replace)
                save(layered, layered_path, overwrite=replace)
                report.done.append(layered_path)
                click.echo(f"{path}: mask {mask_path}, layers {layered_path} (reconstruction L1 "
                           f"{(result.output.composite[i].float().cpu().add(1).div(2) - target[i]).abs().mean():.4f})")
        finally:
            for item in claimed:
                item[2].__exit__(None, None, None)
    finish_batch(report)


def _unique_stems(paths: tuple[Path, ...]) -> list[str]:
    """Output names of input files (kept for callers of the old helper): stems, ``_1``... for repeats."""
    from ..cli_options import unique_stems

    for path in paths:
        if not path.is_file():
            raise InputFileError(f"{path}: no such image file")
    return unique_stems(paths)


# ----------------------------------------------------------------------------- evaluate
@furrygan.command("eval")
@_checkpoint_option
@click.option("--n", "count", type=click.IntRange(2), default=1000, show_default=True, help="Generated samples.")
@click.option("--truncation", type=click.FloatRange(0, 2), default=1.0, show_default=True)
@click.option("--segmenter", default="builtin", show_default=True,
              help="Pseudo ground truth: builtin (the shipped one nearest the model's resolution), a "
                   "train-segmenter folder, or a TorchScript/pickled module file.")
@click.option("--on", "target", type=click.Choice(["fg", "composite"]), default="fg", show_default=True,
              help="Segment the generated foreground images (the paper's protocol) or the composites.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--real", default="synth", show_default=True,
              help="Real images for FID/KID: 'synth' (procedural composites) or a folder; 'none' skips FID/KID.")
@click.option("--feature", type=click.Choice(["inception", "random"]), default="random", show_default=True,
              help="FID/KID features: Inception-v3 (needs local weights, see lamina.metrics) or a fixed random CNN.")
@click.option("--inversion", "inversion_n", type=click.IntRange(0), default=0, show_default=True,
              help="Also segment this many held-out procedural composites by inversion, against exact masks.")
@click.option("--inversion-steps", type=click.IntRange(1), default=300, show_default=True)
@click.option("--inversion-feature-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Discriminator-feature term of the inversion loss (see segment --feature-weight).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_threads
def evaluate(checkpoint: str, count: int, truncation: float, segmenter: str, target: str, threshold: float,
             real: str, feature: str, inversion_n: int, inversion_steps: int, inversion_feature_weight: float,
             seed: int, device: str, as_json: bool, threads: int | None) -> None:
    """Mask metrics of generated samples against a pseudo-GT segmenter, and FID/KID of the composites."""
    _set_threads(threads)
    from .evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, count=count, truncation_psi=truncation, segmenter=segmenter,
                                 target=target, threshold=threshold, real=None if real == "none" else real,
                                 feature=feature, seed=seed, inversion_count=inversion_n,
                                 inversion_steps=inversion_steps, inversion_feature_weight=inversion_feature_weight,
                                 device=_device(device))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{count} samples of {checkpoint} at psi={truncation}; pseudo-GT: {segmenter} on {target}\n")
    click.echo("| metric | value |\n|---|---|")
    for key, value in report["masks"].items():
        click.echo(f"| {key} | {value:.4f} |")
    for key, value in report.get("fid_kid", {}).items():
        click.echo(f"| {key} ({feature} features) | {value:.4g} |")
    for key, value in report.get("inversion", {}).items():
        click.echo(f"| inversion {key} (vs exact masks, {inversion_n} scenes) | {value:.4f} |")


@furrygan.command("select")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "count", type=click.IntRange(2), default=1000, show_default=True,
              help="Generated samples per snapshot.")
@click.option("--truncation", type=click.FloatRange(0, 2), default=1.0, show_default=True)
@click.option("--segmenter", default="builtin", show_default=True, help="Pseudo ground truth, as for eval.")
@click.option("--on", "target", type=click.Choice(["fg", "composite"]), default="fg", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--seed", type=int, default=None,
              help="Sample seed [default: 1, not eval's 0: report the chosen snapshot with eval on other samples].")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy the best snapshot (highest mIoU) to this folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --export folder.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_threads
def select(run_dir: Path, count: int, truncation: float, segmenter: str, target: str, threshold: float,
           seed: int | None, export_dir: Path | None, overwrite: bool, device: str, as_json: bool,
           threads: int | None) -> None:
    """Score the masks of every snapshot of a run, plot them, and name (or --export) the best step.

    FurryGAN's masks can peak before the end of a run; training keeps an export of every save in
    RUN/snapshots/ (train.keep_snapshots). Scores are cached in RUN/snapshot-scores.json and
    drawn to RUN/snapshot-scores.png.
    """
    _set_threads(threads)
    import shutil

    from ..io import atomic_output, check_writable, plot_log
    from .evaluate import SCORES_NAME, SELECTION_SEED, best_snapshot, score_snapshots

    if export_dir is not None:
        check_writable(export_dir, overwrite)
    seed = SELECTION_SEED if seed is None else seed
    scores = score_snapshots(run_dir, count=count, truncation_psi=truncation, segmenter=segmenter, target=target,
                             threshold=threshold, seed=seed, device=_device(device))
    best = best_snapshot(scores)
    keys = ("miou", "iou_fg", "precision", "recall")
    plot_log([{"step": s.step, **{k: s.masks[k] for k in keys}} for s in scores],
             run_dir / Path(SCORES_NAME).with_suffix(".png"), keys=keys)
    if export_dir is not None:
        with atomic_output(export_dir, overwrite=overwrite) as staged:
            shutil.copytree(best.path, staged)
    if as_json:
        click.echo(json.dumps({"best": best.step, "scores": {s.step: s.masks for s in scores}}, indent=2))
        return
    click.echo(f"{count} samples per snapshot of {run_dir} at psi={truncation}, seed {seed}; pseudo-GT: "
               f"{segmenter} on {target}\n")
    click.echo("| step | " + " | ".join(keys) + " |")
    click.echo("|---" * (len(keys) + 1) + "|")
    for s in scores:
        mark = " **best**" if s is best else ""
        click.echo(f"| {s.step}{mark} | " + " | ".join(f"{s.masks[k]:.4f}" for k in keys) + " |")
    click.echo(f"\nbest: step {best.step} ({best.path})" + (f", copied to {export_dir}" if export_dir else ""))


# ----------------------------------------------------------------------------- pseudo-GT segmenter
@furrygan.command("train-segmenter")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--resolution", type=click.IntRange(8), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option("--channels", type=click.IntRange(1), default=16, show_default=True)
@click.option("--depth", type=click.IntRange(1), default=3, show_default=True,
              help="2x downsamplings of the U-Net (the resolution must divide by 2**depth).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-n", type=click.IntRange(0), default=500, show_default=True,
              help="Held-out procedural scenes to score it on afterwards (0: skip).")
@_threads
def train_segmenter_command(out_dir: Path, resolution: int, steps: int, batch: int, channels: int, depth: int,
                            seed: int, eval_n: int, threads: int) -> None:
    """Train the pseudo-GT segmenter on procedural scenes with exact masks (for `eval --segmenter`)."""
    _set_threads(threads)
    from .segmenter import evaluate_segmenter, train_segmenter

    model = train_segmenter(out_dir, resolution=resolution, steps=steps, batch=batch, channels=channels,
                            depth=depth, seed=seed)
    click.echo(f"wrote {out_dir}")
    if eval_n:
        scores = evaluate_segmenter(model, resolution, eval_n)
        click.echo("held-out scenes: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))


if __name__ == "__main__":  # pragma: no cover
    furrygan(prog_name=os.path.basename(__file__))
