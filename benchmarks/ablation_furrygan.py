"""FurryGAN ablation in the shape of the paper's Table 1: each component removed in turn, same budget.

Every variant trains the ``tiny`` preset (the built-in model's configuration) on lamina's
procedural composites for the same number of steps and seed, then is scored like the
built-in model: masks of generated foregrounds against the pseudo-GT segmenter (the
paper's protocol with TRACER replaced by lamina's supervised segmenter), and FID/KID of
the composites with the fixed random-CNN features. A second seed of the full model shows
the run-to-run noise, so differences smaller than that are not read as effects.

Runs go to ``--out/<variant>``; rerunning the command resumes unfinished runs and skips
finished ones (training and scoring are both cached), so the table can be built in pieces::

    python benchmarks/ablation_furrygan.py --steps 600 --out runs/ablation
    python benchmarks/ablation_furrygan.py --steps 600 --out runs/ablation --parallel 2
    python benchmarks/ablation_furrygan.py --steps 1000 --set model.resolution=32 --set loss.min_mask=0.2

``--set`` applies to every variant (the last line is the configuration of the table in RESULTS.md).

The rows are (paper Table 1 names in brackets): full model; no dual fake input ("w/o
dual"); no fine mask ("w/o fine", ``m = m_coarse``); no mask consistency loss ("w/o
L_consist"); no background participation loss ("w/o L_bg"); no auxiliary mask predictor
("w/o mask pred."; this also drops the consistency loss, which needs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: variant name -> (``--set`` overrides, seed, what it removes)
VARIANTS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "full": ((), 0, "full model"),
    "full-seed1": ((), 1, "full model, second seed (noise level)"),
    "no-dual": (("loss.dual_fake_input=false",), 0, "w/o dual fake input"),
    "no-fine": (("model.fine_mask=false",), 0, "w/o fine mask (m = m_coarse)"),
    "no-consistency": (("loss.consistency=false",), 0, "w/o mask consistency (Eq. 5)"),
    "no-bg-participation": (("loss.bg_participation=false",), 0, "w/o background participation (Eq. 10)"),
    "no-mask-predictor": (("model.mask_predictor=false",), 0, "w/o mask predictor (Eq. 4, and so Eq. 5)"),
}


def lamina_command() -> list[str]:
    exe = Path(sys.executable).with_name("lamina")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lamina.cli"]


def run_variant(name: str, args: argparse.Namespace) -> dict:
    overrides, seed, _ = VARIANTS[name]
    run_dir = args.out / name
    score_file = run_dir / f"ablation_score_{args.steps}_{args.n}.json"
    if score_file.exists():
        return json.loads(score_file.read_text())
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), LAMINA_PROGRESS="0")
    train = [*lamina_command(), "furrygan", "train", "--data", "synth", "--preset", args.preset, "--out", str(run_dir),
             "--steps", str(args.steps), "--seed", str(seed), "--threads", str(args.threads)]
    for item in (*args.set, *overrides):
        train += ["--set", item]
    with open(args.out / f"{name}.log", "a") as log:
        subprocess.run(train, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        score = [*lamina_command(), "furrygan", "eval", "--checkpoint", str(run_dir), "--n", str(args.n),
                 "--real", "synth", "--json", "--threads", str(args.threads)]
        scored = subprocess.run(score, check=True, env=env, capture_output=True, text=True)
    report = json.loads(scored.stdout)
    score_file.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every variant (repeatable), e.g. model.resolution=32")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--n", type=int, default=500, help="generated samples scored per variant")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        reports = dict(zip(names, pool.map(lambda n: run_variant(n, args), names), strict=True))

    extra = "".join(f" --set {item}" for item in args.set)
    print(f"FurryGAN ablation: preset {args.preset}{extra}, {args.steps} steps each (batch 16), "
          f"procedural composites; {args.n} samples at psi 1 scored against the pseudo-GT segmenter; "
          "FID/KID with random-CNN features\n")
    print("| variant | removes | fg IoU | mIoU | precision | recall | F1 | FID | KID x1000 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, report in reports.items():
        m, f = report["masks"], report.get("fid_kid", {})
        print(f"| {name} | {VARIANTS[name][2]} | {m['iou_fg']:.3f} | {m['miou']:.3f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {m['f1']:.3f} | {f.get('fid_composite', float('nan')):.2f} | "
              f"{1000 * f.get('kid_mean_composite', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
