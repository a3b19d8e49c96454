"""LayeringDiff disassembly on held-out procedural scenes: learned (FBDD) vs classical, side by side.

Scenes: the ``default`` preset (one object, shadows and reflections in its layer) at 64 and
256 px, seeds from ``--first-seed`` (training uses seeds below 2e7 and the previews 2e9).
Both methods get the same foreground stage (the object's box -> GrabCut -> trimap ->
closed-form matting; where GrabCut finds nothing, the matting of the true object mask,
counted in the last column) and are scored with :func:`lamina.metrics.evaluate_layers` against the
exact ground truth: alpha SAD / MSE / gradient error of the foreground layer (object and
effects), alpha-weighted foreground L1, background PSNR inside the region the ground-truth
layer covers, recomposition PSNR; seconds per image of the foreground stage and of the
disassembly (wall clock, one thread); peak resident memory of each run (a fresh process per
method and size, so imports count: about 0.4 GB of it is torch). A second table splits the
occluded-background PSNR by the procedural background family (gradient, floor, stripes...).

Targets (issue 4): learned beats classical on every quality metric, background PSNR by
>= 3 dB, <= 1 s per 256 px image (foreground stage + disassembly). Recomposition PSNR above
``EXACT_RECOMPOSITION_DB`` counts as a tie: both layers recompose the input to float32 rounding.

``--backgrounds DIR`` (or ``skimage``: the colour and texture photographs bundled with
scikit-image) puts the same procedural objects, with their shadows and reflections, over
random square crops of real photographs instead of procedural backgrounds: ground truth
stays exact, and the background the methods must complete is a real one, which shows
whether the learned model has overfitted to the procedural look.

``--methods`` also takes ``layeringdiff+fres`` and ``layeringdiff-fres``: the learned path with
the FBDD model's sampled foreground residual added to the closed-form ``F`` or not
(``foreground_residual``; plain ``layeringdiff`` uses the model's own setting), and
``layeringdiff-hfa``: the learned path without the model's learned HFA (closed form only);
``classical-telea``: the classical path as it was before 2026-12-06 (Telea fill, the difference
model of effects; issue 4's baseline); ``layeringdiff-selfsim``: without the self-similar
completion of the hidden background's high frequencies (:mod:`lamina.layeringdiff.selfsim`);
``layeringdiff-hfa-selfsim``: without either.

    python benchmarks/bench_decompose.py [--count64 40] [--count256 16] [--model PATH] [--steps N]
    python benchmarks/bench_decompose.py --backgrounds skimage
    python benchmarks/bench_decompose.py --methods classical,layeringdiff+fres,layeringdiff-fres
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

#: (key of evaluate_layers, column label, True when higher is better).
METRICS = (("alpha_sad", "alpha SAD/1000", False), ("alpha_mse", "alpha MSE", False),
           ("alpha_gradient", "alpha grad/1000", False), ("fg_l1", "fg L1 (alpha-w.)", False),
           ("bg_psnr_occluded", "bg PSNR occl. dB", True), ("recomposition_psnr", "recomp. PSNR dB", True))
FIRST_SEED = 900_000_000
#: Recomposition PSNR above this is float32 rounding (about 150-170 dB): both methods recompose the
#: input exactly, and a difference there is a tie, not a quality difference.
EXACT_RECOMPOSITION_DB = 120.0
#: scikit-image's bundled photographs used by ``--backgrounds skimage`` (colour scenes and grey textures).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "brick.png", "grass.png", "gravel.png")


def photo_files(backgrounds: str) -> list[str]:
    """Paths of the background photographs: a folder's images, or scikit-image's bundled ones."""
    from pathlib import Path

    if backgrounds == "skimage":
        try:
            import skimage
        except ImportError:
            sys.exit("--backgrounds skimage needs scikit-image (pip install scikit-image), or give a folder")
        root = Path(skimage.__file__).parent / "data"
        return [str(root / name) for name in SKIMAGE_PHOTOS if (root / name).exists()]
    from lamina.data import IMAGE_EXTENSIONS

    files = sorted(str(p) for p in Path(backgrounds).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        sys.exit(f"{backgrounds}: no images")
    return files


def real_crop(photos: list[np.ndarray], seed: int, size: int) -> np.ndarray:
    """A random square crop (half to all of the short side) of a random photo, resized to ``size``: ``[S, S, 3]``."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng([seed, 7])
    photo = photos[rng.integers(len(photos))]
    side = int(min(photo.shape[:2]) * rng.uniform(0.5, 1.0))
    y, x = rng.integers(photo.shape[0] - side + 1), rng.integers(photo.shape[1] - side + 1)
    crop = torch.from_numpy(np.ascontiguousarray(photo[y:y + side, x:x + side])).permute(2, 0, 1)[None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0].permute(1, 2, 0).numpy()


