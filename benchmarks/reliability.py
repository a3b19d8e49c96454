"""Reliability of every reader and reading command on malformed inputs (issue 23), baseline side by side.

Generates the malformed-input suite of :mod:`lamina.testing.fuzz` (``--level fast`` by
default, ``full`` for the sizes of the issue: 6000x6000 layers, a 1 GiB zip bomb), runs
each file through ``lamina.load``, ``info``, ``view``, ``convert``, ``crop`` and
``metrics`` in worker subprocesses (address-space limit, timeout and memory cap per
operation), for this checkout and, with ``--baseline REV``, for the ``src`` of a git
revision, and prints one table. Then, with ``--big``, the peak memory and time of
``lamina convert`` / ``view`` on a large layered file; with ``--decompose``, of
``lamina decompose`` (built-in model, a box) on photos of 1, 4, 12 and 40 megapixels; with
``--kills N``, N kill -9 trials per method during training (:mod:`lamina.testing.kill`): kills
landed, reruns that finished correctly, and reruns equal to a run never killed.

    PYTHONPATH=src python benchmarks/reliability.py --level fast --baseline d53726e --big --decompose --kills 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from lamina.testing.fuzz import OPERATIONS, generate_cases, run_cases, summarise
from lamina.testing.peak import run_measured

ROOT = Path(__file__).resolve().parents[1]
ROWS = [("files tried", "files"), ("operations (file x command)", "operations"), ("correct results", "correct"),
        ("clean one-line errors naming the file", "clean_error"), ("tracebacks (must be 0)", "traceback"),
        ("wrong results (must be 0)", "wrong"), ("errors not naming the file (must be 0)", "unnamed_error"),
        ("over the memory cap (must be 0)", "memory"), ("hangs (must be 0)", "hang"),
        ("partial / leftover files (must be 0)", "partial")]


def checkout(rev: str, into: Path) -> Path:
    """The ``src`` folder of git revision ``rev`` of this repository, extracted into ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(args: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[float, float, int]:
    """Wall seconds, peak resident MB and exit status of a command.

    The peak is the command's own (:func:`lamina.testing.peak.run_measured`): a child forked from this
    process, which holds the large test files, would start at its size.
    """
    start = time.perf_counter()
    try:
        run = run_measured(args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, float("nan"), 124
    return time.perf_counter() - start, (run.peak_bytes or 0) / (1 << 20), run.returncode


def cli(src: Path) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(src)!r}); from lamina.cli import main; main()"]


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "LAMINA_PROGRESS": "0"}


def big_files(tmp: Path) -> dict[str, Path]:
    """A 4000x3000 image with two full-size layers (one multiply), as PSD, ORA and PNG stack."""
    from lamina import Layer, LayeredImage

    rng = np.random.default_rng(0)
    background = (rng.random((3000, 4000, 3)) * 255).astype(np.uint8)
    layer = np.zeros((3000, 4000, 4), np.uint8)
    layer[500:2500, 1000:3000] = 200
    image = LayeredImage(background, [Layer(layer, "a"), Layer(layer, "b", blend_mode="multiply")])
    del background, layer
    return {name: image.save(tmp / name) for name in ("big.psd", "big.ora", "big_stack")}


