"""FurryGAN training loop: one function, read top to bottom.

``training_loop(cfg, dataset, run_dir)`` trains with :class:`FurryGANLoss` per step: the D
update, lazy R1 every ``loss.r1_interval`` steps, the G update, then the EMA generator. It
runs single-process on CPU or under ``accelerate launch``/``torchrun`` on several GPUs or
nodes; gradients are averaged across processes by hand after each phase (as stylegan3 does)
rather than by wrapping the networks in DDP, because each phase calls parts of G and D
(mapping, foreground, background, the mask predictor alone).

The run folder follows lamina's run protocol (:class:`lamina.training.RunDir`):

* ``training-config.json``: the resolved configuration;
* ``training-state.pt``: everything needed to resume (networks, EMA, optimizers, counters),
  replaced atomically; **rerunning the same command resumes** from it (``train.*`` options may
  change, ``model.*`` and ``loss.*`` may not);
* ``export/``: the EMA generator as ``config.json`` + ``model.safetensors``
  (:meth:`FurryGANGenerator.from_pretrained`), and ``discriminator.safetensors`` (for GAN inversion);
* ``snapshots/step-NNNNNNN/``: the same export kept from every checkpoint (``train.keep_snapshots``);
* ``previews/step-NNNNNNN.png``: grids ``fg | mask | fine | fg*m | bg | composite``;
* ``log.jsonl``: every ``train.log_every`` steps, one JSON line with that step's loss terms
  (averaged over processes), and ``losses.png``, its curves, redrawn with every preview.

Run folders of earlier versions (``config.json``, ``pretrained/``, ``samples/``) are migrated.
Randomness is re-seeded from ``(seed, rank, step)`` at every step, so a resumed run continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, LaminaError, TrainingDivergedError
from ..io.atomic import atomic_output
from ..progress import progress
from ..training import (
    CONFIG_NAME,
    EXPORT_DIR,
    LOG_NAME,
    PLOT_NAME,
    PREVIEW_DIR,
    SNAPSHOT_DIR,
    STATE_NAME,
    Deadline,
    RunDir,
    ema_update_,
    float32_precision,
)
from .config import FurryGANConfig
from .losses import FurryGANLoss
from .networks import FurryGANDiscriminator, FurryGANGenerator

__all__ = ["CONFIG_NAME", "EXPORT_DIR", "LOG_NAME", "PLOT_NAME", "PREVIEW_DIR", "SNAPSHOT_DIR", "STATE_NAME",
           "TrainResult", "TrainingDivergedError", "sample_grid", "training_loop"]


@dataclass
class TrainResult:
    """Where a call to :func:`training_loop` stopped."""

    step: int
    nimg: int
    run_dir: Path
    #: The trained networks of this process, ``{"G", "D", "G_ema"}``.
    networks: dict[str, torch.nn.Module] | None = None
    #: True when ``stop_after_s`` ended the call before ``train.total_steps``.
    timed_out: bool = False


def training_loop(
    cfg: FurryGANConfig,
    dataset: Dataset,
    run_dir: str | os.PathLike[str],
    accelerator=None,
    num_workers: int = 0,
    show_progress: bool | None = None,
    stop_after_s: float | None = None,
    echo: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train FurryGAN for ``cfg.train.total_steps`` steps, resuming from ``run_dir`` if it holds a state.

    Args:
        cfg: the run configuration. On resume its ``model`` and ``loss`` sections must equal
            the saved ones; ``train`` may change (e.g. a larger ``total_steps``).
        dataset: items are images ``[3, H, W]`` (float in [0, 1] or uint8), or tuples whose
            first element is one, with ``H = W = cfg.model.resolution``.
        run_dir: output folder (created).
        accelerator: an ``accelerate.Accelerator``; a default one is made when None.
        num_workers: DataLoader worker processes.
        show_progress: progress bar on the main process (None: unless ``LAMINA_PROGRESS=0``).
        stop_after_s: stop, after saving, once this many seconds have passed in this call (every
            process stops at the same step); rerunning resumes.
        echo: where one-line notices go (migration of an old run folder, a re-made export).
    Raises:
        TrainingDivergedError: a loss became NaN/Inf or too large; nothing is saved for it.
        ConfigError: ``run_dir`` holds a run with another ``model``/``loss`` configuration.
    """
    from ..extras import require

    Accelerator = require("accelerate", "train").Accelerator
    acc = accelerator or Accelerator()
    tc, device, rank, world = cfg.train, acc.device, acc.process_index, acc.num_processes
    run_dir = Path(run_dir)
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size ({tc.batch_size}) must be divisible by the number of processes ({world})")
    batch_gpu = tc.batch_size // world
    run = RunDir(run_dir, is_main=acc.is_main_process, echo=echo)
    run.open(cfg.to_dict(), may_change=("train.",), normalize=lambda d: FurryGANConfig.from_dict(d).to_dict())
    acc.wait_for_everyone()

    # Networks, EMA generator, optimizers (same initial weights on every process).
    torch.manual_seed(tc.seed)
    G = FurryGANGenerator(cfg.model).train().to(device)
    D = FurryGANDiscriminator(cfg.model).train().to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    layout = torch.channels_last if tc.channels_last else torch.contiguous_format
    G, D = G.to(memory_format=layout), D.to(memory_format=layout)
    adam = {which: cfg.optimizer_kwargs(which) for which in ("G", "D")}
    opt_G = torch.optim.Adam(G.parameters(), **adam["G"])
    opt_D = torch.optim.Adam(D.parameters(), **adam["D"])
    loss = FurryGANLoss(G, D, cfg, backward=acc.backward)

    def write_export(folder: Path) -> None:
        G_ema.update_w_avg()
        G_ema.save_pretrained(folder, cfg)
        D.save_pretrained(folder)

    # Resume from the training state, if any; re-make an export older than it (a kill between the two saves).
    start_step = nimg = 0
    state = run.load_state()
    if state is not None:
        for module, key in ((G, "G"), (D, "D"), (G_ema, "G_ema"), (opt_G, "opt_G"), (opt_D, "opt_D")):
            module.load_state_dict(state[key])
        start_step, nimg = state["step"], state["nimg"]
        del state
        if run.export_is_stale():
            run.echo(f"re-making the export of step {start_step} (older than the training state)")
            run.export(write_export, start_step)
    acc.wait_for_everyone()

    # Data: an endless shuffled stream that restarts where the state left off.
    sampler = _InfiniteSampler(len(dataset), rank, world, tc.seed, start=nimg)
    batches = iter(DataLoader(dataset, batch_size=batch_gpu, sampler=sampler, num_workers=num_workers))
    sample_z = torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(tc.seed + 1)).to(device)

    done = start_step
    t_log, steps_since_log = time.perf_counter(), 0
    hide = (not acc.is_main_process) or (None if show_progress is None else not show_progress)
    steps = range(start_step, tc.total_steps)
    deadline, timed_out = Deadline(stop_after_s), False
    with float32_precision(tc.precision):
        for step in progress(steps, desc="furrygan", total=len(steps), disable=hide):
            torch.manual_seed(_step_seed(tc.seed, rank, step))
            real = _to_model_range(next(batches), cfg.model.resolution).to(device).contiguous(memory_format=layout)
            if tc.hflip:  # official RandomHorizontalFlip
                real = torch.where(torch.rand(real.shape[0], 1, 1, 1, device=device) < 0.5, real.flip(3), real)

            for opt, which in ((opt_G, "G"), (opt_D, "D")):  # train.lr_rampdown_steps (1 when off)
                for group in opt.param_groups:
                    group["lr"] = adam[which]["lr"] * tc.lr_scale(step)

            # Discriminator: adversarial + mask prediction (Eq. 11), then lazy R1.
            stats = _update(loss, "D", real, torch.randn(batch_gpu, G.z_dim, device=device), step, D, opt_D, acc)
            if cfg.loss.r1_due(step):
                stats |= _update(loss, "Dreg", real, None, step, D, opt_D, acc)

            # Generator (Eq. 12), then its EMA.
            stats |= _update(loss, "G", real, torch.randn(batch_gpu, G.z_dim, device=device), step, G, opt_G, acc)
            nimg += tc.batch_size
            ema_update_(G_ema, G, tc.ema_beta(tc.batch_size, nimg), copy_buffers=False)  # w_avg is recomputed
            done = step + 1

            # Stop on NaN/Inf or an exploding loss (on any process), before anything is saved from this state.
            stacked = torch.stack(list(stats.values()))
            stacked = acc.reduce(stacked, reduction="mean") if world > 1 else stacked
            values = dict(zip(stats, stacked.cpu().tolist(), strict=True))
            run.check_losses(done, values, tc.max_loss, record={"nimg": nimg})

            # The last step of this call (total_steps, or the time limit) is logged, previewed and saved.
            timed_out = done < tc.total_steps and deadline.passed(acc)
            last_step = done == tc.total_steps or timed_out

            # Loss log.
            steps_since_log += 1
            if acc.is_main_process and (last_step or done % tc.log_every == 0):
                now = time.perf_counter()
                run.log({"step": done, "nimg": nimg, "fine_gamma": cfg.loss.fine_gamma(step),
                         "lr_scale": tc.lr_scale(step), "sec_per_step": (now - t_log) / steps_since_log, **values})
                t_log, steps_since_log = now, 0

            # Preview grid.
            if acc.is_main_process and (last_step or done % tc.preview_every == 0):
                G_ema.update_w_avg()
                psi, gamma = tc.preview_psi, cfg.loss.fine_gamma(step)
                grid = sample_grid(G_ema, sample_z, truncation_psi=psi, fine_gamma=gamma)
                with atomic_output(run.preview_path(done), overwrite=True) as staged:
                    Image.fromarray(grid).save(staged)
                run.plot()

            # Training state, then the inference export (and its snapshot).
            if last_step or done % tc.checkpoint_every == 0:
                if acc.is_main_process:
                    G_ema.update_w_avg()
                    run.save_state({"step": done, "nimg": nimg, "config": cfg.to_dict(), "G": G.state_dict(),
                                    "D": D.state_dict(), "G_ema": G_ema.state_dict(), "opt_G": opt_G.state_dict(),
                                    "opt_D": opt_D.state_dict()})
                    run.export(write_export, done, snapshot=tc.keep_snapshots)
                run.saved_step = done
                acc.wait_for_everyone()
            if timed_out:
                break
    return TrainResult(step=done, nimg=nimg, run_dir=run_dir, networks={"G": G, "D": D, "G_ema": G_ema},
                       timed_out=timed_out)


