"""FurryGAN segmentation by inversion: mask mIoU per checkpoint and inversion setting.

Inverts held-out procedural composites (``lamina.furrygan.datasets.synth_masks``) with
:func:`lamina.furrygan.inference.invert`, pixel loss only (``segment``'s default), and scores
the generator's masks against the scenes' exact object masks (thresholded at 0.5). Every
learning rate in ``--lrs`` runs on the same scenes and inversion seeds, StyleGAN2's projector
value (0.1) beside the default (``INVERSION_LR``), so the rows compare directly. Prints a
markdown table: checkpoint, lr, noise weight, mIoU, precision, recall, seconds.

    python benchmarks/bench_inversion.py [--checkpoints builtin,RUN] [--lrs 0.1,0.05] [--data-seed 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from lamina.furrygan.datasets import synth_masks
from lamina.furrygan.inference import INVERSION_LR, invert, load_generator
from lamina.furrygan.networks import FurryGANGenerator
from lamina.metrics import mask_metrics

#: StyleGAN2's projector learning rate, the baseline row.
PROJECTOR_LR = 0.1


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def score(G: FurryGANGenerator, images: torch.Tensor, masks: torch.Tensor, steps: int, batch: int,
          **invert_kwargs: float) -> dict[str, float]:
    """Mask metrics (and ``seconds``) of inverting ``images`` ``[N, 3, R, R]``, against ``masks`` ``[N, 1, R, R]``."""
    start = time.perf_counter()
    alphas = [invert(G, chunk, steps=steps, seed=i, show_progress=False, **invert_kwargs).alpha
              for i, chunk in enumerate(images.split(batch))]
    metrics = mask_metrics(torch.cat(alphas)[:, 0], masks[:, 0], threshold=0.5)
    return {**metrics, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="builtin", help="Comma-separated checkpoints.")
    parser.add_argument("--lrs", type=_floats, default=[PROJECTOR_LR, INVERSION_LR], help="Comma-separated.")
    parser.add_argument("--noise-weights", type=_floats, default=[1e5], help="Comma-separated.")
    parser.add_argument("--count", type=int, default=100, help="Scenes.")
    parser.add_argument("--steps", type=int, default=200, help="Inversion steps.")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--data-seed", type=int, default=5,
                        help="Scene seed (eval's --inversion uses 1; tune on another).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print("| checkpoint | lr | noise weight | mIoU | precision | recall | s |")
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints.split(","):
        G = load_generator(checkpoint)  # invert() leaves it untouched, so every setting shares it
        images, masks = synth_masks(G.cfg.resolution, args.count, seed=args.data_seed)
        for noise_weight in args.noise_weights:
            for lr in args.lrs:
                m = score(G, images, masks, args.steps, args.batch, lr=lr, noise_weight=noise_weight)
                print(f"| {checkpoint} | {lr:g} | {noise_weight:g} | {m['miou']:.4f} | {m['precision']:.4f} "
                      f"| {m['recall']:.4f} | {m['seconds']:.0f} |", flush=True)
    print(f"\n{args.count} scenes (data seed {args.data_seed}), {args.steps} steps, pixel loss, "
          f"{args.threads} threads")


if __name__ == "__main__":
    main()
