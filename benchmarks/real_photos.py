"""Real photographs decomposed by both LayeringDiff paths, for looking at: a contact sheet and a table.

Photographs the models never saw (scikit-image's bundled ``coffee`` and ``rocket``, with a
hand-drawn box around the object) are decomposed by the classical path and by the built-in
FBDD, one row each (background | foreground layer over a checkerboard | composite). There is
no ground truth for a photo; the table gives what can be measured without one: the
recomposition PSNR (must be high: the layers reproduce the photo) and how much the two
backgrounds differ under the object. The quantitative real-background check with exact
ground truth is ``bench_decompose.py --backgrounds skimage``.

    python benchmarks/real_photos.py --out docs/real_photos.png

``--cutout-model builtin|DIR|none`` sets the cut-out refiner after GrabCut, as ``lamina decompose``'s
option of that name does (default: lamina's default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

#: (file in scikit-image's data folder, object box x0,y0,x1,y1).
PHOTOS = (("coffee.png", (168, 12, 428, 332)), ("rocket.jpg", (288, 122, 364, 412)))


def main() -> None:
    import skimage
    import torch

    from lamina.io import read_rgb, save_contact_sheet
    from lamina.layeringdiff import decompose_image
    from lamina.layeringdiff.foreground import ForegroundConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/real_photos.png"))
    parser.add_argument("--cutout-model", default=None, help="builtin, a refiner's folder, or none")
    args = parser.parse_args()
    config = ForegroundConfig() if args.cutout_model is None else ForegroundConfig(
        refiner=None if args.cutout_model == "none" else args.cutout_model)
    torch.set_num_threads(1)
    root = Path(skimage.__file__).parent / "data"
    rows = []
    print("| photo | size | method | recomposition PSNR dB | mean abs. bg difference under the object | s |")
    print("|---|---|---|---|---|---|")
    for name, box in PHOTOS:
        image = read_rgb(root / name)
        backgrounds = {}
        for method in ("classical", "layeringdiff"):
            start = time.perf_counter()
            layered = decompose_image(image, box=box, method=method, config=config)
            seconds = time.perf_counter() - start
            layered.metadata["title"] = f"{name} {method}"
            rows.append(layered)
            backgrounds[method] = layered.background.rgb
            print(f"| {name} | {image.shape[1]}x{image.shape[0]} | {method} | "
                  f"{layered.metadata['recomposition_psnr']:.1f} | - | {seconds:.2f} |")
        x0, y0, x1, y1 = box
        under = np.abs(backgrounds["classical"] - backgrounds["layeringdiff"])[y0:y1, x0:x1].mean()
        print(f"| {name} | | classical vs layeringdiff | | {under:.4f} | |")
    save_contact_sheet(rows, args.out, tile=256, overwrite=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
