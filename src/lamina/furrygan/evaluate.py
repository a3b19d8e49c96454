"""FurryGAN evaluation (paper Sec. 4): mask quality against pseudo ground truth, FID/KID, inversion.

* :func:`generated_mask_metrics`: generate samples, segment their foregrounds (the paper
  feeds TRACER the generated foreground images) or composites with a pseudo-GT segmenter,
  and score the generator's own masks ``m > threshold`` against it (Table 2's columns;
  dataset-level confusion matrix as in Labels4Free).
* :func:`inversion_mask_metrics`: invert held-out procedural composites and score the
  masks read from the generator against their *exact* masks (Table 4's protocol, with exact
  ground truth instead of CelebAMask-HQ labels).
* :func:`evaluate_checkpoint`: both, plus FID/KID of the composites and of the foregrounds
  against real images through :func:`lamina.metrics.fid_kid` (the paper's FID is between
  generated *foregrounds* and the training set).
* :func:`score_snapshots`: the mask metrics of every snapshot a run kept
  (``snapshots/step-NNNNNNN``), to pick the step with the best masks. On lamina's scenes
  they peak before the end of a run and then drift (``benchmarks/RESULTS.md``). Score with
  another sample seed (:data:`SELECTION_SEED`) than the one the chosen model is reported
  with (``eval``'s default, 0), so the reported figure is not the maximum of noisy ones.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputFileError
from ..metrics import RandomConvFeatures, fid_kid, mask_metrics
from ..progress import progress
from .datasets import SYNTH_EVAL_SEED, ImageFolderDataset, SynthComposites, synth_masks
from .inference import invert, load_discriminator, load_generator
from .networks import WEIGHTS_NAME, FurryGANDiscriminator, FurryGANGenerator
from .segmenter import ExternalSegmenter, Segmenter, load_segmenter
from .train import SNAPSHOT_DIR as SNAPSHOTS_DIR

#: Sample seed of :func:`score_snapshots`: not ``eval``'s default (0), so that a snapshot is
#: chosen on other samples than the ones its reported figures come from.
SELECTION_SEED = 1
#: Where :func:`score_snapshots` keeps its scores inside the run folder (reused on a rerun).
SCORES_NAME = "snapshot-scores.json"
_SNAPSHOT = re.compile(r"step-(\d+)")


@torch.no_grad()
def generate_batches(G: FurryGANGenerator, count: int, truncation_psi: float = 1.0, seed: int = 0, batch: int = 100
                     ) -> dict[str, torch.Tensor]:
    """``count`` samples on the CPU: ``fg``, ``composite`` ``[N, 3, R, R]`` in [0, 1], ``alpha`` ``[N, 1, R, R]``.

    Latents and the per-pixel noise inputs (random, as in training) both come from ``seed``, so
    the same call gives the same samples; the caller's random state is left as it was.
    """
    device = G.w_avg_fg.device
    z = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed))
    parts: dict[str, list[torch.Tensor]] = {"fg": [], "composite": [], "alpha": []}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for chunk in z.split(batch):
            out = G(chunk.to(device), truncation_psi=truncation_psi, noise_mode="random")
            parts["fg"].append(((out.fg + 1) / 2).clamp(0, 1).cpu())
            parts["composite"].append(((out.composite + 1) / 2).clamp(0, 1).cpu())
            parts["alpha"].append(out.alpha.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def generated_mask_metrics(samples: dict[str, torch.Tensor], segmenter: Segmenter | ExternalSegmenter,
                           target: str = "fg", threshold: float = 0.5) -> dict[str, float]:
    """Table 2 metrics of the generated masks against ``segmenter``'s masks of ``samples[target]``.

    Both are thresholded at ``threshold`` (the paper: 0.5 for FurryGAN).
    """
    pseudo_gt = torch.cat([segmenter.predict(chunk) for chunk in samples[target].split(100)])
    return mask_metrics(samples["alpha"][:, 0], pseudo_gt[:, 0], threshold=threshold, gt_threshold=threshold)


def inversion_mask_metrics(G: FurryGANGenerator, D: FurryGANDiscriminator | None, count: int = 100,
                           steps: int = 300, batch: int = 50, threshold: float = 0.5, seed: int = SYNTH_EVAL_SEED,
                           feature_weight: float = 1.0) -> dict[str, float]:
    """Invert ``count`` held-out procedural composites and score the masks against their exact object masks."""
    images, masks = synth_masks(G.cfg.resolution, count, seed=seed)
    alphas = [invert(G, chunk, steps=steps, D=D, feature_weight=feature_weight, seed=i).alpha.cpu()
              for i, chunk in enumerate(images.split(batch))]
    return mask_metrics(torch.cat(alphas)[:, 0], masks[:, 0], threshold=threshold)


def _real_images(real: str, resolution: int, count: int):
    if real == "synth":
        return SynthComposites(resolution, length=count, seed=SYNTH_EVAL_SEED)
    return ImageFolderDataset(real, resolution)


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], count: int = 1000, truncation_psi: float = 1.0,
                        segmenter: str | os.PathLike[str] = "builtin", target: str = "fg", threshold: float = 0.5,
                        real: str | None = "synth", feature: str = "random", seed: int = 0,
                        inversion_count: int = 0, inversion_steps: int = 300,
                        inversion_feature_weight: float = 0.0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything :mod:`lamina.furrygan.evaluate` measures for one checkpoint, as a JSON-friendly dict.

    ``device``: where the generator (and the discriminator, for inversion) runs; the latents are
    drawn on the CPU, so the same ``seed`` gives the same ``z`` anywhere.

    ``real``: ``"synth"``, a folder of images, or None (no FID/KID). ``feature``: ``"random"``
    (:class:`~lamina.metrics.RandomConvFeatures`, offline, only comparable with itself) or
    ``"inception"`` (needs the local Inception weights).
    """
    G = load_generator(checkpoint, device)
    seg = load_segmenter(segmenter, resolution=G.cfg.resolution)
    samples = generate_batches(G, count, truncation_psi, seed)
    report: dict[str, Any] = {"masks": generated_mask_metrics(samples, seg, target, threshold)}
    if real is not None:
        network = RandomConvFeatures() if feature == "random" else None
        dataset = _real_images(real, G.cfg.resolution, count)
        reals = torch.stack([dataset[i] for i in range(len(dataset))])
        comp = fid_kid(reals, samples["composite"], feature=network)
        fg = fid_kid(reals, samples["fg"], feature=network)
        report["fid_kid"] = {**{f"{k}_composite": v for k, v in comp.items()}, **{f"{k}_fg": v for k, v in fg.items()}}
    if inversion_count:
        D = load_discriminator(checkpoint, device) if inversion_feature_weight else None
        report["inversion"] = inversion_mask_metrics(G, D, inversion_count, inversion_steps, threshold=threshold,
                                                     feature_weight=inversion_feature_weight)
    return report


