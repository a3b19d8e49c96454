"""Distributed smoke test: a few BFS training steps on several CPU processes (gloo).

Run as ``torchrun --standalone --nproc_per_node 2 -m lamina.bfs.smoke RUN_DIR`` (or with ``accelerate
launch``). Every process trains the ``test`` preset (tiny random components, 32 px) for two steps of
stage ``layered`` and then two of stage ``composite`` (whose foreground-row adapter weights get no
gradient), each process on its own samples; after each stage the processes check that their trained
weights are identical (the gradients were averaged through the DDP-wrapped loss module). Exits non-zero
on any failure; prints ``smoke ok`` on rank 0.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _weights_agree(accelerator, modules) -> bool:
    import torch

    checksum = torch.tensor([[float(p.detach().double().sum()) for p in modules.parameters()]], dtype=torch.float64)
    gathered = accelerator.gather(checksum)
    return bool(torch.equal(gathered, checksum.expand_as(gathered)))


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    from ..extras import require

    Accelerator = require("accelerate", "train").Accelerator
    from .config import resolve_config
    from .train import load_parts, training_loop

    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "bfs-smoke")
    accelerator = Accelerator(cpu=True)
    init = None
    for stage in ("layered", "composite"):
        config = resolve_config("test", stage=stage, init=init, composite_backgrounds="procedural")
        parts = load_parts(config)
        export = training_loop(config, root / stage, parts=parts, echo=lambda _line: None)
        trained = torch.nn.ModuleDict({"joint": parts[0]["joint"], "transformer": parts[0]["transformer"]})
        if not _weights_agree(accelerator, trained):
            print(f"rank {accelerator.process_index}: {stage}: weights differ across processes", file=sys.stderr)
            return 1
        init = str(export)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(f"smoke ok: {accelerator.num_processes} process(es), stages layered and composite, weights identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
