"""BFS models side by side on held-out scenes, for looking at: one PNG contact sheet.

Each row is one held-out case (``bench_bfs``'s single-object scenes, then its photo backgrounds): the
background, the exact layer (with its shadow or reflection), each model's layer for the same box and
caption (hidden in the file, so the composite tile shows the last model's), and that composite. It
makes ``docs/bfs_builtin.png``:

    python benchmarks/bfs_sheet.py --models OLD_EXPORT,builtin --names "previous built-in,built-in now" \\
        --single 6 --photo 2 --out docs/bfs_builtin.png

and, with ``--small`` scenes (a small box on a 256 px photograph) and ``--whole`` (each model also over the
whole background scaled to its resolution, before its own sampling window), ``docs/bfs_window.png``:

    python benchmarks/bfs_sheet.py --single 0 --photo 0 --small 4 --whole --names built-in --tile 256 \\
        --out docs/bfs_window.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="builtin", help="comma-separated: builtin, RUN/export or a folder")
    parser.add_argument("--names", default=None, help="comma-separated labels (default: the model paths)")
    parser.add_argument("--single", type=int, default=6, help="single-object test scenes")
    parser.add_argument("--photo", type=int, default=2, help="scenes over scikit-image photographs")
    parser.add_argument("--small", type=int, default=0, help="small boxes on 256 px crops of the photographs")
    parser.add_argument("--whole", action="store_true",
                        help="each model also over the whole background (crop=False), before its own window")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: each model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    from lamina.bfs.data import _photo_backgrounds
    from lamina.bfs.evaluate import HELD_OUT_SEED, bfs_method, held_out_cases
    from lamina.bfs.train import load_model
    from lamina.io.preview import save_contact_sheet
    from lamina.layers import Layer, LayeredImage

    torch.set_num_threads(1)
    models = args.models.split(",")
    names = args.names.split(",") if args.names else models
    if len(names) != len(models):
        parser.error(f"--names gives {len(names)} labels for {len(models)} models")
    pipes = [load_model(model) for model in models]
    resolution = int(pipes[0].config.resolution)
    cases = held_out_cases(args.single, resolution, "single")
    photos = _photo_backgrounds()
    if photos and args.photo:
        cases += held_out_cases(args.photo, resolution, "single", seed=HELD_OUT_SEED, photos=photos)
    if photos and args.small:
        cases += held_out_cases(args.small, 256, "small", seed=HELD_OUT_SEED, photos=photos)
    rows = []
    for case in cases:
        target = case.targets[0]
        layers = [Layer(target.layer, name=f"exact: {target.caption}", visible=False)]
        for k, (pipe, name) in enumerate(zip(pipes, names, strict=True)):
            for crop in (False, None) if args.whole else (None,):
                method = bfs_method(pipe, seed=args.seed, guidance_scale=args.guidance, crop=crop)
                layer, _ = method(case.background, target.box, target.caption)
                label = f"{name}, whole background" if crop is False else name
                layers.append(Layer(layer, name=label, visible=k == len(pipes) - 1 and crop is None))
        rows.append(LayeredImage(case.background, layers))
    print(save_contact_sheet(rows, args.out, tile=args.tile, overwrite=True))


if __name__ == "__main__":
    main()
