"""A folder of photos -> a folder of PSDs: one ``lamina decompose`` process vs one call per photo.

Makes ``--count`` (default 50) photos of ``--size`` x ``--size`` px (default 512) from
scikit-image's bundled photographs (random square crops of astronaut, chelsea, coffee, rocket,
the motorcycles, ...; falls back to procedural scenes when scikit-image is missing), then runs,
side by side on the same photos and the same machine:

* **batch**: ``lamina decompose PHOTOS --out OUT`` (one process, the model loaded once);
* **separate**: ``lamina decompose PHOTO --out OUT/NAME.psd`` once per photo.

Both in automatic mode (no box: the salient object is found) with the built-in FBDD model and
the same options. Prints seconds per image (wall clock, including process start and imports)
and the peak resident memory (``/usr/bin/time -v`` when present, else ``resource`` of the
children), as a table::

    python benchmarks/bench_batch.py --count 50 --size 512 --threads 1
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "immunohistochemistry.png", "retina.jpg")


def make_photos(folder: Path, count: int, size: int, seed: int = 0) -> str:
    """Write ``count`` photos of ``size``^2 px into ``folder``; returns where they came from."""
    from lamina.io import write_png
    from lamina.tensors import resize_array

    rng = np.random.default_rng(seed)
    try:
        import skimage

        from lamina.io import read_rgb

        root = Path(skimage.__file__).parent / "data"
        sources = [read_rgb(root / name) for name in SKIMAGE_PHOTOS if (root / name).exists()]
        origin = f"scikit-image {skimage.__version__} photographs ({len(sources)})"
    except ImportError:
        sources, origin = [], "procedural scenes (scikit-image is not installed)"
    for i in range(count):
        if sources:
            photo = sources[i % len(sources)]
            side = int(min(photo.shape[:2]) * rng.uniform(0.7, 1.0))
            y, x = rng.integers(photo.shape[0] - side + 1), rng.integers(photo.shape[1] - side + 1)
            image = resize_array(photo[y:y + side, x:x + side], (size, size))
        else:
            from lamina.data import SCENE_PRESETS, generate_scene

            image = generate_scene(seed + i, SCENE_PRESETS["default"].with_size(size)).composite
        write_png(np.clip(image, 0, 1), folder / f"photo_{i:03d}.png")
    return origin


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """``(wall seconds, peak RSS in MB, return code)`` of one command."""
    start = time.perf_counter()
    if Path("/usr/bin/time").exists():
        result = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
        peak = int(match.group(1)) / 1024 if match else float("nan")
    else:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    if result.returncode not in (0, 1):
        print(result.stderr[-2000:], file=sys.stderr)
    return wall, peak, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="--threads of every lamina call")
    parser.add_argument("--separate", type=int, default=None,
                        help="run the one-call-per-photo side on only this many photos (default: all)")
    parser.add_argument("--work", default=None, help="folder for photos and outputs (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="lamina-bench-batch-"))
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    origin = make_photos(photos, args.count, args.size)
    env = dict(os.environ, LAMINA_PROGRESS="0", OMP_NUM_THREADS=str(args.threads))
    lamina = [sys.executable, "-m", "lamina", "decompose"]
    options = ["--threads", str(args.threads), "--device", "cpu"]

    batch_out = work / "batch"
    shutil.rmtree(batch_out, ignore_errors=True)
    batch_wall, batch_peak, batch_rc = timed([*lamina, str(photos), "--out", str(batch_out), *options], env)
    batch_done = len(list(batch_out.glob("*.psd")))

    separate_out = work / "separate"
    shutil.rmtree(separate_out, ignore_errors=True)
    separate_out.mkdir()
    files = sorted(photos.glob("*.png"))[:args.separate or args.count]
    walls, peaks, done = [], [], 0
    for path in files:
        wall, peak, rc = timed([*lamina, str(path), "--out", str(separate_out / f"{path.stem}.psd"), *options], env)
        walls.append(wall)
        peaks.append(peak)
        done += rc == 0

    print(f"\n{args.count} photos of {args.size}x{args.size} px from {origin}; lamina decompose, automatic mode, "
          f"built-in FBDD, --threads {args.threads}, CPU\n")
    print("| run | photos | PSDs written | total s | s / image | peak memory MB |")
    print("|---|---|---|---|---|---|")
    print(f"| one process (`lamina decompose DIR --out OUT`) | {args.count} | {batch_done} | {batch_wall:.1f} | "
          f"{batch_wall / args.count:.2f} | {batch_peak:.0f} |")
    print(f"| one call per photo (`lamina decompose PHOTO --out X.psd`) | {len(files)} | {done} | {sum(walls):.1f} | "
          f"{np.mean(walls):.2f} | {max(peaks):.0f} (each) |")
    print(f"\nspeed-up per image: {np.mean(walls) / (batch_wall / args.count):.2f}x; batch exit status {batch_rc}")


if __name__ == "__main__":
    main()
