"""Pseudo ground truth for FurryGAN's mask evaluation: a small supervised segmenter.

The paper scores generated masks against TRACER's masks of the generated foregrounds
(Sec. 4, "Pseudo ground truth masks"). TRACER's weights cannot be downloaded here, and it
knows nothing of lamina's procedural domain, so lamina trains its own: a small U-Net
(:class:`Segmenter`) supervised by the exact object masks of procedural scenes
(:func:`train_segmenter`). For real domains, :func:`load_segmenter` accepts any local
TorchScript file or pickled ``nn.Module`` that maps images ``[N, 3, H, W]`` in [0, 1] to
foreground probabilities ``[N, 1, H, W]``::

    seg = train_segmenter("runs/segmenter", resolution=32, steps=2000)
    seg = load_segmenter("builtin", 64)        # the one shipped with lamina for 64 px images
    prob = seg.predict(images)                 # [N, 1, H, W] in [0, 1], any H, W
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import SceneConfig
from ..errors import InputFileError
from ..io.atomic import atomic_output
from ..metrics import mask_metrics
from ..progress import progress
from .config import ConfigError
from .datasets import SYNTH_SCENES, synth_masks

FORMAT = "lamina.furrygan.segmenter"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: The segmenters shipped with lamina by the resolution they were trained at, on ``SYNTH_SCENES``
#: (the pseudo-GT of the built-in GAN and of models trained at those sizes).
BUILTIN_DIRS = {32: Path(__file__).parent / "assets" / "segmenter",
                64: Path(__file__).parent / "assets" / "segmenter-64"}


def builtin_segmenter_dir(resolution: int | None = None) -> Path:
    """The built-in segmenter for images of ``resolution`` px: the one trained nearest to it (32 px if None).

    A GAN's masks are scored at its own resolution, so a 64 px model gets the 64 px segmenter
    rather than masks predicted at 32 px and upsampled.
    """
    installed = {r: d for r, d in BUILTIN_DIRS.items() if (d / WEIGHTS_NAME).is_file()}
    if not installed:
        raise InputFileError("lamina's built-in segmenter is not installed (assets/segmenter is missing)")
    target = 32 if resolution is None else resolution
    return installed[min(installed, key=lambda r: (abs(math.log2(r / target)), -r))]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU())


class Segmenter(nn.Module):
    """U-Net with ``depth`` 2x downsamplings (``channels * 2**i`` wide), run at ``resolution`` px.

    ``forward`` returns logits ``[N, 1, R, R]`` for images ``[N, 3, R, R]`` in [0, 1];
    :meth:`predict` resizes any input to ``resolution`` and the probabilities back.
    """

    def __init__(self, resolution: int = 32, channels: int = 16, depth: int = 3) -> None:
        super().__init__()
        if resolution % 2**depth:
            raise ConfigError(f"resolution {resolution} must be divisible by 2**depth = {2**depth}")
        self.config = {"format": FORMAT, "resolution": resolution, "channels": channels, "depth": depth}
        widths = [channels * 2**i for i in range(depth + 1)]
        pairs = list(zip(widths, widths[1:], strict=False))  # (width at scale i, width at scale i + 1)
        self.encoders = nn.ModuleList([_block(3, widths[0])] + [_block(a, b) for a, b in pairs])
        self.decoders = nn.ModuleList([_block(b + a, a) for a, b in pairs])
        self.head = nn.Conv2d(widths[0], 1, 1)

    @property
    def resolution(self) -> int:
        return self.config["resolution"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x * 2.0 - 1.0
        for i, enc in enumerate(self.encoders):
            h = enc(F.avg_pool2d(h, 2) if i else h)
            skips.append(h)
        for dec, skip in zip(reversed(self.decoders), reversed(skips[:-1]), strict=True):
            h = dec(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.head(h)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``[N, 1, H, W]`` for images ``[N, 3, H, W]`` in [0, 1] (any size)."""
        return _resized_predict(lambda x: torch.sigmoid(self(x)), images, self.resolution, self)

    def save(self, directory: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to ``directory``.

        ``dtype``: of the stored weights (``torch.float16`` halves the file; :meth:`load` runs in float32).
        """
        directory = Path(directory)
        tensors = {k: v.detach().cpu().to(dtype).contiguous() for k, v in self.state_dict().items()}
        with atomic_output(directory / WEIGHTS_NAME, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        with atomic_output(directory / CONFIG_NAME, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Segmenter:
        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
            if config.pop("format", None) != FORMAT:
                raise ValueError(f"config.json is not a {FORMAT}")
            model = cls(**config)
            model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise InputFileError(f"{directory}: not a lamina segmenter ({exc})") from None
        return model.eval().requires_grad_(False)


class ExternalSegmenter(nn.Module):
    """A user's segmentation module (TorchScript or pickled ``nn.Module``) behind :meth:`predict`.

    The module must map float images ``[N, 3, H, W]`` in [0, 1] to foreground probabilities
    ``[N, 1, H, W]`` (or ``[N, H, W]``) in [0, 1]; ``resolution`` (optional) is the size the
    images are resized to first.
    """

    def __init__(self, module: nn.Module, resolution: int | None = None) -> None:
        super().__init__()
        self.module, self.resolution = module.eval(), resolution

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        def run(x: torch.Tensor) -> torch.Tensor:
            out = self.module(x)
            out = out.unsqueeze(1) if out.ndim == 3 else out
            if out.ndim != 4 or out.shape[1] != 1:
                raise InputFileError(f"the segmenter returned shape {tuple(out.shape)}; expected [N, 1, H, W]")
            return out.float().clamp(0.0, 1.0)

        return _resized_predict(run, images, self.resolution, self.module)


def _resized_predict(run, images: torch.Tensor, resolution: int | None, module: nn.Module) -> torch.Tensor:
    was_training = module.training
    module.eval()
    try:
        param = next(module.parameters(), None)
        x = images.float().to(param.device if param is not None else images.device)
        if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        out = run(x)
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out.cpu()
    finally:
        module.train(was_training)


def load_segmenter(path: str | os.PathLike[str], resolution: int | None = None) -> Segmenter | ExternalSegmenter:
    """``"builtin"``, a folder written by :meth:`Segmenter.save`, or a TorchScript / pickled ``nn.Module`` file.

    Pickled modules run code when loaded: use only files you trust. ``resolution``: the size of
    the images to segment. It picks among the built-in segmenters (:func:`builtin_segmenter_dir`)
    and resizes the inputs of an external module (a lamina folder knows its own resolution).
    """
    if str(path) == "builtin":
        return Segmenter.load(builtin_segmenter_dir(resolution))
    path = Path(path)
    if path.is_dir():
        return Segmenter.load(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such segmenter (a folder from train-segmenter, or a .pt/.ts module file)")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError):
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a module file"
            raise InputFileError(f"{path}: cannot load a segmentation module ({type(exc).__name__}: {exc})") from None
    if not isinstance(module, nn.Module):
        raise InputFileError(f"{path}: holds a {type(module).__name__}, not a torch nn.Module")
    return ExternalSegmenter(module, resolution)


# ----------------------------------------------------------------------------- training
def train_segmenter(out_dir: str | os.PathLike[str] | None, resolution: int = 32, steps: int = 2000,
                    batch: int = 32, lr: float = 2e-3, channels: int = 16, depth: int = 3, seed: int = 0,
                    scenes: SceneConfig = SYNTH_SCENES, show_progress: bool | None = None) -> Segmenter:
    """Train a :class:`Segmenter` on procedural scenes with exact masks; save it to ``out_dir`` (if given).

    Loss: binary cross-entropy against the soft object alpha plus a soft Dice term; AdamW
    with a cosine learning-rate decay. Augmentation (flips, blur, noise) makes it robust to
    the artefacts of generated images it will judge. Each step draws new scenes: items
    ``step * batch ...`` of the procedural dataset with seed ``seed`` (never the held-out
    evaluation scenes, dataset seed 1, unless ``seed=1``).
    """
    torch.manual_seed(seed)
    model = Segmenter(resolution, channels, depth).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay to 0
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t / steps, 1.0))))
    for step in progress(range(steps), desc="segmenter", disable=None if show_progress is None else not show_progress):
        images, masks = synth_masks(resolution, batch, seed=seed, start=step * batch, scenes=scenes)
        images, masks = _augment(images, masks)
        logits = model(images)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * masks).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + masks.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, masks) + dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval().requires_grad_(False)
    if out_dir is not None:
        model.save(out_dir)
    return model


def _augment(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flips; blur (down- and upsampling by 2) on 30%; Gaussian noise up to 0.05 on 50%."""
    n = images.shape[0]
    flip = torch.rand(n, 1, 1, 1) < 0.5
    images, masks = torch.where(flip, images.flip(3), images), torch.where(flip, masks.flip(3), masks)
    blurred = F.interpolate(F.avg_pool2d(images, 2), size=images.shape[-2:], mode="bilinear", align_corners=False)
    images = torch.where(torch.rand(n, 1, 1, 1) < 0.3, blurred, images)
    sigma = 0.05 * torch.rand(n, 1, 1, 1) * (torch.rand(n, 1, 1, 1) < 0.5)
    return (images + sigma * torch.randn_like(images)).clamp(0.0, 1.0), masks


def evaluate_segmenter(segmenter: Segmenter | ExternalSegmenter, resolution: int, count: int = 500,
                       scenes: SceneConfig = SYNTH_SCENES, threshold: float = 0.5) -> dict[str, float]:
    """Mask metrics of ``segmenter`` on ``count`` held-out procedural scenes against their exact masks."""
    images, masks = synth_masks(resolution, count, scenes=scenes)
    pred = torch.cat([segmenter.predict(chunk) for chunk in images.split(64)])
    return mask_metrics(pred[:, 0], masks[:, 0], threshold=threshold)
