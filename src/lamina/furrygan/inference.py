"""Using a trained FurryGAN: load a checkpoint, sample layered images, segment real images by inversion.

A checkpoint is a run folder (its ``export/`` is used; ``pretrained/`` in older runs), an export folder
(``config.json`` + ``model.safetensors``, optionally ``discriminator.safetensors``; a run's
``snapshots/step-NNNNNNN`` are export folders too), or
``"builtin"``/``"tiny"``: the model shipped with lamina (:func:`load_builtin`; ``"builtin-64"``: the
64 px one)::

    G = load_generator("builtin")
    images = generate(G, n=8, truncation_psi=0.7, seed=0)       # list of LayeredImage
    result = invert(G, real_images, steps=300, D=load_discriminator("builtin"))
    masks = result.alpha                                         # [N, 1, R, R]

Segmentation by inversion (paper Sec. 4.4, "the original inversion method from StyleGAN2";
rosinality's ``projector.py``) optimises per-layer styles w+ of both generators and every
noise map to reconstruct the image, then reads the mask the generator draws for them.
LPIPS weights cannot be downloaded, so the perceptual distance is built from what the
checkpoint has: a multi-scale L1 pyramid of the pixels plus, optionally (``D`` given), the
distance between the discriminator's unit-normalised feature maps (LPIPS's recipe, with the
FurryGAN discriminator in place of VGG). On the 32-px built-in model the pixel pyramid
alone gave the better masks, so the CLI leaves the feature term off by default.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputFileError
from ..layers import LayeredImage
from ..progress import progress
from .config import FurryGANConfig
from .networks import (
    DISCRIMINATOR_NAME,
    WEIGHTS_NAME,
    FurryGANDiscriminator,
    FurryGANGenerator,
    GeneratorOutput,
    NoiseInjection,
)
from .train import EXPORT_DIR, STATE_NAME

#: The built-in model: ``tiny`` preset trained on ``datasets.SYNTH_SCENES`` (see ``assets/builtin/README.md``).
BUILTIN_DIR = Path(__file__).parent / "assets" / "builtin"
#: The 64 px built-in model (``tiny`` networks at 64 px; its README gives the figures).
BUILTIN_64_DIR = Path(__file__).parent / "assets" / "builtin-64"
#: Checkpoint names of the shipped models: ``builtin``/``tiny`` (32 px, the default) and ``builtin-64``.
BUILTINS = {"builtin": BUILTIN_DIR, "tiny": BUILTIN_DIR, "builtin-64": BUILTIN_64_DIR}
BUILTIN_NAMES = tuple(BUILTINS)

#: Adam learning rate of :func:`invert`. StyleGAN2's projector uses 0.1; on the built-in
#: 32-px models 0.05 gave better masks (pixel loss, 200 steps, 100 held-out scenes: mIoU
#: 0.832 -> 0.847 on a tuning set, 0.806 -> 0.828 on the evaluation set; 0.03 was level
#: with 0.05 and 0.2 worse; benchmarks/RESULTS.md, "Inversion learning rate").
INVERSION_LR = 0.05


def resolve_checkpoint(checkpoint: str | os.PathLike[str]) -> Path:
    """The export folder of ``checkpoint`` (a run folder, an export folder, or a built-in name)."""
    if str(checkpoint) in BUILTINS:
        folder = BUILTINS[str(checkpoint)]
        if not (folder / WEIGHTS_NAME).is_file():
            raise InputFileError(f"the built-in FurryGAN model {checkpoint!r} is not installed ({folder} is missing)")
        return folder
    path = Path(checkpoint)
    if (path / WEIGHTS_NAME).is_file():
        return path
    for export in (EXPORT_DIR, "pretrained"):  # "pretrained": run folders of earlier versions
        if (path / export / WEIGHTS_NAME).is_file():
            return path / export
    if not path.exists():
        raise InputFileError(f"{path}: no such checkpoint (a run folder, an export folder, or "
                             f"{' / '.join(BUILTIN_NAMES)})")
    if (path / STATE_NAME).is_file():
        raise InputFileError(f"{path}: this run has not exported a model yet ({EXPORT_DIR}/ is written every "
                             "train.checkpoint_every steps; rerun the training command to re-make it)")
    raise InputFileError(f"{path}: not a FurryGAN run or export folder (no {WEIGHTS_NAME})")


def load_generator(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> FurryGANGenerator:
    """The EMA generator of ``checkpoint`` (see :func:`resolve_checkpoint`), in eval mode."""
    return FurryGANGenerator.from_pretrained(resolve_checkpoint(checkpoint), map_location=device)


def load_builtin(device: str | torch.device = "cpu") -> FurryGANGenerator:
    """lamina's built-in FurryGAN generator (32 px, trained on procedural scenes)."""
    return load_generator("builtin", device)


