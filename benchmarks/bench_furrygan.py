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

On a GPU (``--device cuda``) the times are wall-clock between ``torch.cuda.synchronize()``
calls, the peak is measured in the arithmetic of ``--precision`` (``train.precision``: fp32,
tf32 or bf16 autocast), and ``images/s`` is the figure to compare with the issue's target
(paper-256, at least 150 images/s on an H100)::

    python benchmarks/bench_furrygan.py --device cuda --presets paper-256 --precision tf32,bf16 --steps 20
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
from lamina.training import float32_precision  # noqa: E402

CPU = torch.device("cpu")


class Clock:
    """Seconds on ``device``: this process's CPU time on a CPU, synchronized wall-clock time on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def matmul_peak(device: torch.device, precision: str = "fp32", seconds: float = 2.0) -> float:
    """Matmul FLOP/s in ``precision`` (best of 5 timed rounds of ``torch.mm`` on square matrices).

    2048² float32 matrices on a CPU; 8192² on CUDA, in bfloat16 for ``bf16`` (the training's
    autocast dtype), else float32 with TF32 on or off as ``precision`` says.
    """
    n = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    clock, best = Clock(device), 0.0
    with float32_precision(precision):
        torch.mm(a, b)
        for _ in range(5):
            reps, start = 0, clock()
            while (elapsed := clock() - start) < seconds / 5:
                torch.mm(a, b)
                reps += 1
            best = max(best, 2 * n**3 * reps / elapsed)
    return best


class Trainer:
    """The networks, optimizers and loss of one configuration; :meth:`step` is one training iteration."""

    def __init__(self, preset: str, modconv: str, batch: int | None, layout: str = "nchw",
                 device: torch.device = CPU, precision: str = "fp32") -> None:
        over = {"model.modconv": modconv, "train.channels_last": layout == "nhwc", "train.precision": precision}
        if batch:
            over["train.batch_size"] = batch
        self.cfg = cfg = get_preset(preset).with_overrides(over)
        self.device = device
        torch.manual_seed(0)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.G = FurryGANGenerator(cfg.model).train().to(device, memory_format=memory_format)
        self.D = FurryGANDiscriminator(cfg.model).train().to(device, memory_format=memory_format)
        self.opt_G = torch.optim.Adam(self.G.parameters(), **cfg.optimizer_kwargs("G"))
        self.opt_D = torch.optim.Adam(self.D.parameters(), **cfg.optimizer_kwargs("D"))
        self.loss = FurryGANLoss(self.G, self.D, cfg)
        res = cfg.model.resolution
        self.real = (torch.rand(cfg.train.batch_size, 3, res, res, device=device) * 2 - 1).contiguous(
            memory_format=memory_format)

    def phase(self, name: str, step: int) -> None:
        opt = self.opt_G if name == "G" else self.opt_D
        opt.zero_grad(set_to_none=True)
        z = None if name == "Dreg" else torch.randn(self.cfg.train.batch_size, self.G.z_dim, device=self.device)
        self.loss.accumulate_gradients(name, self.real, z, step)
        opt.step()

    def step(self, step: int, r1: bool = False) -> None:
        self.phase("D", step)
        if r1:
            self.phase("Dreg", step)
        self.phase("G", step)


def count_flops(trainer: Trainer, step: int) -> int:
    """FLOPs of one training iteration at ``step`` (``FlopCounterMode``; R1 not included)."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step(step)
    return counter.get_total_flops()


def measure(preset: str, modconv: str, steps: int, batch: int | None, layout: str = "nchw",
            device: torch.device = CPU, precision: str = "fp32") -> dict[str, float]:
    """Seconds (see :class:`Clock`) and FLOPs per training iteration, R1 amortised over ``r1_interval``."""
    t = Trainer(preset, modconv, batch, layout, device, precision)
    interval, clock = t.cfg.loss.r1_interval, Clock(device)
    with float32_precision(precision):
        t.step(1, r1=True)  # warm-up (allocations, first-call overheads, cuDNN algorithm choice)
        start = clock()
        for i in range(steps):  # steps 2, 3, ...: even steps carry the every-other-iteration G terms
            t.step(2 + i)
        sec_step = (clock() - start) / steps
        start = clock()
        t.phase("Dreg", 0)
        sec_step += (clock() - start) / interval

    flops_even, flops_odd = (count_flops(t, step) for step in (2, 3))
    # FlopCounterMode cannot follow R1's double backward (autograd.grad with create_graph), so R1's
    # FLOPs are left out while its time is in: the FLOP/s column errs low by R1's share (~1/interval).
    n_even = (steps + 1) // 2  # weighted as the timed steps were
    flops = (flops_even * n_even + flops_odd * (steps - n_even)) / steps
    return {"batch": t.cfg.train.batch_size, "sec_step": sec_step, "flops_step": flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", default="tiny-32,small-64")
    parser.add_argument("--modconv", default="grouped,activations")
    parser.add_argument("--layouts", default="nchw,nhwc",
                        help="memory layouts of weights and activations (nhwc: train.channels_last, the default)")
    parser.add_argument("--steps", type=int, default=3, help="timed training iterations per row")
    parser.add_argument("--batch", type=int, default=None, help="override the presets' batch (16)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32", help="comma-separated train.precision values: fp32,tf32,bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    precisions = args.precision.split(",")
    peaks = {precision: matmul_peak(device, precision) for precision in precisions}
    unit, scale = ("TFLOP/s", 1e12) if device.type == "cuda" else ("GFLOP/s", 1e9)
    peak_text = ", ".join(f"{p} {v / scale:.1f} {unit}" for p, v in peaks.items())
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}; matmul peak (8192^3 torch.mm) "
              f"{peak_text}; times are synchronized wall-clock time\n")
    else:
        print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} "
              f"thread(s); matmul peak (2048^3 torch.mm) {peak_text}; times are process CPU time\n")
    print("| preset | modconv | layout | precision | batch | s/step | images/s | GFLOP/step | GFLOP/s | "
          "% of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        variants = [(modconv, layout, precision) for precision in precisions
                    for modconv in args.modconv.split(",") for layout in args.layouts.split(",")]
        rows = {v: measure(preset, v[0], args.steps, args.batch, v[1], device, v[2]) for v in variants}
        # Every row does the same arithmetic; FlopCounterMode overcounts the backward of grouped
        # convolutions, so the activations formulation's count is the reference when it was measured.
        reference = next((r for (m, _, _), r in rows.items() if m == "activations"), next(iter(rows.values())))
        flops = reference["flops_step"]
        for (modconv, layout, precision), r in rows.items():
            rate = flops / r["sec_step"]
            print(f"| {preset} | {modconv} | {layout} | {precision} | {r['batch']} | {r['sec_step']:.4f} | "
                  f"{r['batch'] / r['sec_step']:.1f} | {flops / 1e9:.1f} | {rate / 1e9:.1f} | "
                  f"{100 * rate / peaks[precision]:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
