"""FurryGAN training throughput on this machine's CPU: images/s and achieved FLOP/s vs the matmul peak.

For each preset and each modulated-convolution formulation (``grouped``: one grouped conv
with per-sample weights; ``activations``: modulate and demodulate the activations around
a shared-weight conv), it times full training steps (D update, G update, lazy R1 amortised
over ``loss.r1_interval``; Adam steps included) at the preset's batch, counts one step's
FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (without R1, which it cannot count:
the FLOP/s are a lower bound), and measures the fp32 matmul peak
(``torch.mm`` of 2048x2048 matrices) in the same run. Times are CPU time of this process
(``time.process_time``), so other processes on a shared machine distort the ratio less;
with ``--threads 1`` this is one core's time. Prints a markdown table.

Each formulation runs with NCHW and with channels-last (NHWC) weights and activations
(``train.channels_last``, the training loop's default).

    python benchmarks/bench_furrygan.py [--threads 1] [--presets tiny-32,small-64] [--steps 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads its thread pool

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from lamina.furrygan import FurryGANDiscriminator, FurryGANGenerator, FurryGANLoss, get_preset  # noqa: E402


def matmul_peak(seconds: float = 2.0, n: int = 2048) -> float:
    """fp32 matmul FLOP/s (best of 5 timed rounds of ``torch.mm`` on ``n x n`` matrices)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        reps, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < seconds / 5:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / elapsed)
    return best


class Trainer:
    """The networks, optimizers and loss of one configuration; :meth:`step` is one training iteration."""

    def __init__(self, preset: str, modconv: str, batch: int | None, layout: str = "nchw") -> None:
        over = {"model.modconv": modconv, "train.channels_last": layout == "nhwc"}
        if batch:
            over["train.batch"] = batch
        self.cfg = cfg = get_preset(preset).with_overrides(over)
        torch.manual_seed(0)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.G = FurryGANGenerator(cfg.model).train().to(memory_format=memory_format)
        self.D = FurryGANDiscriminator(cfg.model).train().to(memory_format=memory_format)
        self.opt_G = torch.optim.Adam(self.G.parameters(), **cfg.optimizer_kwargs("G"))
        self.opt_D = torch.optim.Adam(self.D.parameters(), **cfg.optimizer_kwargs("D"))
        self.loss = FurryGANLoss(self.G, self.D, cfg)
        res = cfg.model.resolution
        self.real = (torch.rand(cfg.train.batch, 3, res, res) * 2 - 1).contiguous(memory_format=memory_format)

    def phase(self, name: str, step: int) -> None:
        opt = self.opt_G if name == "G" else self.opt_D
        opt.zero_grad(set_to_none=True)
        z = None if name == "Dreg" else torch.randn(self.cfg.train.batch, self.G.z_dim)
        self.loss.accumulate_gradients(name, self.real, z, step)
        opt.step()

    def step(self, step: int, r1: bool = False) -> None:
        self.phase("D", step)
        if r1:
            self.phase("Dreg", step)
        self.phase("G", step)


def measure(preset: str, modconv: str, steps: int, batch: int | None, layout: str = "nchw") -> dict[str, float]:
    """Seconds (CPU) and FLOPs per training iteration, R1 amortised over ``r1_interval``."""
    t = Trainer(preset, modconv, batch, layout)
    interval = t.cfg.loss.r1_interval
    t.step(1)  # warm-up (allocations, first-call overheads)
    start = time.process_time()
    for i in range(steps):  # steps 2, 3, ...: even steps carry the every-other-iteration G terms
        t.step(2 + i)
    sec_step = (time.process_time() - start) / steps
    start = time.process_time()
    t.phase("Dreg", 0)
    sec_step += (time.process_time() - start) / interval

    counter = FlopCounterMode(display=False)
    with counter:
        t.step(2)
    flops_even = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        t.step(3)
    flops_odd = counter.get_total_flops()
    # FlopCounterMode cannot follow R1's double backward (autograd.grad with create_graph), so R1's
    # FLOPs are left out while its time is in: the FLOP/s column errs low by R1's share (~1/interval).
    n_even = (steps + 1) // 2  # weighted as the timed steps were
    flops = (flops_even * n_even + flops_odd * (steps - n_even)) / steps
    return {"batch": t.cfg.train.batch, "sec_step": sec_step, "flops_step": flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", default="tiny-32,small-64")
    parser.add_argument("--modconv", default="grouped,activations")
    parser.add_argument("--layouts", default="nchw,nhwc",
                        help="memory layouts of weights and activations (nhwc: train.channels_last, the default)")
    parser.add_argument("--steps", type=int, default=3, help="timed training iterations per row")
    parser.add_argument("--batch", type=int, default=None, help="override the presets' batch (16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak = matmul_peak()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"fp32 matmul peak (2048^3 torch.mm) {peak / 1e9:.1f} GFLOP/s; times are process CPU time\n")
    print("| preset | modconv | layout | batch | s/step | images/s | GFLOP/step | GFLOP/s | % of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        rows = {(modconv, layout): measure(preset, modconv, args.steps, args.batch, layout)
                for modconv in args.modconv.split(",") for layout in args.layouts.split(",")}
        # Every row does the same arithmetic; FlopCounterMode overcounts the backward of grouped
        # convolutions, so the activations formulation's count is the reference when it was measured.
        flops = next((r for (m, _), r in rows.items() if m == "activations"), next(iter(rows.values())))["flops_step"]
        for (modconv, layout), r in rows.items():
            rate = flops / r["sec_step"]
            print(f"| {preset} | {modconv} | {layout} | {r['batch']} | {r['sec_step']:.3f} | "
                  f"{r['batch'] / r['sec_step']:.1f} | {flops / 1e9:.1f} | {rate / 1e9:.1f} | "
                  f"{100 * rate / peak:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
