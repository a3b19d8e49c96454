"""The ``lamina`` command line.

Every command is a thin layer over the Python API: parse, call, report. Errors meant for
users (:class:`lamina.LaminaError`) are printed as one line and exit with status 1;
nothing is half-written because every writer in :mod:`lamina.io` is atomic.
Method commands (``lamina furrygan ...``, ``lamina decompose``) are registered in
:data:`LAZY_COMMANDS` and imported only when used, so ``lamina --help`` stays fast.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from .errors import LaminaError

#: ``name -> (module, attribute, one-line help)`` of method commands, imported lazily.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "furrygan": ("lamina.furrygan.cli", "furrygan", "FurryGAN: train, generate layers, segment, evaluate."),
    "layeringdiff": ("lamina.layeringdiff.cli", "layeringdiff", "LayeringDiff: train the FBDD decomposition model."),
    "decompose": ("lamina.layeringdiff.cli", "decompose", "Split a photo into foreground layer(s) and a background."),
    "generate": ("lamina.layeringdiff.cli", "generate", "Text -> composite -> layers with a text-to-image model."),
    "bfs": ("lamina.bfs.cli", "bfs", "BFS: train and evaluate the layered synthesis model."),
    "synthesize": ("lamina.bfs.cli", "synthesize", "BFS: captioned objects, with shadows, as layers on an image."),
    "studio": ("lamina.studio.cli", "studio", "A local browser app to make layered images and edit their layers."),
}

LAYERED_SUFFIXES = (".psd", ".ora")


class LaminaGroup(click.Group):
    """A click group that turns :class:`LaminaError` into one line and lazily loads method groups."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *(name for name in LAZY_COMMANDS if _lazy_available(name))])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if _lazy_available(name):
            module, attr, _ = LAZY_COMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:  # one-line help without importing the method
                rows.append((name, LAZY_COMMANDS[name][2]))
            else:
                rows.append((name, self.commands[name].get_short_help_str(limit=80)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True):  # the process ends after this command
            _skip_final_collection()
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LaminaError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@functools.cache  # registered once per process
def _skip_final_collection() -> None:
    """At exit, let Python's last garbage collections skip every object alive then (``gc.freeze``).

    With torch loaded they walk millions of objects: about 0.4 s of every command. Files are
    closed and renamed into place before, and the interpreter still flushes the streams.
    """
    atexit.register(gc.freeze)


def _lazy_available(name: str) -> bool:
    """Whether a method command's module is installed, found without importing its package (which needs torch)."""
    if name not in LAZY_COMMANDS:
        return False
    package, _, module = LAZY_COMMANDS[name][0].rpartition(".")
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # a parent package is missing
        return False
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    return any((Path(folder) / f"{module}.py").is_file() for folder in locations)


def _seed_option(func: Any) -> Any:
    from .cli_options import seed_option

    return seed_option(func)


def _overwrite_option(func: Any) -> Any:
    from .cli_options import overwrite_option

    return overwrite_option(func)


@click.group(cls=LaminaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lamina")
def main() -> None:
    """lamina: layered image synthesis (FurryGAN, LayeringDiff, BFS) on one layered-image core.

    Layered files are .psd, .ora, or a PNG-stack folder (any path without a suffix). Method
    commands share --device (auto: the GPU when there is one), --dtype, --threads, --seed,
    --out, --overwrite and --preview/--no-preview; decompose and furrygan segment take a
    folder or a quoted glob of photos and resume a half-done output folder.
    """


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the layered files and the contact sheet into.")
@click.option("--n", "count", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Number of scenes (and of FurryGAN samples).")
@click.option("--size", type=click.IntRange(32, 2048), default=256, show_default=True, help="Canvas size in pixels.")
@_seed_option
@_overwrite_option
def demo(out_dir: Path, count: int, size: int, seed: int, overwrite: bool) -> None:
    """Layered PSD/ORA/PNG-stack files and a contact sheet from the built-in models.

    Four kinds of output, all offline: procedural scenes with exact ground truth
    (``scene_*``), those scenes' flattened composites taken apart again by the built-in
    LayeringDiff model given the object's box (``decomposed_*.psd``), samples of the
    built-in FurryGAN (``furrygan_*.psd``), and procedural backgrounds with two captioned
    objects placed back to front by the built-in BFS (``bfs_*.psd``). ``contact_sheet.png``
    shows every one of them.
    """
    from .data import SCENE_PRESETS, generate_scene
    from .furrygan.inference import generate as furrygan_generate
    from .furrygan.inference import load_builtin as load_furrygan
    from .io import save, save_contact_sheet
    from .io.atomic import check_writable
    from .layeringdiff import decompose_image, make_decomposer
    from .progress import progress

    stems = [f"scene_{i:02d}" for i in range(count)]
    outputs = [out_dir / f"{stem}{suffix}" for stem in stems for suffix in (".psd", ".ora", "")]
    outputs += [out_dir / f"decomposed_{i:02d}.psd" for i in range(count)]
    outputs += [out_dir / f"furrygan_{i:02d}.psd" for i in range(count)]
    with_bfs = importlib.util.find_spec("transformers") is not None  # BFS's text encoders: lamina[prompt]
    outputs += [out_dir / f"bfs_{i:02d}.psd" for i in range(count) if with_bfs] + [out_dir / "contact_sheet.png"]
    for path in outputs:  # refuse before any work, so a refused run writes nothing
        check_writable(path, overwrite)

    config = dataclasses.replace(SCENE_PRESETS["default"], size=size)
    scenes = [generate_scene(seed + i, config) for i in progress(range(count), desc="procedural scenes")]
    truth = [scene.to_layered() for scene in scenes]
    decomposer = make_decomposer("layeringdiff", seed=seed)  # the built-in FBDD, loaded once
    decomposed = [decompose_image(scene.composite, box=scene.box, decomposer=decomposer)
                  for scene in progress(scenes, desc="LayeringDiff decomposition")]
    samples = furrygan_generate(load_furrygan(), count, truncation_psi=0.7, seed=seed)
    placed = []
    if with_bfs:
        from .bfs.synthesize import demo_scenes

        placed = demo_scenes(count, size, seed, progress=lambda items: progress(items, desc="BFS layers"))
    else:
        click.echo("BFS rows skipped: its text encoders need transformers (pip install 'lamina[prompt]')", err=True)

    rows = []
    for i in range(count):
        for path in outputs[3 * i:3 * i + 3]:
            save(truth[i], path, overwrite=overwrite)
        save(decomposed[i], out_dir / f"decomposed_{i:02d}.psd", overwrite=overwrite)
        save(samples[i], out_dir / f"furrygan_{i:02d}.psd", overwrite=overwrite)
        if placed:
            save(placed[i], out_dir / f"bfs_{i:02d}.psd", overwrite=overwrite)
        rows += [truth[i], decomposed[i]]
    save_contact_sheet(rows + samples + placed, out_dir / "contact_sheet.png", overwrite=overwrite)
    click.echo(f"wrote {len(outputs)} outputs to {out_dir}: scene_* (PSD, ORA, PNG stack; exact ground truth), "
               f"decomposed_*.psd (LayeringDiff), furrygan_*.psd (FurryGAN), "
               f"{'bfs_*.psd (BFS), ' if placed else ''}contact_sheet.png")


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@_overwrite_option
def convert(src: Path, dst: Path, overwrite: bool) -> None:
    """Convert between PSD, OpenRaster and PNG stack, or flatten to .png/.jpg/.tif (format by suffix)."""
    from .io import file_format, load, save
    from .io.atomic import check_writable

    file_format(dst)  # refuse an unknown format or a taken/unwritable output before reading anything
    check_writable(dst, overwrite)
    image = load(src)
    save(image, dst, overwrite=overwrite)
    click.echo(f"{src} -> {dst} ({len(image.layers) + 1} layers, {image.width}x{image.height})")


@main.command()
@click.argument("src", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Contact sheet PNG.")
@_overwrite_option
def view(src: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Contact sheet: each layer over a checkerboard, then the composite."""
    from .io import load, save_contact_sheet
    from .io.atomic import check_writable

    check_writable(out, overwrite)  # before reading anything
    save_contact_sheet((load(path) for path in src), out, overwrite=overwrite)  # one image in memory at a time
    click.echo(f"wrote {out}")


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--box", required=True, help="Crop box x0,y0,x1,y1 in pixels (end exclusive).")
@_overwrite_option
def crop(src: Path, dst: Path, box: str, overwrite: bool) -> None:
    """Crop every layer of a layered file to a box."""
    from .io import file_format, load, save
    from .io.atomic import check_writable
    from .layers import parse_box

    parse_box(box)
    file_format(dst)
    check_writable(dst, overwrite)  # before reading anything
    image = load(src).crop(parse_box(box))
    save(image, dst, overwrite=overwrite)
    click.echo(f"{src} -> {dst} ({image.width}x{image.height})")


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
def info(src: Path) -> None:
    """List the layers of a layered file (name, size, offset, opacity)."""
    from .io import load

    image = load(src)
    click.echo(f"{src}: {image.width}x{image.height}, {image.bit_depth}-bit, {len(image.layers)} layers over "
               f"'{image.background.name}'")
    for layer in reversed(image.all_layers):  # top first, as editors show them
        box = layer.bbox()
        blend = "" if layer.blend_mode == "normal" else f" {layer.blend_mode}"
        click.echo(f"  {layer.name:<24} {layer.width}x{layer.height} at {layer.offset} opacity {layer.opacity:.2f}"
                   f"{blend}{'' if layer.visible else ' hidden'} content {box}")
    if image.metadata:
        click.echo(f"  metadata: {json.dumps(image.metadata)}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--n", "count", type=click.IntRange(1), required=True, help="Number of scenes.")
@click.option("--size", type=click.IntRange(16, 4096), default=256, show_default=True)
@click.option("--preset", default="default", show_default=True, help="Scene preset (lamina.data.SCENE_PRESETS).")
@click.option("--format", "fmt", type=click.Choice(["stack", "shards"]), default="stack", show_default=True,
              help="A PNG stack per sample, or .npz shards.")
@_seed_option
@_overwrite_option
def synth(out_dir: Path, count: int, size: int, preset: str, fmt: str, seed: int, overwrite: bool) -> None:
    """Write a procedural layered dataset with exact ground truth."""
    from .data import SCENE_PRESETS, write_dataset

    if preset not in SCENE_PRESETS:
        raise LaminaError(f"unknown scene preset {preset!r}; choose from {', '.join(sorted(SCENE_PRESETS))}")
    path = write_dataset(out_dir, count, size, seed, config=SCENE_PRESETS[preset], format=fmt, overwrite=overwrite)
    click.echo(f"wrote {count} scenes to {path}")


@main.command()
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("gt", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Alpha threshold for the mask metrics.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics(pred: Path, gt: Path, threshold: float, as_json: bool) -> None:
    """Compare predicted layered files (or folders) with ground truth."""
    from .io import load
    from .metrics import evaluate_layers

    pairs = _pair_layered(pred, gt)
    rows = [evaluate_layers(load(p), load(g), threshold=threshold) for p, g in pairs]
    mean = _mean_metrics(rows)
    if as_json:
        per_image = {str(p): row for (p, _), row in zip(pairs, rows, strict=True)}
        report = {"count": len(rows), "mean": mean, "per_image": per_image}
        click.echo(json.dumps(_strict_json(report), indent=2))
        return
    click.echo(f"{len(rows)} pair(s)\n\n| metric | value |\n|---|---|")
    for key, value in mean.items():
        click.echo(f"| {key} | {value:.4f} |")


def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each whole-image metric over the pairs, skipping NaN (undefined for that pair).

    Per-layer entries (``layer/<name>/...``) differ between images, so they stay per image.
    """
    keys = [key for key in rows[0] if not key.startswith("layer/")]
    mean = {}
    for key in keys:
        values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        mean[key] = sum(values) / len(values) if values else math.nan
    return mean


def _strict_json(value: Any) -> Any:
    """Standard JSON has no NaN/Infinity: NaN (undefined) -> null, +-inf (e.g. PSNR of equal images) -> "inf"."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _is_layered(path: Path) -> bool:
    return path.suffix.lower() in LAYERED_SUFFIXES or (path / "layers.json").is_file()


def _pair_layered(pred: Path, gt: Path) -> list[tuple[Path, Path]]:
    """Match layered files of two folders by relative name (suffix ignored), or one pair of files."""
    for path in (pred, gt):
        if not path.exists():
            raise LaminaError(f"{path}: no such file or folder")
    if _is_layered(pred) and _is_layered(gt):
        return [(pred, gt)]
    if _is_layered(pred) or _is_layered(gt):
        raise LaminaError(f"{pred} and {gt} must both be layered files or both folders of them")

    def index(root: Path) -> dict[str, Path]:
        return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*")) if _is_layered(p)}

    preds, gts = index(pred), index(gt)
    common = sorted(preds.keys() & gts.keys())
    if not common:
        raise LaminaError(f"no layered files with matching names in {pred} ({len(preds)}) and {gt} ({len(gts)})")
    missing = sorted(gts.keys() - preds.keys())
    if missing:
        click.echo(f"warning: {len(missing)} ground-truth file(s) have no prediction, e.g. {missing[0]}", err=True)
    return [(preds[k], gts[k]) for k in common]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
