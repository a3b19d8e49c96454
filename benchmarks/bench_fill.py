"""Hole filling on real photographs, alone: Telea against content-aware fills, with the true hole.

Each scene of :mod:`bench_photos` (its validation split by default) gives a real background and
the exact footprint of the object and its effects (layer alpha > 0.01, grown by 1/100 of the
image, as the classical path grows its hole). Every fill completes the same hole of the same
true background, so only the fill differs; scored by PSNR and the local-feature error
(:class:`lamina.metrics.background.LocalFeatureDistance`) inside the hole, and seconds per
image (one thread). Fills whose library is missing are listed as such:

* ``telea``: OpenCV's ``cv2.inpaint`` (Telea 2004), lamina's fill until 2026-12-06;
* ``shiftmap``, ``fsr_fast``, ``fsr_best``: OpenCV contrib's ``cv2.xphoto.inpaint``
  (``opencv-contrib-python-headless``, which replaces ``opencv-python-headless`` in a venv);
* ``patchmatch``: ``pypatchmatch`` (PyPI; a prebuilt PatchMatch library, MIT);
* ``oriented``, ``harmonic``, ``ns``: lamina's :func:`~lamina.layeringdiff.classical.inpaint_background`
  methods (``oriented``: :func:`~lamina.layeringdiff.classical.oriented_fill`, the default since 2026-12-08;
  ``harmonic``: :func:`~lamina.layeringdiff.classical.harmonic_fill`, the default from 2026-12-06).

    python benchmarks/bench_fill.py [--split validation] [--count 12] [--sizes 256,512] [--fills telea,...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_photos import FIRST_SEED, load_photos, photo_scene  # noqa: E402


def _u8(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))


def external_fill(name: str):
    """A fill ``(image [H, W, 3] float, hole [H, W] bool) -> float image`` from a third-party library, or None."""
    import cv2

    if name in ("shiftmap", "fsr_fast", "fsr_best"):
        if not hasattr(cv2, "xphoto"):
            return None
        flag = {"shiftmap": cv2.xphoto.INPAINT_SHIFTMAP, "fsr_fast": cv2.xphoto.INPAINT_FSR_FAST,
                "fsr_best": cv2.xphoto.INPAINT_FSR_BEST}[name]

        def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
            src = _u8(image)
            if name == "shiftmap":  # ShiftMap works in Lab (as OpenCV's own sample does)
                src = cv2.cvtColor(src, cv2.COLOR_RGB2Lab)
            dst = np.zeros_like(src)
            cv2.xphoto.inpaint(src, np.where(hole, 0, 255).astype(np.uint8), dst, flag)  # mask: non-zero = known
            if name == "shiftmap":
                dst = cv2.cvtColor(dst, cv2.COLOR_Lab2RGB)
            return np.where(hole[:, :, None], dst.astype(np.float32) / 255.0, image)

        return fill
    if name == "patchmatch":
        try:
            from patchmatch import patch_match
        except ImportError:
            return None

        def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
            patch_match.set_random_seed(0)
            out = patch_match.inpaint(_u8(image), hole.astype(np.uint8) * 255, patch_size=5)
            return np.where(hole[:, :, None], out.astype(np.float32) / 255.0, image)

        return fill
    return None


def lamina_fill(name: str):
    from lamina.layeringdiff import classical

    if name == "telea":
        return lambda image, hole: classical.inpaint_background(image, hole, "telea", max(3, min(hole.shape) // 64))
    if name in classical.INPAINT_METHODS:
        return lambda image, hole: classical.inpaint_background(image, hole, name, max(3, min(hole.shape) // 64))
    return None


def main() -> None:
    import torch
    from scipy import ndimage

    from lamina.metrics import psnr
    from lamina.metrics.background import LocalFeatureDistance

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--fills", default="telea,harmonic,oriented,shiftmap,fsr_fast,patchmatch")
    parser.add_argument("--wallpapers", default="/usr/share/backgrounds")
    args = parser.parse_args()
    photos, names = load_photos(args.split, args.wallpapers)
    perceptual = LocalFeatureDistance()
    print("| size | fill | bg PSNR in hole dB | local-feature err. | s/img |")
    print("|---|---|---|---|---|")
    for size in (int(v) for v in args.sizes.split(",")):
        scenes = [photo_scene(FIRST_SEED[args.split] + i, size, photos) for i in range(1, args.count + 1)]
        for name in args.fills.split(","):
            fill = lamina_fill(name) or external_fill(name)
            if fill is None:
                print(f"| {size}² | {name} | not installed | | |")
                continue
            scores, errors, seconds = [], [], []
            for s in scenes:
                covered = s["layer"][:, :, 3] > 0.01
                hole = ndimage.binary_dilation(covered, iterations=max(1, size // 100))
                start = time.perf_counter()
                out = fill(s["composite"], hole)
                seconds.append(time.perf_counter() - start)
                scores.append(psnr(out, s["background"], covered))
                errors.append(perceptual(out, s["background"], covered))
            print(f"| {size}² | {name} | {np.mean(scores):.2f} | {np.mean(errors):.4f} | {np.mean(seconds):.3f} |",
                  flush=True)
    print(f"\nsplit: {args.split} ({len(names)} photographs); {args.count} scenes per size; one CPU thread")


if __name__ == "__main__":
    main()
