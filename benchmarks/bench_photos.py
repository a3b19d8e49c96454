"""LayeringDiff on real photographs with exact ground truth: today's classical path, the new one, the learned one.

Scenes (:func:`photo_scene`): a random square crop of a real photograph is the background;
the foreground is a procedural object of the ``default`` scene preset (soft and furry edges,
glassy parts, cast and drop shadows, reflections: exact alpha) whose colour is replaced by a
crop of *another* real photograph (real texture inside an exact shape), and, in half of the
scenes, a thin anti-aliased handle (a ring 1.5 to 3 px thick at 256 px) attached to its side.
The ground-truth layers are that background and that layer, and the composite is exactly
one over the other. The object is given as its box grown by 4 % of its size on each side (a
user's loose box), so every method runs its whole chain: box -> cut-out -> layers.

Photographs, split once by file name (never changed after seeing results):

* **validation** (used to choose settings): scikit-image's ``astronaut``, ``chelsea``,
  ``motorcycle_left``, ``brick``, ``grass`` and Debian's ``lomiri-wallpapers-16.04/-20.04``
  photographs ``Bridge``, ``Kleiber``, ``Wine``, ``aitzgorri``, ``seeding``, ``friends``;
* **test** (held out: only scored, after every choice was made): scikit-image's ``coffee``,
  ``rocket``, ``motorcycle_right``, ``gravel`` and Debian's ``Dragonfly``, ``Picture_0B``,
  ``Picture_1A``, ``life``, ``picosdeeuropa``, ``sunset``, ``greentock``.

The Debian photographs (CC-BY-4.0 / CC-BY-SA-4.0 / CC0, authors in
``/usr/share/doc/lomiri-wallpapers*/copyright``) are found in ``--wallpapers`` (default
``/usr/share/backgrounds``); get them without root with::

    apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
    for f in lomiri-wallpapers-*.deb; do dpkg -x $f /tmp/wallpapers-root; done
    python benchmarks/bench_photos.py --wallpapers /tmp/wallpapers-root/usr/share/backgrounds

Missing photographs are skipped (the table says how many of each split were found).

**Real objects** (``--objects FOLDER``): the foreground is instead a real object's cut-out with its
true alpha (:func:`lamina.data.photo_scenes.object_scene`: scaled to 30-70 % of the side, placed at
random, in half of the scenes over a cast shadow made from its silhouette, which belongs to its
layer), from a folder of RGBA cut-outs split by file name (:class:`~lamina.data.photo_scenes.ObjectFolder`:
this split's share, never the ``train`` share a model may learn from). The photographic stamps of
Debian's ``tuxpaint-stamps-default`` (GPL-2, Bill Kendrick and contributors), without its ``symbols``
folder (letters and signs)::

    apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb /tmp/tuxpaint-root
    mkdir /tmp/objects && for d in /tmp/tuxpaint-root/usr/share/tuxpaint/stamps/*/; do
        [ "$(basename $d)" = symbols ] || ln -s $d /tmp/objects/; done
    python benchmarks/bench_photos.py --objects /tmp/objects --wallpapers ...

Methods (``--methods``), each in a fresh process per size (peak memory counts its imports):

* ``telea``: today's classical path, its settings frozen here (:data:`TODAY_FOREGROUND`,
  :data:`TODAY_CLASSICAL`): GrabCut, a trimap 1/80 of the image wide, closed-form matting,
  Telea inpainting of the object's hole grown by 1/100 of the image, effects by difference;
* ``classical``: the classical path with lamina's current defaults;
* ``layeringdiff``: the learned path (built-in FBDD) with lamina's current defaults;
* ``layeringdiff-today``: the learned path with today's foreground stage and Telea prefill
  (``lamina.layeringdiff.fbdd.PREFILL_FILL``);
* ``classical-refiner`` / ``layeringdiff-refiner``: the two paths with the built-in learned cut-out
  refiner after GrabCut (``ForegroundConfig(refiner="builtin")``, :mod:`lamina.layeringdiff.cutout`), or
  the one ``--refiner DIR`` names; ``classical-grabcut`` / ``layeringdiff-grabcut``: GrabCut's mask as
  it is (``ForegroundConfig(refiner=None)``, lamina's default before 2026-12-07's fifth session);
* ``layeringdiff-1206``: the learned path as of 2026-12-06 (no mirror average; ``--model-1206`` names
  that day's built-in model when the built-in model has changed since);
* reference rows with the **true object alpha** instead of the box's cut-out (the foreground
  stage given the true object mask's effects region): ``classical-truealpha`` and
  ``layeringdiff-truealpha``; and ``fill-truehole``: the true layer's alpha (object and effects)
  with the background harmonic-filled in the true layer's footprint, i.e. a perfect cut-out and a
  fill that cannot contain anything of the object: the floor of the ghost metric for a smooth fill.

Metrics (means over the scenes): alpha SAD / MSE / gradient of the foreground layer (object
and effects, :func:`lamina.metrics.evaluate_layers`), background PSNR where the true layer
covers it, a local-feature perceptual error of the background there
(:class:`lamina.metrics.background.LocalFeatureDistance`, lower is better), the ghost metric
(:func:`lamina.metrics.background.ghost_opacity`, the object's mean opacity left in the
background by colour, lower is better), the ghost by structure
(:func:`lamina.metrics.background.ghost_structure`, the least-squares opacity of the object's
high-passed picture in the background's error: what is left of its outline and texture, about 0
for any fill that knows nothing of the object), recomposition PSNR, seconds per image (cut-out + layers, one
thread) and the process's peak resident memory.

    python benchmarks/bench_photos.py [--split test|validation] [--count256 24] [--count512 12]
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

#: Photographs per split: scikit-image data files, and Debian lomiri-wallpapers files (by name stem).
SPLITS = {
    "validation": {"skimage": ("astronaut.png", "chelsea.png", "motorcycle_left.png", "brick.png", "grass.png"),
                   "wallpapers": ("Bridge_by_Sander_Klootwijk", "Kleiber_by_Lukas_Baubkus", "Wine_by_Jakkub_Mede",
                                  "aitzgorri_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
                                  "friends_by_Aitzol_Berasategi")},
    "test": {"skimage": ("coffee.png", "rocket.jpg", "motorcycle_right.png", "gravel.png"),
             "wallpapers": ("Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
                            "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                            "sunset_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich")},
}
#: Seeds of the scenes: validation and test draw from different ranges.
FIRST_SEED = {"validation": 810_000_000, "test": 910_000_000}
#: Photographs are decoded at about this short side (JPEG draft mode), then cropped.
PHOTO_SIDE = 1024
#: Today's (2026-12-06) foreground stage and classical disassembly, frozen as the baseline.
TODAY_FOREGROUND = dict(erode=None, dilate=None, matting="cf", grabcut_iterations=5, grabcut_max_side=512,
                        refiner=None)
TODAY_CLASSICAL = dict(inpaint="telea", hole_margin=None, alpha_floor=0.01, effects_model="difference")
#: Recomposition PSNR above this is float32 rounding: exact.
EXACT_RECOMPOSITION_DB = 120.0

#: (key, column label, True when higher is better).
METRICS = (("alpha_sad", "alpha SAD/1000", False), ("alpha_mse", "alpha MSE", False),
           ("alpha_gradient", "alpha grad/1000", False), ("bg_psnr_occluded", "bg PSNR hidden dB", True),
           ("bg_perceptual", "bg local-feature err.", False), ("ghost", "ghost", False),
           ("ghost_structure", "ghost (structure)", False), ("recomposition_psnr", "recomp. PSNR dB", True))

#: Metrics printed with four decimals (the others with two).
FOUR_DECIMALS = ("alpha_mse", "bg_perceptual", "ghost", "ghost_structure")


def load_photos(split: str, wallpapers: str) -> tuple[list[np.ndarray], list[str]]:
    """The split's photographs that exist, as ``float32`` ``[H, W, 3]`` (short side about :data:`PHOTO_SIDE`)."""
    from PIL import Image

    paths = []
    try:
        import skimage

        root = Path(skimage.__file__).parent / "data"
        paths += [root / name for name in SPLITS[split]["skimage"] if (root / name).exists()]
    except ImportError:
        pass
    folder = Path(wallpapers)
    if folder.is_dir():
        for stem in SPLITS[split]["wallpapers"]:
            paths += sorted(folder.glob(stem + ".*"))[:1]
    photos = []
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (PHOTO_SIDE, PHOTO_SIDE))
            image = image.convert("RGB")
            scale = PHOTO_SIDE / min(image.size)
            if scale < 1.0:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
            photos.append(np.asarray(image, np.float32) / 255.0)
    if len(photos) < 2:
        sys.exit(f"{split}: found {len(photos)} photographs; need scikit-image and/or --wallpapers (docstring)")
    return photos, [p.name for p in paths]


