"""BFS layered synthesis on held-out procedural scenes, against two baselines run in the same process.

Cases (seeds from 9e8; training uses seeds far below and the previews 2e9), at the model's
resolution: ``single`` (one object per scene), ``multi`` (2-4 objects placed back to front: each
layer is generated over the composite so far) and ``photo`` (the procedural objects' boxes and
captions over random crops of scikit-image's photographs, when scikit-image is installed); and at
``--small-size`` px (default 4x the model's resolution: 256 px): ``small`` and ``small-photo``
(``--small N``), one object a quarter of the size the model was trained on (a box of 8 to 17 % of
the image's side, as on a user's photo), over procedural backgrounds and over the photographs.

Methods, each given the background, the object's box and its caption, each returning a
straight-alpha layer:

* ``bfs``: the BFS model (``--model``, default the built-in), with its own sampling window (the model's
  ``box_share``; ``--box-share`` sets it).
* ``bfs-whole``, ``bfs-window``: the same model over the whole background at its resolution (as the paper
  samples), or in a window around the box (:meth:`~lamina.bfs.pipeline.BFSPipeline.sampling_window`).
* ``paste``: baseline (a), the **exact** object without its shadows/reflections (an oracle cut-out:
  what a perfect cut-out tool gives; its object IoU is an upper bound, its effects IoU is 0).
* ``bfs-cutout``: an ablation of (a) with a non-oracle object, BFS's own layer with its predicted effects
  removed (alpha 0 on the dark soft pixels that the effects IoU counts): the same object, pasted without its
  shadows and reflections; its FID against ``bfs`` shows what the effects add to the composite.
* ``gen+decompose``: baseline (b), generate-then-disassemble: the same base transformer used as a plain
  Fill model (the joint adapter off; its composite branch decoded with the RGB VAE), then LayeringDiff's
  built-in decomposer (FBDD) given the box. The decomposer completes its own background, so its
  ``bg change`` is measured on that background.

Metrics (:mod:`lamina.metrics.synthesis`): total / object / effects IoU against the exact layer
(predicted effects = dark soft-alpha pixels, i.e. mostly shadows), alpha SAD (/1000), the largest
background change where alpha is 0 (BFS and paste: must be exactly 0), composite FID/KID against
the ground-truth composites with lamina's local random-conv features (relative only; few images),
(on the small sets: over squares twice the object's box across around it, at the model's resolution),
the share of "with a shadow" captions whose layer has a shadow touching the object, the share of layers whose
object's median colour is nearest to the caption's colour among the 12 named colours (the ``paste`` row is
the exact objects' score, the ceiling), and seconds per layer (one thread, wall clock).

    python benchmarks/bench_bfs.py [--single 24] [--multi 8] [--photo 12] [--small 0] [--model builtin] [--steps N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

COLUMNS = (("total_iou", "total IoU"), ("object_iou", "object IoU"), ("effects_iou", "effects IoU"),
           ("alpha_sad", "alpha SAD"), ("background_change", "bg change"), ("fid", "FID (local)"),
           ("kid", "KID x1e3"), ("shadow_hit", "shadow hit"), ("colour_hit", "colour hit"),
           ("sec_per_layer", "s / layer"))


#: gen+decompose layers for which GrabCut found no object in the generated composite (an empty layer is scored).
FAILURES = [0]


def gen_decompose_method(pipe, decomposer, steps, seed):
    """Baseline (b): the BFS transformer as a plain Fill model (joint off) -> composite -> LayeringDiff."""
    import torch

    from lamina.errors import LaminaError
    from lamina.layeringdiff import decompose_image

    counter = iter(range(10**9))

    def method(background, box, caption):
        pipe.joint.enabled = False
        try:
            out = pipe(background=background, box=box, prompt=caption, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed + next(counter)), return_composite=True)
        finally:
            pipe.joint.enabled = True
        # The hidden "bfs composite" preview layer (opaque over the sampling window) over the background.
        composite = out.composite(include_hidden=True)[:, :, :3]
        try:
            layered = decompose_image(composite, box=box, decomposer=decomposer)
        except LaminaError:  # GrabCut finds no object in the generated box: no layer, the composite as background
            FAILURES[0] += 1
            return np.zeros(composite.shape[:2] + (4,), np.float32), composite
        layer = layered.canvas(0) if hasattr(layered, "canvas") else layered.layers[0].pixels
        return layer, layered.background.rgb

    return method


def cutout_method(bfs):
    """Ablation: BFS's layer with its predicted effects region made transparent (the object alone)."""
    from lamina.metrics.synthesis import predicted_regions

    def method(background, box, caption):
        layer, produced = bfs(background, box, caption)
        layer = layer.copy()
        layer[predicted_regions(layer)["effects"], 3] = 0.0
        return layer, produced

    return method


def paste_method(layers):
    """Baseline (a): the exact objects without effects, handed out in the order evaluate_method asks for them."""
    remaining = iter(layers)

    def method(background, box, caption):
        return next(remaining)

    return method


