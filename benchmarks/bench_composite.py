"""Compositing benchmark: lamina's exact "over" vs Pillow's ``Image.alpha_composite``.

Eight RGBA layers at 1024^2 over an opaque background, both libraries in the same process
on the same uint8 pixels. Prints a markdown table: time per full composite (median of
repeats), the ratio to Pillow (target <= 1.2), and agreement in uint8 LSB, against Pillow
and against an exact float64 reference (Pillow rounds to uint8 after every layer, so its
error accumulates; ours rounds once).

    python benchmarks/bench_composite.py [--size 1024] [--layers 8] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from lamina import Layer, LayeredImage


def soft_shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGBA uint8 layer of a few textured ellipses with soft edges and some partial alpha."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    alpha = np.zeros((size, size), np.float32)
    for _ in range(4):
        cx, cy, rx, ry = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
        d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
        edge = np.clip((1.0 - d) * size * min(rx, ry) / 4.0, 0.0, 1.0)  # ~4 px soft edge
        alpha = np.maximum(alpha, edge * rng.uniform(0.4, 1.0))
    rgb = rng.random(3, dtype=np.float32) * 0.6 + 0.4 * rng.random((size, size, 3), dtype=np.float32)
    return (np.dstack([rgb, alpha]) * 255).round().astype(np.uint8)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def exact_reference(bg: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
    """Float64 over, back to front, onto an opaque background; rounded once to uint8."""
    acc = bg[..., :3].astype(np.float64) / 255
    for layer in layers:
        a = layer[..., 3:4].astype(np.float64) / 255
        acc = acc * (1 - a) + layer[..., :3].astype(np.float64) / 255 * a
    return np.floor(acc * 255 + 0.5).astype(np.uint8)


def lsb_stats(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max()), float((diff <= 1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    bg = np.dstack([(rng.random((args.size, args.size, 3)) * 255).astype(np.uint8),
                    np.full((args.size, args.size), 255, np.uint8)])
    fgs = [soft_shapes(rng, args.size) for _ in range(args.layers)]

    pil_layers = [Image.fromarray(x, "RGBA") for x in [bg, *fgs]]

    def pillow() -> np.ndarray:
        out = pil_layers[0]
        for layer in pil_layers[1:]:
            out = Image.alpha_composite(out, layer)
        return np.asarray(out)

    image = LayeredImage(bg, [Layer(x, name=f"layer_{i}") for i, x in enumerate(fgs)])

    def from_uint8() -> np.ndarray:  # includes the uint8 -> float32 planar conversion of every layer
        return LayeredImage(bg, [Layer(x, name=f"layer_{i}") for i, x in enumerate(fgs)]).composite_uint8()

    threads = torch.get_num_threads()
    t_pil = median_seconds(pillow, args.repeats)
    t_ours = median_seconds(image.composite_uint8, args.repeats)
    t_conv = median_seconds(from_uint8, max(3, args.repeats // 3))
    torch.set_num_threads(1)  # Pillow's alpha_composite is single-threaded: compare like with like too
    t_one = median_seconds(image.composite_uint8, args.repeats)
    torch.set_num_threads(threads)

    exact = exact_reference(bg, fgs)
    ours, ref = image.composite_uint8()[..., :3], pillow()[..., :3]
    rows = [
        ("Pillow Image.alpha_composite (uint8)", t_pil, lsb_stats(ref, ref), lsb_stats(ref, exact)),
        (f"lamina LayeredImage.composite_uint8, {threads} threads", t_ours, lsb_stats(ours, ref),
         lsb_stats(ours, exact)),
        ("lamina LayeredImage.composite_uint8, 1 thread", t_one, lsb_stats(ours, ref), lsb_stats(ours, exact)),
        (f"lamina, incl. building layers from uint8, {threads} threads", t_conv, lsb_stats(ours, ref),
         lsb_stats(ours, exact)),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.layers} layers at {args.size}^2 over an opaque background; {os.cpu_count()} CPUs "
          f"({platform.machine()}), load average {load:.1f} at start\n")
    print("| implementation | ms / composite | ratio to Pillow | max LSB vs Pillow | <=1 LSB vs Pillow "
          "| max LSB vs exact | <=1 LSB vs exact |")
    print("|---|---|---|---|---|---|---|")
    for name, t, (d_pil, f_pil), (d_exact, f_exact) in rows:
        print(f"| {name} | {t * 1e3:.1f} | {t / t_pil:.2f}x | {d_pil} | {f_pil:.4%} | {d_exact} | {f_exact:.4%} |")
    verdict = "PASS" if min(t_ours, t_one) <= 1.2 * t_pil and lsb_stats(ours, exact)[0] <= 1 else "FAIL"
    print(f"\ntarget: time <= 1.2x Pillow and within 1 LSB of the exact result: {verdict}")


if __name__ == "__main__":
    main()