#: Extra ``--methods``: the learned path with one decomposer option changed.
VARIANTS = {
    "layeringdiff+fres": {"foreground_residual": True},  # F = P_F + the sampled residual
    "layeringdiff-fres": {"foreground_residual": False},  # F = P_F (the built-in model's setting)
    "layeringdiff-hfa": {"hfa": False},  # without the model's learned HFA
    "layeringdiff-selfsim": {"self_similar": None},  # without the self-similar high-frequency completion
    "layeringdiff-hfa-selfsim": {"hfa": False, "self_similar": None},  # the network's output alone
}


def run_one(method: str, size: int, count: int, first_seed: int, model: str | None, steps: int | None,
            window: float | None, effects_floor: float | None, backgrounds: str | None = None) -> dict:
    """Decompose ``count`` scenes with one method in this process; mean metrics and timings."""
    import torch

    torch.set_num_threads(1)
    from lamina.data import SCENE_PRESETS, generate_scene
    from lamina.errors import LaminaError
    from lamina.io import read_rgb
    from lamina.layeringdiff.decompose import make_decomposer
    from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box, foreground_from_mask
    from lamina.layers import LayeredImage
    from lamina.metrics import evaluate_layers

    photos = [read_rgb(path) for path in photo_files(backgrounds)] if backgrounds else None

    options: dict = {}
    if method == "classical-telea":  # the classical path before issue 21 (Telea fill, difference effects)
        method, options = "classical", {"inpaint": "telea", "effects_model": "difference"}
    if method in VARIANTS:
        method, options = "layeringdiff", dict(VARIANTS[method])
    if method == "layeringdiff":
        options |= {k: v for k, v in (("num_inference_steps", steps), ("window", window),
                                      ("effects_floor", effects_floor)) if v is not None}
    decomposer = make_decomposer(method, model, **options)
    config = SCENE_PRESETS["default"].with_size(size)
    sums: dict[str, list[float]] = {key: [] for key, _, _ in METRICS}
    stage_s, decompose_s, fallbacks = [], [], 0
    by_family: dict[str, list[float]] = {}  # occluded-background PSNR per procedural background family
    for i in range(count + 1):  # the first scene warms up (JIT of pymatting, first UNet call)
        scene = generate_scene(first_seed + i, config)
        background = scene.background if photos is None else real_crop(photos, first_seed + i, size)
        truth = LayeredImage.from_foreground(background, scene.foreground)
        composite = scene.composite if photos is None else truth.composite()[:, :, :3]
        start = time.perf_counter()
        try:
            estimate = foreground_from_box(composite, scene.box, ForegroundConfig())
        except LaminaError:  # GrabCut found nothing: both methods get the matte of the true object mask
            estimate = foreground_from_mask(composite, scene.object_alpha > 0.5, ForegroundConfig())
            fallbacks += i > 0
        middle = time.perf_counter()
        part = decomposer.decompose(composite, estimate.alpha, estimate.effects_region)
        end = time.perf_counter()
        if i == 0:
            continue
        stage_s.append(middle - start)
        decompose_s.append(end - middle)
        scores = evaluate_layers(part.to_layered(), truth)
        for key, _, _ in METRICS:
            if math.isfinite(scores[key]):
                sums[key].append(scores[key])
        if photos is None and math.isfinite(scores["bg_psnr_occluded"]):
            by_family.setdefault(scene.attributes["background"], []).append(scores["bg_psnr_occluded"])
    out = {key: float(np.mean(v)) for key, v in sums.items()}
    out.update(stage_s=float(np.mean(stage_s)), decompose_s=float(np.mean(decompose_s)),
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, count=count, fallbacks=fallbacks,
               by_family={k: (float(np.mean(v)), len(v)) for k, v in sorted(by_family.items())})
    return out