def around_objects(images, cases, size):
    """Each image cut to a square twice its case's (first) object's box across, centred on it, resized to ``size``:
    on a large canvas the composite FID then compares the objects and their surroundings, not the background."""
    import torch
    import torch.nn.functional as nnf

    out = []
    for image, case in zip(images, cases, strict=True):
        x0, y0, x1, y1 = case.targets[0].box
        h, w = image.shape[:2]
        side = min(2 * max(x1 - x0, y1 - y0), h, w)
        left = min(max((x0 + x1 - side) // 2, 0), w - side)
        top = min(max((y0 + y1 - side) // 2, 0), h - side)
        crop = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side])).permute(2, 0, 1)[None]
        crop = nnf.interpolate(crop.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(crop[0].permute(1, 2, 0).clamp(0, 1).numpy())
    return out


def run(method, cases, resolution):
    from lamina.bfs.evaluate import evaluate_method
    from lamina.metrics import RandomConvFeatures, fid_kid

    kept = []
    result = evaluate_method(method, cases, keep=kept)
    real = [np.ascontiguousarray(case.composite()) for case in cases]
    fake = [np.ascontiguousarray(layered.composite()[:, :, :3]) for layered in kept]
    if cases and max(cases[0].background.shape[:2]) > resolution:  # the small sets: FID around the object
        real, fake = around_objects(real, cases, resolution), around_objects(fake, cases, resolution)
    if len(real) >= 2:
        scores = fid_kid(real, fake, feature=RandomConvFeatures(), kid_subsets=20)
        result["fid"], result["kid"] = scores["fid"], scores["kid_mean"] * 1e3
    return result


def main() -> None:
    import torch

    from lamina.bfs.data import _photo_backgrounds
    from lamina.bfs.evaluate import HELD_OUT_SEED, SMALL_CANVAS, bfs_method, held_out_cases, object_only
    from lamina.bfs.train import load_model
    from lamina.layeringdiff import make_decomposer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=24)
    parser.add_argument("--multi", type=int, default=8)
    parser.add_argument("--photo", type=int, default=12)
    parser.add_argument("--small", type=int, default=0, help="cases of each small set (small, small-photo)")
    parser.add_argument("--small-size", type=int, default=None,
                        help="canvas of the small sets, px (default: 4x the model's resolution)")
    parser.add_argument("--box-share", type=float, default=None,
                        help="the model's sampling window: its box_share (default: the model's own)")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--steps", type=int, default=None, help="BFS sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="BFS guidance scale (true CFG for the built-in; default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases-seed", type=int, default=None,
                        help="first scene seed (default: the held-out test seeds, 9e8; choose settings on others)")
    parser.add_argument("--methods", default="bfs,bfs-cutout,paste,gen+decompose")
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = load_model(args.model)
    pipe.set_progress_bar_config(disable=True)
    if args.box_share is not None:
        pipe.register_to_config(box_share=args.box_share)
    resolution = int(pipe.config.resolution)
    decomposer = make_decomposer("layeringdiff", seed=args.seed) if "gen+decompose" in args.methods else None
    photos = _photo_backgrounds()
    first = HELD_OUT_SEED if args.cases_seed is None else args.cases_seed
    sets = [("single", held_out_cases(args.single, resolution, "single", seed=first)),
            ("multi", held_out_cases(args.multi, resolution, "multi", seed=first))]
    if photos and args.photo:
        sets.append(("photo", held_out_cases(args.photo, resolution, "single", seed=first, photos=photos)))
    elif args.photo:
        print("(scikit-image is not installed: no photo backgrounds)")
    if args.small:
        small_size = args.small_size or SMALL_CANVAS * resolution
        sets.append(("small", held_out_cases(args.small, small_size, "small", seed=first)))
        if photos:
            sets.append(("small-photo", held_out_cases(args.small, small_size, "small", seed=first, photos=photos)))
    sets = [(name, cases) for name, cases in sets if cases]

    print(f"model {args.model} at {resolution} px, steps {args.steps or pipe.config.inference_steps}, "
          f"guidance {args.guidance if args.guidance is not None else pipe.config.guidance_scale}, "
          f"box share {pipe.config.get('box_share')}, "
          f"seed {args.seed}, scenes from seed {first}; {', '.join(f'{n} {len(c)}' for n, c in sets)} case(s)\n")
    print("| cases | method | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, cases in sets:
        for method_name in args.methods.split(","):
            sampler = {"steps": args.steps, "seed": args.seed, "guidance_scale": args.guidance}
            if method_name in ("bfs", "bfs-whole", "bfs-window"):
                crop = {"bfs": None, "bfs-whole": False, "bfs-window": True}[method_name]
                method = bfs_method(pipe, **sampler, crop=crop)
            elif method_name == "bfs-cutout":
                method = cutout_method(bfs_method(pipe, **sampler))
            elif method_name == "paste":
                method = paste_method([object_only(t) for case in cases for t in case.targets])
            elif method_name == "gen+decompose":
                method = gen_decompose_method(pipe, decomposer, args.steps, args.seed)
            else:
                raise SystemExit(f"unknown method {method_name!r}")
            start = time.time()
            result = run(method, cases, resolution)
            cells = []
            for key, _ in COLUMNS:
                value = result.get(key, math.nan)
                cells.append("n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}")
            elapsed = time.time() - start
            if method_name == "gen+decompose" and FAILURES[0]:
                cells[-1] += f" ({FAILURES[0]} empty)"
                FAILURES[0] = 0
            print(f"| {name} | {method_name} | " + " | ".join(cells) + f" |  ({elapsed:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
