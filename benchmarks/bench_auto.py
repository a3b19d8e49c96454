"""How good is ``lamina decompose`` without a hint (automatic mode)? Mask IoU against ground truth.

Held-out procedural scenes (seeds from 910,000,000, never used in training or tuning) and,
with ``--backgrounds skimage``, the same objects over crops of scikit-image's photographs
(real-photo composites, as in ``bench_decompose.py``). Rows, in the same process and on the
same scenes:

* ``auto`` -- the offline default: saliency box (:func:`lamina.layeringdiff.saliency.salient_boxes`)
  -> GrabCut -> trimap -> closed-form matting;
* ``auto box only`` -- the saliency box itself as the mask (how much GrabCut adds);
* ``true box`` -- the user's box (the scene's exact box) -> GrabCut -> matting: the baseline
  of ``--box``, i.e. the best the automatic box could lead to;
* ``centre box`` -- a fixed centred box covering the middle 60 %: the trivial baseline.

The two boxes lamina draws itself (``auto``, ``centre box``) run without the tight-box prior, as
``lamina decompose``'s automatic mode does (:func:`lamina.layeringdiff.foreground.without_tight_box`).

IoU is of the hard masks (alpha > 0.5) with the true object mask (object alpha > 0.5);
"found" counts IoU >= 0.5. Usage::

    python benchmarks/bench_auto.py --count 60 --size 256
    python benchmarks/bench_auto.py --count 60 --size 256 --backgrounds skimage
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
FIRST_SEED = 910_000_000


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--backgrounds", default=None, help="'skimage' or a folder: real-photo composites")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from lamina.data import SCENE_PRESETS, generate_scene
    from lamina.errors import LaminaError
    from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box, without_tight_box
    from lamina.layeringdiff.saliency import salient_boxes
    from lamina.layers import LayeredImage

    photos = None
    if args.backgrounds:
        from bench_decompose import photo_files, real_crop

        from lamina.io import read_rgb

        photos = [read_rgb(p) for p in photo_files(args.backgrounds)]
    config = SCENE_PRESETS["default"].with_size(args.size)
    fg_config = ForegroundConfig(effects=False)
    # As `lamina decompose` runs them: a box lamina draws (saliency, or the fixed centre) is not tight.
    configs = {"auto": without_tight_box(fg_config), "true box": fg_config, "centre box": without_tight_box(fg_config)}
    rows: dict[str, list[float]] = {"auto": [], "auto box only": [], "true box": [], "centre box": []}
    times: dict[str, list[float]] = {k: [] for k in rows}
    failures = {k: 0 for k in rows}
    s = args.size
    centre = (round(0.2 * s), round(0.2 * s), round(0.8 * s), round(0.8 * s))
    for i in range(args.count):
        scene = generate_scene(args.first_seed + i, config)
        if photos is None:
            composite = scene.composite
        else:
            background = real_crop(photos, args.first_seed + i, s)
            composite = LayeredImage.from_foreground(background, scene.foreground).composite()[:, :, :3]
        truth = scene.object_alpha > 0.5
        start = time.perf_counter()
        box = salient_boxes(composite)[0]
        box_s = time.perf_counter() - start
        box_mask = np.zeros_like(truth)
        box_mask[box[1]:box[3], box[0]:box[2]] = True
        rows["auto box only"].append(iou(box_mask, truth))
        times["auto box only"].append(box_s)
        for name, b in (("auto", box), ("true box", scene.box), ("centre box", centre)):
            start = time.perf_counter()
            try:
                mask = foreground_from_box(composite, b, configs[name]).alpha > 0.5
            except LaminaError:
                mask = np.zeros_like(truth)
                failures[name] += 1
            times[name].append(time.perf_counter() - start + (box_s if name == "auto" else 0.0))
            rows[name].append(iou(mask, truth))
    where = "procedural backgrounds" if photos is None else f"real-photo backgrounds ({args.backgrounds})"
    print(f"\n{args.count} held-out scenes at {s} px, {where}, seeds {args.first_seed}...\n")
    print("| objects found by | mean mask IoU | median IoU | found (IoU >= 0.5) | no mask | s / image |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        v = np.asarray(values)
        print(f"| {name} | {v.mean():.3f} | {np.median(v):.3f} | {(v >= 0.5).mean() * 100:.0f} % | "
              f"{failures[name]} | {np.mean(times[name]):.2f} |")


if __name__ == "__main__":
    main()