def photos(tmp: Path) -> dict[int, tuple[Path, str]]:
    """Smooth synthetic photos of 1, 4, 12 and 40 (just under the limit) megapixels, with a box around an object."""
    from PIL import Image, ImageFilter

    out = {}
    for mpx, (w, h) in ((1, (1152, 864)), (4, (2304, 1728)), (12, (4000, 3000)), (40, (7302, 5476))):
        rng = np.random.default_rng(mpx)
        small = Image.fromarray((rng.random((h // 32, w // 32, 3)) * 255).astype(np.uint8)).resize((w, h))
        pixels = np.asarray(small.filter(ImageFilter.GaussianBlur(4))).copy()
        y0, y1, x0, x1 = h // 3, 2 * h // 3, w // 3, 2 * w // 3
        pixels[y0:y1, x0:x1] = (pixels[y0:y1, x0:x1] * 0.3 + np.array([200, 60, 40]) * 0.7).astype(np.uint8)
        path = tmp / f"photo_{mpx}mpx.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        out[mpx] = (path, f"{x0 - w // 20},{y0 - h // 20},{x1 + w // 20},{y1 + h // 20}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", choices=("quick", "fast", "full"), default="fast")
    parser.add_argument("--baseline", help="git revision whose src/ is the baseline column")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per operation")
    parser.add_argument("--big", action="store_true", help="also measure convert/view on a 12 Mpx layered file")
    parser.add_argument("--decompose", action="store_true", help="also measure decompose at 1, 4, 12, 40 Mpx")
    parser.add_argument("--kills", type=int, default=0, metavar="N", help="kill -9 trials per method (this checkout)")
    parser.add_argument("--show", type=int, default=15, help="failures to list per column")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lamina-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        cases = generate_cases(tmp / "cases", level=args.level)
        sources = {"now": ROOT / "src"}
        if args.baseline:
            sources[f"baseline {args.baseline}"] = checkout(args.baseline, tmp / "baseline")
        summaries, failures, seconds = {}, {}, {}
        for label, src in sources.items():
            start = time.perf_counter()
            records = run_cases(cases, op_timeout=args.timeout, lamina_src=src)
            seconds[label] = time.perf_counter() - start
            summaries[label] = summarise(cases, records)
            failures[label] = [r for r in records if r["outcome"] not in ("correct", "clean_error")]
        labels = list(sources)[::-1]
        print(f"\nlevel {args.level}: {len(cases)} files x {len(OPERATIONS)} operations ({', '.join(OPERATIONS)})\n")
        print("| | " + " | ".join(labels) + " |\n|---|" + "---:|" * len(labels))
        for title, key in ROWS:
            print(f"| {title} | " + " | ".join(str(summaries[label][key]) for label in labels) + " |")
        print("| wall time of the suite (s) | " + " | ".join(f"{seconds[label]:.0f}" for label in labels) + " |")
        for label in labels:
            if failures[label]:
                print(f"\n{label}: {len(failures[label])} failing operations; per kind of failure, a few files:")
                for outcome in sorted({r["outcome"] for r in failures[label]}):
                    chosen = {}
                    for record in failures[label]:
                        if record["outcome"] == outcome and record["case"].split("/")[0] not in chosen:
                            chosen[record["case"].split("/")[0]] = record
                    for record in list(chosen.values())[:args.show]:
                        print(f"  {outcome}: {record['case']} {record['op']}: {record['detail'][:150]}")

        if args.big:
            files = big_files(tmp)
            print("\n4000x3000, background + 2 full-size layers (one multiply):\n")
            print("| command | " + " | ".join(f"{label} s | {label} peak MB" for label in labels) + " |")
            print("|---|" + "---:|---:|" * len(labels))
            for name, path in files.items():
                for command in (["convert", path, tmp / "out.ora", "--overwrite"],
                                ["convert", path, tmp / "out.psd", "--overwrite"],
                                ["view", path, "--out", tmp / "sheet.png", "--overwrite"]):
                    cells = []
                    for label in labels:
                        wall, peak, code = measure(cli(sources[label]) + [str(c) for c in command],
                                                   env_for(sources[label]))
                        cells.append(f"{wall:.1f} | {peak:.0f}" + ("" if code == 0 else f" (exit {code})"))
                    shown = " ".join(str(c) if c != path else name for c in command[:2]) + (
                        f" -> {Path(command[2]).suffix}" if command[0] == "convert" else "")
                    print(f"| {shown} | " + " | ".join(cells) + " |")

        if args.decompose:
            print("\nlamina decompose (built-in model, --box), this checkout:\n")
            print("| photo | seconds | peak MB | MB per Mpx | exit |\n|---|---:|---:|---:|---:|")
            for mpx, (path, box) in photos(tmp).items():
                wall, peak, code = measure(cli(sources["now"]) + ["decompose", str(path), "--box", box,
                                                                  "--out", str(tmp / f"d{mpx}.psd")],
                                           env_for(sources["now"]))
                print(f"| {mpx} Mpx | {wall:.1f} | {peak:.0f} | {peak / mpx:.0f} | {code} |")

        if args.kills:
            kill_trials(args.kills, tmp / "kills")


def kill_trials(count: int, folder: Path) -> None:
    """``count`` kill -9 trials per method, the delay after the kill point spread over 0-0.3 s; prints a table."""
    from lamina.testing.kill import TRAIN_COMMANDS, kill_and_resume

    print(f"\nkill -9 during training, {count} trials per method (this checkout):\n")
    print("| method | kills | landed mid-run | reruns finished correctly | equal to a run never killed |")
    print("|---|---:|---:|---:|---:|")
    for method in sorted(TRAIN_COMMANDS):
        results = [kill_and_resume(method, folder / f"{method}-{k}", delay=0.3 * k / max(count - 1, 1),
                                   src=ROOT / "src") for k in range(count)]
        print(f"| {method} | {count} | {sum(r.landed for r in results)} | {sum(r.resumed for r in results)} | "
              f"{sum(r.same_as_straight for r in results)} |")
        for r in results:
            if r.problem:
                print(f"  {method} delay {r.delay:.2f} s: {r.problem[:200]}")


if __name__ == "__main__":
    main()
