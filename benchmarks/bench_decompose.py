"""LayeringDiff disassembly on held-out procedural scenes: learned (FBDD) vs classical, side by side.

Scenes: the ``default`` preset (one object, shadows and reflections in its layer) at 64 and
256 px, seeds from ``--first-seed`` (training uses seeds below 2e7 and the previews 2e9).
Both methods get the same foreground stage (the object's box -> GrabCut -> trimap ->
closed-form matting) and are scored with :func:`lamina.metrics.evaluate_layers` against the
exact ground truth: alpha SAD / MSE / gradient error of the foreground layer (object and
effects), alpha-weighted foreground L1, background PSNR inside the region the ground-truth
layer covers, recomposition PSNR; seconds per image of the foreground stage and of the
disassembly (wall clock, one thread); peak resident memory of each run (a fresh process per
method and size, so imports count: about 0.4 GB of it is torch).

Targets (issue 4): learned beats classical on every quality metric, background PSNR by
>= 3 dB, <= 1 s per 256 px image (foreground stage + disassembly).

    python benchmarks/bench_decompose.py [--count64 40] [--count256 16] [--model PATH] [--steps N]
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


def run_one(method: str, size: int, count: int, first_seed: int, model: str | None, steps: int | None,
            window: float | None, effects_floor: float | None) -> dict:
    """Decompose ``count`` scenes with one method in this process; mean metrics and timings."""
    import torch

    torch.set_num_threads(1)
    from lamina.data import SCENE_PRESETS, generate_scene
    from lamina.layeringdiff.decompose import make_decomposer
    from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box
    from lamina.layers import LayeredImage
    from lamina.metrics import evaluate_layers

    options: dict = {}
    if method == "layeringdiff":
        options = {k: v for k, v in (("num_inference_steps", steps), ("window", window),
                                     ("effects_floor", effects_floor)) if v is not None}
    decomposer = make_decomposer(method, model, **options)
    config = SCENE_PRESETS["default"].with_size(size)
    sums: dict[str, list[float]] = {key: [] for key, _, _ in METRICS}
    stage_s, decompose_s = [], []
    for i in range(count + 1):  # the first scene warms up (JIT of pymatting, first UNet call)
        scene = generate_scene(first_seed + i, config)
        truth = LayeredImage.from_foreground(scene.background, scene.foreground)
        start = time.perf_counter()
        estimate = foreground_from_box(scene.composite, scene.box, ForegroundConfig())
        middle = time.perf_counter()
        part = decomposer.decompose(scene.composite, estimate.alpha, estimate.effects_region)
        end = time.perf_counter()
        if i == 0:
            continue
        stage_s.append(middle - start)
        decompose_s.append(end - middle)
        scores = evaluate_layers(part.to_layered(), truth)
        for key, _, _ in METRICS:
            if math.isfinite(scores[key]):
                sums[key].append(scores[key])
    out = {key: float(np.mean(v)) for key, v in sums.items()}
    out.update(stage_s=float(np.mean(stage_s)), decompose_s=float(np.mean(decompose_s)),
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, count=count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count64", type=int, default=40)
    parser.add_argument("--count256", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--model", default=None, help="FBDD model folder (default: the built-in one)")
    parser.add_argument("--steps", type=int, default=None, help="FBDD denoising steps (default: the decomposer's)")
    parser.add_argument("--window", type=float, default=None, help="FBDD window / object box side")
    parser.add_argument("--effects-floor", type=float, default=None, help="FBDD: least effect opacity kept")
    parser.add_argument("--methods", default="classical,layeringdiff")
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one method at one size, JSON on stdout
        method, size = args.one[0], int(args.one[1])
        count = args.count64 if size <= 64 else args.count256
        print(json.dumps(run_one(method, size, count, args.first_seed, args.model, args.steps, args.window,
                                 args.effects_floor)))
        return

    rows = []
    sizes = [int(v) for v in args.sizes.split(",")]
    for size in sizes:
        for method in args.methods.split(","):
            command = [sys.executable, __file__, "--one", method, str(size), "--count64", str(args.count64),
                       "--count256", str(args.count256), "--first-seed", str(args.first_seed)]
            for flag, value in (("--model", args.model), ("--steps", args.steps), ("--window", args.window),
                                ("--effects-floor", args.effects_floor)):
                if value is not None:
                    command += [flag, str(value)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{method} at {size} px failed:\n{done.stderr[-3000:]}")
            rows.append((size, method, json.loads(done.stdout.strip().splitlines()[-1])))

    header = ["size", "method", *(label for _, label, _ in METRICS), "fg stage s/img", "disassembly s/img",
              "total s/img", "peak RSS MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, method, r in rows:
        cells = [f"{size}²", method, *(f"{r[key]:.4f}" if key in ("alpha_mse", "fg_l1") else f"{r[key]:.2f}"
                                      for key, _, _ in METRICS),
                 f"{r['stage_s']:.3f}", f"{r['decompose_s']:.3f}", f"{r['stage_s'] + r['decompose_s']:.3f}",
                 f"{r['peak_mb']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print()
    for size in sizes:
        by = {m: r for s, m, r in rows if s == size}
        if {"classical", "layeringdiff"} <= set(by):
            c, learned = by["classical"], by["layeringdiff"]
            wins = [label for key, label, higher in METRICS
                    if (learned[key] > c[key]) == higher and learned[key] != c[key]]
            gain = learned["bg_psnr_occluded"] - c["bg_psnr_occluded"]
            print(f"- {size}²: learned better on {len(wins)}/{len(METRICS)} quality metrics ({', '.join(wins)}); "
                  f"bg PSNR occluded {gain:+.2f} dB (target >= +3); learned total "
                  f"{learned['stage_s'] + learned['decompose_s']:.2f} s/img (target <= 1 s at 256²)")
    print(f"\n{rows[0][2]['count']} scenes at 64², {rows[-1][2]['count']} at 256², seeds from {args.first_seed}; "
          "one CPU thread")


if __name__ == "__main__":
    main()