def load_discriminator(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
                       ) -> FurryGANDiscriminator | None:
    """The discriminator saved with ``checkpoint``, or None if the export has none."""
    directory = resolve_checkpoint(checkpoint)
    if (directory / DISCRIMINATOR_NAME).is_file():
        return FurryGANDiscriminator.from_pretrained(directory, device)
    return None


def export_run(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Export a run's latest training state: the EMA generator (with a fresh truncation centre) and D.

    Writes ``config.json``, ``model.safetensors`` and ``discriminator.safetensors`` to ``out_dir``
    (what the training loop writes to ``run/export`` at each checkpoint, reproducible from the state).
    """
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        raise InputFileError(f"{run_dir}: no training state ({STATE_NAME}) to export")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = FurryGANConfig.from_dict(state["config"])
    G, D = FurryGANGenerator(cfg.model), FurryGANDiscriminator(cfg.model)
    G.load_state_dict(state["G_ema"])
    D.load_state_dict(state["D"])
    G.update_w_avg()
    G.save_pretrained(out_dir, cfg)
    D.save_pretrained(out_dir)
    return Path(out_dir)


@torch.no_grad()
def generate(G: FurryGANGenerator, n: int, truncation_psi: float = 1.0, seed: int = 0, batch: int = 64,
             noise_mode: str = "const") -> list[LayeredImage]:
    """``n`` samples as two-layer images; latent ``i`` is row ``i`` of ``randn(n, z_dim)`` seeded by ``seed``."""
    device = G.w_avg_fg.device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    images = []
    for start in range(0, n, batch):
        out = G(z[start:start + batch].to(device, G.w_avg_fg.dtype), truncation_psi=truncation_psi,
                noise_mode=noise_mode)
        for i in range(len(out)):
            image = out.to_layered(i)
            image.metadata.update({"seed": seed, "index": start + i, "truncation_psi": truncation_psi})
            images.append(image)
    return images


# ----------------------------------------------------------------------------- inversion
@dataclass
class InversionResult:
    """Attributes:
        output: the reconstruction (both layers, masks, composite, the optimised w+), detached.
        target: the images inverted, ``[N, 3, R, R]`` in [0, 1].
        losses: the reconstruction loss at each step (mean over the batch).
    """

    output: GeneratorOutput
    target: torch.Tensor
    losses: list[float]

    @property
    def alpha(self) -> torch.Tensor:
        """The segmentation: the generator's mask m for the inverted latents, ``[N, 1, R, R]`` in [0, 1]."""
        return self.output.alpha

    def to_layered(self, i: int) -> LayeredImage:
        """Image ``i`` cut out by its mask over the inverted background.

        The foreground layer holds the *real* pixels with alpha m; the background layer is the
        generator's background for the inverted latents (what it draws behind the object).
        """
        return LayeredImage.from_foreground(self._background(i), self.target[i].float().cpu().clamp(0, 1),
                                            self.alpha[i].float().cpu().clamp(0, 1),
                                            metadata={"method": "furrygan-inversion"})

    def _background(self, i: int) -> torch.Tensor:
        """The generator's background for image ``i``, ``[3, R, R]`` in [0, 1] on the CPU."""
        return ((self.output.bg[i].float().cpu() + 1) / 2).clamp(0, 1)

    def alpha_at(self, i: int, height: int, width: int) -> torch.Tensor:
        """Mask ``i`` on the ``height x width`` image it was centre-cropped from: ``[1, H, W]`` in [0, 1].

        The model saw the centred ``min(H, W)`` square (:func:`square_window`); the mask is
        upsampled to it, and the strips the crop left out continue its edge rows/columns.
        """
        return uncrop(self.alpha[i].float().cpu(), height, width).clamp(0, 1)

    def to_layered_at(self, i: int, image: torch.Tensor, grow: int = 2) -> LayeredImage:
        """Image ``i`` as layers at its own size: ``image`` ``[3, H, W]`` in [0, 1] (the original, uncropped).

        The foreground layer holds the original pixels with the mask of :meth:`alpha_at`; the
        background layer is the original image except under the object (the mask grown by
        ``grow`` pixels), where the generator's inverted background shows through, upsampled.
        """
        _, height, width = image.shape
        alpha = self.alpha_at(i, height, width)
        bg = uncrop(self._background(i), height, width)
        cover = F.max_pool2d(alpha[None], 2 * grow + 1, stride=1, padding=grow)[0] if grow else alpha
        background = torch.lerp(image, bg, cover)
        return LayeredImage.from_foreground(background, image, alpha, metadata={"method": "furrygan-inversion"})


def square_window(height: int, width: int) -> tuple[slice, slice]:
    """The centred square of an ``H x W`` image that :func:`~lamina.data.datasets.resize_crop` keeps (to a pixel)."""
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    return slice(y0, y0 + side), slice(x0, x0 + side)


def uncrop(square: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A ``[C, R, R]`` map of the centred square back on an ``H x W`` canvas: resized, edges continued."""
    rows, cols = square_window(height, width)
    side = rows.stop - rows.start
    resized = F.interpolate(square[None], size=(side, side), mode="bilinear", align_corners=False,
                            antialias=side < square.shape[-1])
    pad = (cols.start, width - cols.stop, rows.start, height - rows.stop)
    return F.pad(resized, pad, mode="replicate")[0] if any(pad) else resized[0]


def pyramid_l1(a: torch.Tensor, b: torch.Tensor, min_size: int = 8) -> torch.Tensor:
    """Per-sample mean absolute difference ``[N]``, summed over scales (full, 1/2, ... down to ``min_size``)."""
    loss = (a - b).abs().flatten(1).mean(1)
    while a.shape[-1] // 2 >= min_size:
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        loss = loss + (a - b).abs().flatten(1).mean(1)
    return loss


def feature_distance(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style distance ``[N]``: channel-unit-normalised features, squared difference, mean over space, summed."""
    total = 0.0
    for a, b in zip(feats_a, feats_b, strict=True):
        a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (a - b).square().sum(1).flatten(1).mean(1)
    return total


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """rosinality's projector: squared autocorrelation of each noise map at shift 1 (x and y), over a pyramid."""
    loss = 0.0
    for noise in noises:
        while True:
            for dim in (2, 3):
                loss = loss + (noise * noise.roll(1, dims=dim)).mean().square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return loss


def _lr_at(t: float, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Cosine ramp-down over the last ``rampdown`` and linear ramp-up over the first ``rampup`` (projector.py)."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


def invert(G: FurryGANGenerator, images: torch.Tensor, steps: int = 300, lr: float = INVERSION_LR,
           D: FurryGANDiscriminator | None = None, feature_weight: float = 1.0, noise_weight: float = 1e5,
           seed: int = 0, show_progress: bool | None = None) -> InversionResult:
    """Invert ``images`` ``[N, 3, R, R]`` in [0, 1] (R = the generator's resolution) into w+ and noise.

    Optimises, with Adam, the styles ``w+`` of both layers (started at the mean w, with
    decaying latent noise as in StyleGAN2's projector) and one noise map per layer and
    sample, to minimise ``pyramid_l1 + feature_weight * feature_distance(D) + noise_weight *
    noise_regularization``. ``D`` None: pixels only. Returns the reconstruction with its mask.
    """
    res = G.cfg.resolution
    if images.ndim != 4 or images.shape[1:] != (3, res, res):
        raise InputFileError(f"images to invert must be [N, 3, {res}, {res}], got {tuple(images.shape)}")
    gen = torch.Generator().manual_seed(seed)
    device = G.w_avg_fg.device
    G = copy.deepcopy(G).eval().requires_grad_(False)
    n = images.shape[0]
    target = images.to(device).float() * 2 - 1

    # Start at the mean w; the latent noise scale is the spread of w (projector.py).
    with torch.no_grad():
        z = torch.randn(4096, G.z_dim, generator=gen).to(device)
        w_fg, w_bg = G.mapping_fg(z), G.mapping_bg(z[:, : G.z_bg_dim])
    stats = [(w.mean(0), (w - w.mean(0)).square().sum(1).mean().sqrt()) for w in (w_fg, w_bg)]
    ws = [mean.detach().expand(n, G.num_ws, -1).clone().requires_grad_(True) for mean, _ in stats]

    # One optimisable noise map per NoiseInjection and sample, read through the "const" noise mode.
    noises = []
    for module in G.modules():
        if isinstance(module, NoiseInjection):
            module.noise_const = torch.randn(n, 1, *module.noise_const.shape[-2:], generator=gen).to(device)
            module.noise_const.requires_grad_(True)
            noises.append(module.noise_const)

    target_feats = None
    if D is not None:
        D = copy.deepcopy(D).to(device).eval().requires_grad_(False)
        with torch.no_grad():
            target_feats = D.features(target)

    opt = torch.optim.Adam(ws + noises, lr=lr)
    losses = []
    for step in progress(range(steps), desc="invert", disable=None if show_progress is None else not show_progress):
        t = step / steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(t, lr)
        strength = 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
        ws_n = [w + torch.randn(w.shape, generator=gen).to(device) * std * strength
                for w, (_, std) in zip(ws, stats, strict=True)]
        out = G.synthesis(ws_n[0], ws_n[1], noise_mode="const")
        recon = pyramid_l1(out.composite, target)
        if target_feats is not None:
            recon = recon + feature_weight * feature_distance(D.features(out.composite), target_feats)
        loss = recon.sum() + noise_weight * noise_regularization(noises)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(recon.detach().mean()))
        with torch.no_grad():  # keep the noise maps standard normal (projector.py)
            for noise in noises:
                noise.sub_(noise.mean(dim=(1, 2, 3), keepdim=True)).div_(noise.std(dim=(1, 2, 3), keepdim=True))

    with torch.no_grad():
        out = G.synthesis(ws[0], ws[1], noise_mode="const")
    out = GeneratorOutput(**{k: v.detach().float().cpu() for k, v in vars(out).items()})
    return InversionResult(output=out, target=images.detach().cpu().float(), losses=losses)


# ----------------------------------------------------------------------------- the method object
class FurryGAN:
    """FurryGAN as one object, in the habits of diffusers: ``from_pretrained``, then use it.

    ::

        gan = FurryGAN.from_pretrained("builtin", device="auto")   # or a run / export folder, "builtin-64"
        samples = gan.generate(8, truncation=0.7, seed=0)           # list of LayeredImage
        layered = gan.segment(Image.open("photo.png"))              # LayeredImage (mask by inversion)

    Args:
        generator: the (EMA) generator, in eval mode.
        discriminator: its discriminator (optional; the perceptual term of :meth:`segment`).
    """

    def __init__(self, generator: FurryGANGenerator, discriminator: FurryGANDiscriminator | None = None) -> None:
        self.generator = generator
        self.discriminator = discriminator

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike[str] = "builtin", *, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", discriminator: bool = True) -> FurryGAN:
        """Load a checkpoint (run folder, export folder, ``"builtin"`` or ``"builtin-64"``) on ``device``.

        ``dtype`` ``"auto"`` keeps this small network in float32 (see :mod:`lamina.devices`).
        """
        from ..devices import resolve_device, resolve_dtype

        target = resolve_device(device)
        precision = resolve_dtype(dtype, target, small_model=True)
        G = load_generator(checkpoint, target).to(precision)
        D = load_discriminator(checkpoint, target) if discriminator else None
        return cls(G, D)

    @property
    def device(self) -> torch.device:
        return self.generator.w_avg_fg.device

    @property
    def resolution(self) -> int:
        """The side in pixels of the images the model draws."""
        return int(self.generator.cfg.resolution)

    def generate(self, n: int = 1, truncation: float = 0.7, seed: int = 0) -> list[LayeredImage]:
        """``n`` two-layer samples (background + foreground with FurryGAN's alpha) at truncation psi ``truncation``."""
        return generate(self.generator, n, truncation_psi=truncation, seed=seed)

    def segment(self, image: Any, *, steps: int = 300, lr: float = INVERSION_LR, seed: int = 0,
                feature_weight: float = 0.0, size: str = "original") -> LayeredImage | list[LayeredImage]:
        """Segment a photo (or a list) by GAN inversion; each becomes the photo's pixels cut out by the mask.

        Args:
            image: a PIL image, ``[H, W, 3]`` array (uint8 or float in ``[0, 1]``), ``[3, H, W]`` tensor, or a list.
            steps, lr, seed, feature_weight: as in :func:`invert` (the discriminator term needs one).
            size: ``"original"``: layers at the image's own size; ``"model"``: the centre crop at the model's size.
        Returns:
            A :class:`LayeredImage` (a list for a list), the mask in the foreground layer's alpha.
        """
        from ..data.datasets import resize_crop
        from ..errors import LaminaError
        from ..layers import as_float_image

        if size not in ("original", "model"):
            raise LaminaError(f"size must be 'original' or 'model', got {size!r}")
        many = isinstance(image, (list, tuple))
        images = list(image) if many else [image]
        originals = [torch.from_numpy(as_float_image(x, "image", channels=(3,)).transpose(2, 0, 1)
                                      .copy()) for x in images]
        res = self.resolution
        target = torch.stack([resize_crop(rgb, res, res) for rgb in originals])
        D = self.discriminator if feature_weight else None
        result = invert(self.generator, target, steps=steps, lr=lr, D=D, feature_weight=feature_weight, seed=seed)
        out = [result.to_layered_at(i, rgb) if size == "original" else result.to_layered(i)
               for i, rgb in enumerate(originals)]
        return out if many else out[0]

    def to(self, device: str | torch.device) -> FurryGAN:
        """Move the networks (``"auto"`` allowed); returns ``self``."""
        from ..devices import resolve_device

        target = resolve_device(device)
        self.generator.to(target)
        if self.discriminator is not None:
            self.discriminator.to(target)
        return self
