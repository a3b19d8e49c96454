"""Peak memory and time of ``lamina decompose`` on large photos (issue 23), before and after, side by side.

The photos are scikit-image's ``coffee`` (600 x 400: a cup on a saucer, with shadows) resized
(bicubic) to about 1, 4, 12 and 40 megapixels at 4:3 and saved as JPEG (quality 92); the box
is the cup and saucer (about 60 % of the frame: a large object, the hard case for memory).
Each run is one ``python -m lamina decompose PHOTO [--box ...] --out X.psd`` process with the
built-in model (PSD and its contact sheet written), measured from outside: peak resident
memory (``ru_maxrss`` of the command itself, :func:`lamina.testing.peak.run_measured`), wall-clock
seconds and CPU seconds (user + sys, all threads). CPU seconds are the fairer time when the machine is shared.

``--base DIR`` names a checkout of the code to compare against (e.g. ``git worktree add
/tmp/mem-base main``): its ``src`` is put first on ``PYTHONPATH`` for the "before" column. A run
whose resident memory passes ``--cap-gb`` is stopped and reported as over the cap.

    python benchmarks/bench_memory.py --base /tmp/mem-base [--sizes 1,4,12,40] [--modes box,auto]
        [--base-sizes 1,4,12,40] [--threads 1] [--cap-gb 6]

``--command synthesize`` measures ``lamina synthesize`` (BFS, built-in model, PSD + contact sheet)
on the same photos instead, with two objects placed back to front (:data:`SYNTH_OBJECTS`: boxes
as fractions of the frame, and their captions); ``--modes`` is then ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from lamina.testing.peak import run_measured

ROOT = Path(__file__).resolve().parent.parent
#: The cup and saucer in the 600 x 400 original: x0, y0, x1, y1.
COFFEE_BOX = (75, 15, 480, 390)
#: ``lamina synthesize``'s two objects: (x0, y0, x1, y1) as fractions of the frame, and the caption.
SYNTH_OBJECTS = (((0.10, 0.45, 0.40, 0.90), "a red star with a shadow"),
                 ((0.55, 0.30, 0.90, 0.75), "a blue circle with a shadow"))


def photo_size(mpx: float) -> tuple[int, int]:
    """``(width, height)`` of a 4:3 photo of about ``mpx`` megapixels (12 -> 4000 x 3000)."""
    if mpx == 12:
        return 4000, 3000
    width = round((mpx * 1e6 * 4 / 3) ** 0.5)
    return width, round(width * 3 / 4)


def make_photo(folder: Path, mpx: float) -> tuple[Path, str]:
    """The test photo of ``mpx`` megapixels (made once) and its box as ``x0,y0,x1,y1``."""
    from PIL import Image

    width, height = photo_size(mpx)
    path = folder / f"coffee_{width}x{height}.jpg"
    if not path.exists():
        import skimage.data

        Image.fromarray(skimage.data.coffee()).resize((width, height), Image.Resampling.BICUBIC).save(
            path, quality=92)
    x0, y0, x1, y1 = COFFEE_BOX
    box = f"{round(x0 * width / 600)},{round(y0 * height / 400)},{round(x1 * width / 600)},{round(y1 * height / 400)}"
    return path, box


def synth_arguments(mpx: float) -> list[str]:
    """``--box ... --prompt ...`` of :data:`SYNTH_OBJECTS` on the photo of ``mpx`` megapixels."""
    width, height = photo_size(mpx)
    out = []
    for (x0, y0, x1, y1), caption in SYNTH_OBJECTS:
        out += ["--box", f"{round(x0 * width)},{round(y0 * height)},{round(x1 * width)},{round(y1 * height)}",
                "--prompt", caption]
    return out


def measure(src: Path, photo: Path, box: str | None, out: Path, threads: int | None, cap_bytes: int,
            synth: list[str] | None = None) -> dict:
    """One ``lamina decompose`` (or, with ``synth`` arguments, ``lamina synthesize``) process: peak RSS (MB),
    wall and CPU seconds, or ``over_cap``/``failed``."""
    if synth is not None:
        command = [sys.executable, "-m", "lamina", "synthesize", str(photo), *synth, "--out", str(out),
                   "--overwrite"]
    else:
        command = [sys.executable, "-m", "lamina", "decompose", str(photo), "--out", str(out), "--overwrite"]
        command += ["--box", box] if box else []
    command += ["--threads", str(threads)] if threads else []
    env = dict(os.environ, PYTHONPATH=str(src), LAMINA_PROGRESS="0")
    start = time.perf_counter()
    # The command's own peak (a child forked from this process, which made the photos, would start at its size),
    # stopped at the cap (the old code needs ~340 bytes per pixel).
    run = run_measured(command, env=env, rss_cap=cap_bytes)
    result = {"peak_mb": (run.peak_bytes or 0) / (1 << 20), "wall_s": time.perf_counter() - start,
              "cpu_s": run.cpu_seconds or 0.0}
    if run.over_cap:
        result["over_cap"] = True
    elif run.returncode != 0:
        result["failed"] = run.stderr.strip().splitlines()[-1:] or ["?"]
    return result


def cell(result: dict | None, cap_gb: float) -> str:
    if result is None:
        return "- | - | -"
    if result.get("over_cap"):
        return f"> {cap_gb * 1024:.0f} (stopped) | > {result['wall_s']:.0f} | > {result['cpu_s']:.0f}"
    if "failed" in result:
        return f"failed: {result['failed'][0][:60]} | | "
    return f"{result['peak_mb']:.0f} | {result['wall_s']:.1f} | {result['cpu_s']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,4,12,40", help="megapixels of the test photos")
    parser.add_argument("--command", choices=("decompose", "synthesize"), default="decompose")
    parser.add_argument("--modes", default="box,auto", help="box (--box of the cup and saucer) and/or auto (none)")
    parser.add_argument("--after", action=argparse.BooleanOptionalAction, default=True,
                        help="also run this checkout (--no-after: only the --base column)")
    parser.add_argument("--base", type=Path, default=None, help="checkout of the code before (its src is used)")
    parser.add_argument("--base-sizes", default=None, help="sizes run with --base (default: --sizes)")
    parser.add_argument("--base-modes", default=None, help="modes run with --base (default: --modes)")
    parser.add_argument("--threads", type=int, default=None, help="--threads of lamina decompose (default: torch's)")
    parser.add_argument("--cap-gb", type=float, default=6.0, help="stop a run whose resident memory passes this")
    parser.add_argument("--photos", type=Path, default=Path(tempfile.gettempdir()) / "lamina-bench-memory")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    synthesize = args.command == "synthesize"
    modes = ["2 objects"] if synthesize else args.modes.split(",")
    base_sizes = [float(s) for s in (args.base_sizes or args.sizes).split(",")]
    base_modes = modes if synthesize else (args.base_modes or args.modes).split(",")
    args.photos.mkdir(parents=True, exist_ok=True)
    cap = int(args.cap_gb * (1 << 30))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mpx in sizes:
            photo, box = make_photo(args.photos, mpx)
            for mode in modes:
                hint = box if mode == "box" else None
                synth = synth_arguments(mpx) if synthesize else None
                before = None
                if args.base is not None and mpx in base_sizes and mode in base_modes:
                    before = measure(args.base / "src", photo, hint, Path(tmp) / "before.psd", args.threads, cap,
                                     synth)
                after = None
                if args.after:
                    after = measure(ROOT / "src", photo, hint, Path(tmp) / "after.psd", args.threads, cap, synth)
                rows.append((mpx, mode, before, after))
                print(f"{mpx:g} Mpx {mode}: before {before}  after {after}", file=sys.stderr, flush=True)
    threads = args.threads or "torch's default"
    print(f"\nlamina {args.command}, built-in model, PSD + contact sheet; threads: {threads}; "
          f"peak RSS in MB, wall and CPU (user + sys) in s\n")
    print("| photo | mode | before: peak MB | wall s | CPU s | after: peak MB | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for mpx, mode, before, after in rows:
        width, height = photo_size(mpx)
        print(f"| {width}x{height} ({width * height / 1e6:.1f} Mpx) | {mode} | {cell(before, args.cap_gb)} | "
              f"{cell(after, args.cap_gb)} |")


if __name__ == "__main__":
    main()
