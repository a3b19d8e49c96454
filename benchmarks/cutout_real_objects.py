"""Real objects cut out from a box: GrabCut alone and with the built-in cut-out refiner, for looking at.

Objects in the photo benchmark's *validation* photographs (Debian's lomiri wallpapers ``Kleiber``,
``friends`` and ``Wine``, decoded at 640 px on the long side), each with a hand-drawn box. Each row:
the photo around the box, then the cut-out over green for GrabCut alone and for the refiner
(``ForegroundConfig(refiner="builtin")``) with its defaults, without the second GrabCut pass
(``refiner_grabcut=None``), and so at the threshold 0.3. No ground truth: this is the check on real
objects in real photographs that composites cannot give.

    python benchmarks/cutout_real_objects.py --wallpapers FOLDER --out docs/cutout_real_objects.png

``--refiner DIR`` puts another refiner (a training run's ``export/``) in the refiner's columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: (photo stem, box x0, y0, x1, y1 at 640 px on the long side).
CASES = (("Kleiber_by_Lukas_Baubkus", (250, 122, 348, 240)), ("friends_by_Aitzol_Berasategi", (125, 145, 225, 262)),
         ("friends_by_Aitzol_Berasategi", (195, 283, 290, 425)), ("Wine_by_Jakkub_Mede", (192, 75, 230, 215)),
         ("Wine_by_Jakkub_Mede", (10, 310, 272, 480)))
#: Columns after the photo: (label, ForegroundConfig options).
VARIANTS = (("GrabCut", {"refiner": None}), ("refiner", {"refiner": "builtin"}),
            ("refiner, no second GrabCut", {"refiner": "builtin", "refiner_grabcut": None}),
            ("refiner, no second GrabCut, t=0.3", {"refiner": "builtin", "refiner_grabcut": None,
                                                   "refiner_threshold": 0.3}))
ROW_HEIGHT = 170


def main() -> None:
    from PIL import Image

    from lamina.layeringdiff.foreground import ForegroundConfig, foreground_from_box

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wallpapers", default="/usr/share/backgrounds")
    parser.add_argument("--out", type=Path, default=Path("docs/cutout_real_objects.png"))
    parser.add_argument("--refiner", default="builtin", help="the refiner columns' refiner (builtin or a folder)")
    args = parser.parse_args()
    rows = []
    for stem, box in CASES:
        with Image.open(next(Path(args.wallpapers).glob(stem + ".*"))) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((640, 640))
            image = np.asarray(photo, np.float32) / 255.0
        x0, y0, x1, y1 = box
        ys, xs = slice(max(0, y0 - 8), y1 + 8), slice(max(0, x0 - 8), x1 + 8)
        tiles = [image[ys, xs]]
        for _, options in VARIANTS:
            options = options | ({"refiner": args.refiner} if options["refiner"] else {})
            alpha = foreground_from_box(image, box, ForegroundConfig(effects=False, **options)).alpha[ys, xs, None]
            tiles.append(alpha * image[ys, xs] + (1.0 - alpha) * np.array([0.0, 1.0, 0.0], np.float32))
        row = Image.fromarray((np.concatenate(tiles, 1) * 255).round().astype(np.uint8))
        rows.append(row.resize((round(row.width * ROW_HEIGHT / row.height), ROW_HEIGHT)))
    sheet = Image.new("RGB", (max(r.width for r in rows), ROW_HEIGHT * len(rows)), "white")
    for i, row in enumerate(rows):
        sheet.paste(row, (0, ROW_HEIGHT * i))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"columns: photo, {', '.join(label for label, _ in VARIANTS)}; wrote {args.out}")


if __name__ == "__main__":
    main()