def photo_scene(seed: int, size: int, photos: list[np.ndarray], objects: list[np.ndarray] | None = None) -> dict:
    """One composite with exact ground truth, a 4 % box: a procedural object
    (:func:`lamina.data.photo_scenes.photo_scene`) or, given ``objects``, a real one (``object_scene``)."""
    from lamina.data.photo_scenes import object_scene
    from lamina.data.photo_scenes import photo_scene as make_scene

    return make_scene(seed, size, photos) if objects is None else object_scene(seed, size, photos, objects)


def method_setup(method: str) -> tuple[object, object]:
    """``(ForegroundConfig, decomposer)`` of a benchmark method."""
    from lamina.layeringdiff.decompose import make_decomposer
    from lamina.layeringdiff.foreground import ForegroundConfig

    if method == "telea":
        return ForegroundConfig(**TODAY_FOREGROUND), make_decomposer("classical", **TODAY_CLASSICAL)
    if method == "classical":
        return ForegroundConfig(), make_decomposer("classical")
    if method == "layeringdiff":
        return ForegroundConfig(), make_decomposer("layeringdiff")
    if method == "layeringdiff-today":
        from lamina.layeringdiff import fbdd

        fbdd.PREFILL_FILL = "telea"  # today's prefill (this process runs only this method)
        return ForegroundConfig(**TODAY_FOREGROUND), make_decomposer("layeringdiff", model=OLD_MODEL, mirror=False)
    if method == "layeringdiff-1206":
        return ForegroundConfig(refiner=None), make_decomposer("layeringdiff", model=OLD_MODEL, mirror=False)
    if method == "classical-grabcut":
        return ForegroundConfig(refiner=None), make_decomposer("classical")
    if method == "layeringdiff-grabcut":
        return ForegroundConfig(refiner=None), make_decomposer("layeringdiff")
    if method == "classical-refiner":
        return ForegroundConfig(refiner=REFINER), make_decomposer("classical")
    if method == "layeringdiff-refiner":
        return ForegroundConfig(refiner=REFINER), make_decomposer("layeringdiff")
    if method in ("classical-truealpha", "fill-truehole"):
        return ForegroundConfig(), make_decomposer("classical")
    if method == "layeringdiff-truealpha":
        return ForegroundConfig(), make_decomposer("layeringdiff")
    sys.exit(f"unknown method {method!r}")