def print_families(rows: list[tuple[int, str, dict]]) -> None:
    """Occluded-background PSNR per procedural background family, the methods side by side."""
    for size in dict.fromkeys(s for s, _, _ in rows):
        by = {m: r["by_family"] for s, m, r in rows if s == size and r["by_family"]}
        if not by:
            continue
        compare = {"classical", "layeringdiff"} <= set(by)
        header = ["family", "scenes", *by] + (["learned - classical"] if compare else [])
        print(f"\nbg PSNR occluded (dB) per background family, {size}²:\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for family in sorted({f for fams in by.values() for f in fams}):
            cells = [f"{fams[family][0]:.2f}" if family in fams else "-" for fams in by.values()]
            if compare:
                both = family in by["classical"] and family in by["layeringdiff"]
                cells.append(f"{by['layeringdiff'][family][0] - by['classical'][family][0]:+.2f}" if both else "-")
            count = max(fams[family][1] for fams in by.values() if family in fams)
            print(f"| {family} | {count} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count64", type=int, default=40)
    parser.add_argument("--count256", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--model", default=None, help="FBDD model folder (default: the built-in one)")
    parser.add_argument("--steps", type=int, default=None, help="FBDD denoising steps (default: the decomposer's)")
    parser.add_argument("--window", type=float, default=None, help="FBDD window / object box side")
    parser.add_argument("--effects-floor", type=float, default=None, help="FBDD: least effect opacity kept")
    parser.add_argument("--backgrounds", default=None,
                        help="real backgrounds: a folder of photos, or 'skimage' (scikit-image's bundled photos)")
    parser.add_argument("--methods", default="classical,layeringdiff")
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one method at one size, JSON on stdout
        method, size = args.one[0], int(args.one[1])
        count = args.count64 if size <= 64 else args.count256
        print(json.dumps(run_one(method, size, count, args.first_seed, args.model, args.steps, args.window,
                                 args.effects_floor, args.backgrounds)))
        return

    rows = []
    sizes = [int(v) for v in args.sizes.split(",")]
    for size in sizes:
        for method in args.methods.split(","):
            command = [sys.executable, __file__, "--one", method, str(size), "--count64", str(args.count64),
                       "--count256", str(args.count256), "--first-seed", str(args.first_seed)]
            for flag, value in (("--model", args.model), ("--steps", args.steps), ("--window", args.window),
                                ("--effects-floor", args.effects_floor), ("--backgrounds", args.backgrounds)):
                if value is not None:
                    command += [flag, str(value)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{method} at {size} px failed:\n{done.stderr[-3000:]}")
            rows.append((size, method, json.loads(done.stdout.strip().splitlines()[-1])))

    header = ["size", "method", *(label for _, label, _ in METRICS), "fg stage s/img", "disassembly s/img",
              "total s/img", "peak RSS MB", "GrabCut fallbacks"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, method, r in rows:
        cells = [f"{size}²", method, *(f"{r[key]:.4f}" if key in ("alpha_mse", "fg_l1") else f"{r[key]:.2f}"
                                      for key, _, _ in METRICS),
                 f"{r['stage_s']:.3f}", f"{r['decompose_s']:.3f}", f"{r['stage_s'] + r['decompose_s']:.3f}",
                 f"{r['peak_mb']:.0f}", str(r["fallbacks"])]
        print("| " + " | ".join(cells) + " |")
    print()
    for size in sizes:
        by = {m: r for s, m, r in rows if s == size}
        if {"classical", "layeringdiff"} <= set(by):
            c, learned = by["classical"], by["layeringdiff"]
            outcome: dict[str, list[str]] = {"better": [], "tied": [], "worse": []}
            for key, label, higher in METRICS:
                exact = key == "recomposition_psnr" and min(learned[key], c[key]) >= EXACT_RECOMPOSITION_DB
                if exact or learned[key] == c[key]:
                    outcome["tied"].append(label + (" (both exact to float32 rounding)" if exact else ""))
                else:
                    outcome["better" if (learned[key] > c[key]) == higher else "worse"].append(label)
            gain = learned["bg_psnr_occluded"] - c["bg_psnr_occluded"]
            parts = "; ".join(f"{k} on {len(v)}/{len(METRICS)} ({', '.join(v)})" for k, v in outcome.items() if v)
            print(f"- {size}²: learned {parts}; bg PSNR occluded {gain:+.2f} dB (target >= +3); learned total "
                  f"{learned['stage_s'] + learned['decompose_s']:.2f} s/img (target <= 1 s at 256²)")
    print_families(rows)
    where = "procedural backgrounds" if args.backgrounds is None else f"real backgrounds from {args.backgrounds}"
    counts = ", ".join(f"{r['count']} at {size}²" for size, r in {s: r for s, _, r in rows}.items())
    print(f"\nscenes: {counts}; seeds from {args.first_seed}, {where}; one CPU thread")


if __name__ == "__main__":
    main()
