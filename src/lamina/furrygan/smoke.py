"""Distributed smoke test: a few FurryGAN training steps on several CPU processes (gloo).

Run as ``torchrun --standalone --nproc_per_node 2 -m lamina.furrygan.smoke RUN_DIR`` (or with
``accelerate launch``). Every process trains ``tiny-32`` at a global batch of 4 for 3 steps
on procedural composites, then the processes check that their networks are identical (the
gradients are averaged by hand in the training loop) and rank 0 checks the run folder. Then
the run is resumed towards 6 steps with a time limit that only rank 0 has passed: every
process must stop, saved, after step 4 (the limit is agreed across processes).
Exits non-zero on any failure; prints ``smoke ok`` on rank 0 when all is well.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    from ..extras import require

    Accelerator = require("accelerate", "train").Accelerator

    from .config import get_preset
    from .datasets import SynthComposites
    from .train import STATE_NAME, training_loop

    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0] if argv else "furrygan-smoke")
    acc = Accelerator(cpu=True)
    cfg = get_preset("tiny-32").with_overrides({  # 2 images per process
        "train.batch_size": 2 * acc.num_processes, "train.total_steps": 3, "train.checkpoint_every": 2,
        "train.preview_every": 3, "train.log_every": 1, "loss.r1_interval": 2})
    result = training_loop(cfg, SynthComposites(32, length=64), run_dir, accelerator=acc, show_progress=False)

    # Identical networks on every process (gradients are averaged): compare parameter checksums with rank 0's.
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in result.networks[name].parameters())
                             for name in ("G", "D", "G_ema")], dtype=torch.float64)
    gathered = acc.gather(checksum[None]).view(-1, 3)
    if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=0, atol=0):
        print(f"rank {acc.process_index}: networks differ across processes: {gathered.tolist()}", file=sys.stderr)
        return 1
    if acc.is_main_process:
        state = torch.load(run_dir / STATE_NAME, weights_only=True)
        missing = [name for name in ("training-config.json", "log.jsonl", STATE_NAME, "export/model.safetensors",
                                     "previews/step-0000003.png") if not (run_dir / name).is_file()]
        if missing or state["step"] != 3 or state["nimg"] != 3 * cfg.train.batch_size:
            print(f"smoke failed: missing {missing}, step {state['step']}, nimg {state['nimg']}", file=sys.stderr)
            return 1
    acc.wait_for_everyone()

    longer = cfg.with_overrides({"train.total_steps": 6})
    limit = 0.0 if acc.is_main_process else 3600.0
    resumed = training_loop(longer, SynthComposites(32, length=64), run_dir, accelerator=acc, show_progress=False,
                            stop_after_s=limit)
    if (resumed.step, resumed.timed_out) != (4, True):
        print(f"rank {acc.process_index}: time limit: stopped at step {resumed.step}, timed_out {resumed.timed_out}",
              file=sys.stderr)
        return 1
    if acc.is_main_process:
        step = torch.load(run_dir / STATE_NAME, weights_only=True)["step"]
        if step != 4:
            print(f"smoke failed: the time-limited resume saved step {step}, not 4", file=sys.stderr)
            return 1
        print(f"smoke ok: {acc.num_processes} process(es), {state['step']} steps of {cfg.train.batch_size}, "
              f"resumed and stopped together by a time limit at step {step}, in {run_dir}")
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