@dataclass(frozen=True)
class SnapshotScore:
    """One snapshot's mask metrics (:func:`generated_mask_metrics`; ``masks["miou"]`` and so on)."""

    step: int
    path: Path
    masks: dict[str, float]


def list_snapshots(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete snapshot of a training run, by step."""
    root = Path(run_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        raise InputFileError(f"{run_dir}: no {SNAPSHOTS_DIR}/ folder (a FurryGAN run keeps one export per save "
                             "there when train.keep_snapshots is on)")
    found = sorted((int(match.group(1)), path) for path in root.iterdir()
                   if (match := _SNAPSHOT.fullmatch(path.name)) and (path / WEIGHTS_NAME).is_file()
                   and (path / "config.json").is_file())
    if not found:
        raise InputFileError(f"{root}: no snapshots yet (one is written every train.checkpoint_every steps)")
    return found


def score_snapshots(run_dir: str | os.PathLike[str], count: int = 1000, truncation_psi: float = 1.0,
                    segmenter: str | os.PathLike[str] = "builtin", target: str = "fg", threshold: float = 0.5,
                    seed: int = SELECTION_SEED, device: str | torch.device = "cpu") -> list[SnapshotScore]:
    """:func:`generated_mask_metrics` of every snapshot of ``run_dir``, by step.

    Scores are kept in ``run_dir/snapshot-scores.json`` with the settings they were made with
    and each snapshot's weights file stamp (size, modification time); a rerun with the same
    settings scores only the snapshots saved (or rewritten) since.
    """
    snapshots = list_snapshots(run_dir)
    settings = {"count": count, "truncation_psi": truncation_psi, "segmenter": str(segmenter), "target": target,
                "threshold": threshold, "seed": seed}
    cache_path = Path(run_dir) / SCORES_NAME
    cached: dict[str, dict[str, Any]] = {}
    if cache_path.is_file():
        try:
            saved = json.loads(cache_path.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("settings") == settings:
            cached = saved.get("scores", {})
    seg = None
    scores = []
    for step, path in progress(snapshots, desc="snapshots"):
        weights = (path / WEIGHTS_NAME).stat()
        stamp = f"{weights.st_size}-{weights.st_mtime_ns}"
        entry = cached.get(str(step))
        if entry is None or entry.get("stamp") != stamp:
            G = load_generator(path, device)
            if seg is None:
                seg = load_segmenter(segmenter, resolution=G.cfg.resolution)
            masks = generated_mask_metrics(generate_batches(G, count, truncation_psi, seed), seg, target, threshold)
            entry = cached[str(step)] = {"stamp": stamp, "masks": masks}
        scores.append(SnapshotScore(step, path, entry["masks"]))
    staged = cache_path.with_name(f".{SCORES_NAME}.tmp")
    staged.write_text(json.dumps({"settings": settings, "scores": cached}, indent=1))
    os.replace(staged, cache_path)
    return scores


def best_snapshot(scores: list[SnapshotScore], key: str = "miou") -> SnapshotScore:
    """The snapshot with the highest ``masks[key]`` (the earliest of equals)."""
    if not scores:
        raise InputFileError("no snapshot scores to choose from")
    return max(scores, key=lambda score: (score.masks[key], -score.step))
