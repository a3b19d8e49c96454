"""Procedural scene throughput: :func:`lamina.data.generate_scene` on one CPU core.

Targets: >= 1,000 scenes/s at 64x64 and >= 20 scenes/s at 512x512 (default preset).
Prints a markdown table: size, preset, scenes per CPU-second (best batch and mean), target,
pass/fail (on the best batch, as ``timeit`` does).

    python benchmarks/bench_synth.py [--seconds 3] [--preset default] [--all-presets]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from lamina.data import SCENE_PRESETS, generate_scene  # noqa: E402

#: (size, scenes per second to reach).
TARGETS = ((64, 1000.0), (512, 20.0))
#: Small scenes generated before timing, to fill the size-independent caches (outline tables),
#: then scenes at the timed size (spline matrices): the rates are for a long steady run.
WARMUP_SCENES, WARMUP_SIZE, WARMUP_SCENES_AT_SIZE = 3000, 32, 20


def scenes_per_second(preset: str, size: int, seconds: float, batches: int) -> tuple[float, float]:
    """Generate scenes with consecutive seeds for about ``seconds`` of CPU time, in ``batches``.

    Returns ``(best, mean)`` scenes per CPU-second: the fastest batch (as ``timeit`` reports)
    and the whole run. CPU time of this process, not wall time, so other processes on a
    shared machine slow the numbers down less.
    """
    config = SCENE_PRESETS[preset].with_size(size)
    for seed in range(WARMUP_SCENES):
        generate_scene(seed, config.with_size(WARMUP_SIZE))
    for seed in range(WARMUP_SCENES, WARMUP_SCENES + WARMUP_SCENES_AT_SIZE):
        generate_scene(seed, config)
    seed = WARMUP_SCENES + WARMUP_SCENES_AT_SIZE
    rates, total, count = [], 0.0, 0
    for _ in range(batches):
        n, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < seconds / batches:
            generate_scene(seed, config)
            seed += 1
            n += 1
        rates.append(n / elapsed)
        total, count = total + elapsed, count + n
    return max(rates), count / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="CPU seconds per row")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per row (best is reported)")
    parser.add_argument("--preset", default="default", choices=sorted(SCENE_PRESETS))
    parser.add_argument("--all-presets", action="store_true", help="also time the other presets (no target)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}\n")
    print("| size | preset | scenes/s (best batch) | scenes/s (mean) | target | result |")
    print("|---|---|---|---|---|---|")
    presets = sorted(SCENE_PRESETS) if args.all_presets else [args.preset]
    for size, target in TARGETS:
        for preset in presets:
            best, mean = scenes_per_second(preset, size, args.seconds, args.batches)
            if preset == args.preset:
                verdict = f"{target:g} | {'pass' if best >= target else 'FAIL'}"
            else:
                verdict = "- | -"
            print(f"| {size}x{size} | {preset} | {best:,.1f} | {mean:,.1f} | {verdict} |")


if __name__ == "__main__":
    main()