#: The cut-out refiner of the ``-refiner`` methods (``--refiner``: ``"builtin"`` or a folder).
REFINER = "builtin"
#: The built-in FBDD of 2026-12-06 for ``layeringdiff-today`` / ``-1206`` (``--model-1206``; None: the built-in).
OLD_MODEL: str | None = None


def fill_truehole(composite: np.ndarray, layer: np.ndarray):
    """The ``fill-truehole`` reference: the true layer, and the harmonic fill of its footprint (grown as usual)."""
    from scipy import ndimage

    from lamina.layeringdiff.classical import inpaint_background
    from lamina.layeringdiff.disassembly import Decomposition, project_layers

    alpha = layer[:, :, 3]
    margin = max(1, min(alpha.shape) // 100)
    hole = ndimage.binary_dilation(alpha > 0.01, iterations=margin)
    background = inpaint_background(composite, hole, "harmonic")
    foreground, background = project_layers(composite, alpha, layer[:, :, :3], background)
    return Decomposition(np.concatenate([foreground, alpha[:, :, None]], axis=2), background, alpha,
                         np.zeros_like(alpha))


def run_one(method: str, size: int, count: int, split: str, wallpapers: str, objects: str | None = None) -> dict:
    """Decompose ``count`` scenes with one method in this process; mean metrics and timings."""
    import torch

    torch.set_num_threads(1)
    from lamina.errors import LaminaError
    from lamina.layeringdiff.foreground import effects_region, foreground_from_box, foreground_from_mask
    from lamina.metrics import evaluate_layers
    from lamina.metrics.background import LocalFeatureDistance, ghost_opacity, ghost_structure

    photos, names = load_photos(split, wallpapers)
    cutouts = None
    if objects is not None:
        from lamina.data.photo_scenes import ObjectFolder

        cutouts = ObjectFolder.of(objects, split).objects
    config, decomposer = method_setup(method)
    perceptual = LocalFeatureDistance()
    values: dict[str, list[float]] = {key: [] for key, _, _ in METRICS}
    seconds, fallbacks, per_scene = [], 0, []
    for i in range(count + 1):  # the first scene warms up (pymatting's JIT, the first UNet call)
        s = photo_scene(FIRST_SEED[split] + i, size, photos, cutouts)
        start = time.perf_counter()
        if method == "fill-truehole":
            part = fill_truehole(s["composite"], s["layer"])
        elif method.endswith("-truealpha"):
            region = effects_region(s["object_alpha"] > 0.5, config.effects_below, config.effects_around)
            part = decomposer.decompose(s["composite"], s["object_alpha"], region)
        else:
            try:
                estimate = foreground_from_box(s["composite"], s["box"], config)
            except LaminaError:  # GrabCut found nothing: the matte of the true object mask
                estimate = foreground_from_mask(s["composite"], s["object_alpha"] > 0.5, config)
                fallbacks += i > 0
            part = decomposer.decompose(s["composite"], estimate.alpha, estimate.effects_region)
        elapsed = time.perf_counter() - start
        if i == 0:
            continue
        seconds.append(elapsed)
        scores = evaluate_layers(part.to_layered(), s["truth"])
        hidden = s["layer"][:, :, 3] > 0
        scores["bg_perceptual"] = perceptual(part.background, s["background"], hidden)
        scores["ghost"] = ghost_opacity(part.background, s["background"], s["layer"])
        scores["ghost_structure"] = ghost_structure(part.background, s["background"], s["layer"])
        per_scene.append(float(scores["bg_psnr_occluded"]))
        for key, _, _ in METRICS:
            if math.isfinite(scores[key]):
                values[key].append(float(scores[key]))
    out = {key: float(np.mean(v)) for key, v in values.items()}
    # Standard error of the mean over the scenes: how far apart two methods must be to differ.
    out.update({f"{key}_se": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
                for key, v in values.items()})
    out["psnr_per_scene"] = per_scene  # for paired differences between methods (the same scenes)
    out.update(seconds=float(np.mean(seconds)), peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
               count=count, fallbacks=fallbacks, photos=names, objects=None if cutouts is None else len(cutouts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=tuple(SPLITS), default="test")
    parser.add_argument("--count256", type=int, default=24)
    parser.add_argument("--count512", type=int, default=12)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--methods", default="telea,classical,layeringdiff")
    parser.add_argument("--wallpapers", default="/usr/share/backgrounds",
                        help="folder of Debian's lomiri-wallpapers photographs (see the docstring)")
    parser.add_argument("--objects", default=None,
                        help="folder of real objects' RGBA cut-outs: real objects instead of procedural ones")
    parser.add_argument("--model-1206", default=None,
                        help="the built-in FBDD of 2026-12-06 (a folder) for layeringdiff-today / layeringdiff-1206")
    parser.add_argument("--refiner", default="builtin", help="the -refiner methods' refiner (builtin or a folder)")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = {256: args.count256, 512: args.count512}
    if args.one:
        global OLD_MODEL, REFINER
        OLD_MODEL, REFINER = args.model_1206, args.refiner
        method, size = args.one[0], int(args.one[1])
        print(json.dumps(run_one(method, size, counts.get(size, args.count512), args.split, args.wallpapers,
                                 args.objects)))
        return

    rows = []
    sizes = [int(v) for v in args.sizes.split(",")]
    for size in sizes:
        for method in args.methods.split(","):
            command = [sys.executable, __file__, "--one", method, str(size), "--split", args.split,
                       "--count256", str(args.count256), "--count512", str(args.count512),
                       "--wallpapers", args.wallpapers]
            command += ["--model-1206", args.model_1206] if args.model_1206 else []
            command += ["--objects", args.objects] if args.objects else []
            command += ["--refiner", args.refiner]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{method} at {size} px failed:\n{done.stderr[-3000:]}")
            rows.append((size, method, json.loads(done.stdout.strip().splitlines()[-1])))
            print(f"  done: {method} at {size} px", file=sys.stderr, flush=True)

    header = ["size", "method", *(label for _, label, _ in METRICS), "s/img", "peak RSS MB", "GrabCut fallbacks"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size, method, r in rows:
        cells = [f"{size}²", method, *(f"{r[key]:.4f}" if key in FOUR_DECIMALS else f"{r[key]:.2f}"
                                      for key, _, _ in METRICS),
                 f"{r['seconds']:.2f}", f"{r['peak_mb']:.0f}", str(r["fallbacks"])]
        print("| " + " | ".join(cells) + " |")
    print()
    for size in sizes:
        by = {m: r for s, m, r in rows if s == size}
        if "telea" not in by:
            continue
        base = by["telea"]
        for method, r in by.items():
            if method == "telea":
                continue
            gain = r["bg_psnr_occluded"] - base["bg_psnr_occluded"]
            paired = np.array(r["psnr_per_scene"]) - np.array(base["psnr_per_scene"])
            gain_se = float(np.nanstd(paired, ddof=1) / np.sqrt(np.isfinite(paired).sum()))
            ghost = r["ghost"] / base["ghost"] if base["ghost"] > 0 else float("nan")
            structure = (r["ghost_structure"] / base["ghost_structure"] if base["ghost_structure"] > 0
                         else float("nan"))
            sad = 1.0 - r["alpha_sad"] / base["alpha_sad"]
            exact = r["recomposition_psnr"] >= EXACT_RECOMPOSITION_DB
            limit = 1.0 if size <= 256 else 3.0
            print(f"- {size}², {method} vs telea: bg PSNR {gain:+.2f} ± {gain_se:.2f} dB (target >= +3); "
                  f"ghost {r['ghost']:.4f} ± {r['ghost_se']:.4f} = x{ghost:.2f} "
                  f"(target <= 0.1); ghost (structure) {r['ghost_structure']:.4f} ± {r['ghost_structure_se']:.4f} "
                  f"= x{structure:.2f} (target <= 0.1); alpha SAD {100 * sad:+.0f} % lower (target >= 25 %); "
                  f"{r['seconds']:.2f} s/img (limit {limit:g}); recomposition {'exact' if exact else 'NOT exact'}")
    print("\n(± : standard error over the scenes: of the paired PSNR difference, and of the mean ghosts)")
    photos = rows[0][2]["photos"]
    counts_text = ", ".join(f"{counts.get(s, args.count512)} at {s}²" for s in sizes)
    objects = rows[0][2]["objects"]
    kind = "procedural objects" if objects is None else f"real objects ({objects} cut-outs of the {args.split} split)"
    print(f"\nsplit: {args.split} ({len(photos)} photographs: {', '.join(photos)}); scenes: {counts_text}, {kind}; "
          f"seeds from {FIRST_SEED[args.split]}; one CPU thread")


if __name__ == "__main__":
    main()