# ----------------------------------------------------------------------------- helpers
def _update(loss: FurryGANLoss, phase: str, real, z, step: int, module: torch.nn.Module,
            opt: torch.optim.Optimizer, acc) -> dict[str, torch.Tensor]:
    """One optimizer step of ``phase``: zero grads, accumulate, average across processes, step."""
    opt.zero_grad(set_to_none=True)
    stats = loss.accumulate_gradients(phase, real, z, step)
    if acc.num_processes > 1:
        params = [p for p in module.parameters() if p.grad is not None]
        flat = acc.reduce(torch.cat([p.grad.flatten() for p in params]), reduction="mean")
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad.copy_(g.view_as(p))
    opt.step()
    return stats


@torch.no_grad()
def _step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step * 104_729) % (2**63)


def _to_model_range(item, resolution: int) -> torch.Tensor:
    """A DataLoader batch (tensor or tuple) in [0, 1] or uint8 -> float ``[N, 3, R, R]`` in [-1, 1]."""
    images = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (3, resolution, resolution):
        shape = tuple(images.shape[1:]) if isinstance(images, torch.Tensor) else type(images).__name__
        raise LaminaError(f"training images must be [3, {resolution}, {resolution}] tensors, got {shape}")
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return images * 2.0 - 1.0


class _InfiniteSampler(Sampler[int]):
    """Endless shuffled indices: epoch ``e`` is ``randperm(size)`` seeded by ``seed + e``.

    Process ``rank`` of ``world`` takes global positions ``start + rank, start + rank + world, ...``,
    so ``start = images consumed so far`` resumes the exact stream.
    """

    def __init__(self, size: int, rank: int, world: int, seed: int, start: int = 0) -> None:
        if size < 1:
            raise LaminaError("the training dataset is empty")
        self.size, self.rank, self.world, self.seed, self.start = size, rank, world, seed, start

    def __iter__(self) -> Iterator[int]:
        pos, epoch, order = self.start + self.rank, -1, None
        while True:
            if pos // self.size != epoch:
                epoch = pos // self.size
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            yield int(order[pos % self.size])
            pos += self.world


@torch.no_grad()
def sample_grid(G: FurryGANGenerator, z: torch.Tensor, truncation_psi: float = 1.0, fine_gamma: float = 1.0
                ) -> np.ndarray:
    """Rows ``fg | mask | fine | fg*m | bg | composite`` for each latent, as ``uint8`` ``[N*H, 6*W, 3]``.

    ``fine`` is what the fine mask adds after clipping, ``m - m_coarse``; ``fg*m`` is on black.
    """
    out = G(z, truncation_psi=truncation_psi, fine_gamma=fine_gamma, noise_mode="const")
    unit = lambda x: (x + 1.0) / 2.0  # noqa: E731
    gray = lambda m: m.expand(-1, 3, -1, -1)  # noqa: E731
    columns = [unit(out.fg), gray(out.alpha), gray((out.alpha - out.alpha_coarse).clamp(0, 1)),
               unit(out.fg) * out.alpha, unit(out.bg), unit(out.composite)]
    grid = torch.cat([torch.cat(list(c), dim=1) for c in columns], dim=2)  # [3, N*H, 6*W]
    return (grid.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
