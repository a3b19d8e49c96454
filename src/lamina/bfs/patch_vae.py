"""A linear patch code as the tiny model's "VAE": pixel unshuffle, then the top principal components of the patches.

The tiny learned :class:`~diffusers.AutoencoderKL` (0.24 M parameters, ``bfs.md``'s first design) is a
poor autoencoder at this size: trained from scratch on the procedural scenes it reconstructed
21-22 dB and **no colour at all** (its decoded composites were grey), and a layer's soft shadow
alpha came back with an effects IoU of 0.28, so the transformer denoised a latent space without
colour (``benchmarks/RESULTS.md``, BFS, "Fifth built-in"). ``bfs.md``
names the fallback, a pixel-unshuffle "VAE" with the composite treated as RGBA of alpha 1; raw
unshuffled pixels, though, make tokens (``2f x 2f`` pixels x 4 channels = 256 numbers at ``f = 4``)
wider than the tiny transformer (128), which then cannot carry the noise it must predict. So:

* **encode**: ``[B, C, H, W]`` in ``[-1, 1]`` (``C`` = 3 for RGB, which gets a constant alpha channel
  of 1; 4 for the transparency VAE's input ``[layer over grey, alpha]``) -> pixel unshuffle by ``f``
  (``4 f^2`` numbers per cell) -> minus the patches' mean, projected onto an orthonormal ``basis``
  of ``components`` directions: ``[B, components, H/f, W/f]``. The posterior is a point mass
  (``sample() == mode()``).
* **decode**: the inverse on the kept subspace. The RGB model drops the alpha channel; the
  transparency model (``unpremultiply_grey`` set) turns ``[layer over grey, alpha]`` back into straight
  RGBA, ``F = (C - g (1 - a)) / a``.
* :meth:`LinearPatchVAE.fit`: the basis is the principal components of the training images'
  patches (one SVD). On held-out procedural scenes 16 of 64 components keep 36 dB and all the
  colour of a composite, and a layer's shadows with an effects IoU of 0.52 (0.28 for the tiny
  ``AutoencoderKL``); ``components=None`` keeps every pixel (exact).

``shift_factor`` / ``scaling_factor`` normalise the code as FLUX's VAE constants do (measured from
data by :func:`lamina.bfs.train.set_latent_statistics`). It is a diffusers ``ModelMixin`` /
``ConfigMixin``, so it saves and loads as a pipeline component (its basis and mean are buffers).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch.nn import functional as nnf

from ..errors import LaminaError

#: Channels per pixel in a patch: RGB plus alpha (1 for the composite branch).
PATCH_PIXEL_CHANNELS = 4
#: Alpha below this decodes to a transparent pixel of colour 0 (the colour is undefined there).
MIN_ALPHA = 1e-3


class LinearPatchVAE(ModelMixin, ConfigMixin):
    """A linear code of ``factor x factor`` pixel patches, ``image_channels`` 3 (RGB, composite branch) or 4
    (RGBA over grey, layer branch).

    Args:
        image_channels: 3 or 4.
        factor: pixels per latent cell side (FLUX's 2x2 packing then makes tokens of ``2 factor`` px).
        components: latent channels kept (at most ``4 factor^2``); ``None`` keeps them all (plain pixel unshuffle).
            Until :meth:`fit` runs, the basis is the first ``components`` pixel channels.
        scaling_factor, shift_factor: latent normalisation, ``(z - shift) * scale`` (set from data).
        unpremultiply_grey: for the transparency VAE, the grey its input layer was composited over
            (:data:`lamina.bfs.transparency.NEUTRAL_GREY`); decode then returns straight RGBA. ``None`` for RGB.
        latent_channels, in_channels, out_channels: derived and recorded in the config as a diffusers VAE's are;
            given back when loading, they are checked.
    """

    @register_to_config
    def __init__(self, image_channels: int = 3, factor: int = 4, components: int | None = None,
                 scaling_factor: float = 1.0, shift_factor: float = 0.0, unpremultiply_grey: float | None = None,
                 latent_channels: int | None = None, in_channels: int | None = None,
                 out_channels: int | None = None) -> None:
        super().__init__()
        if image_channels not in (3, 4):
            raise LaminaError(f"LinearPatchVAE: image_channels must be 3 (RGB) or 4 (RGBA), got {image_channels}")
        if factor < 1:
            raise LaminaError(f"LinearPatchVAE: factor must be at least 1, got {factor}")
        width = PATCH_PIXEL_CHANNELS * factor * factor
        kept = width if components is None else int(components)
        if not 1 <= kept <= width:
            raise LaminaError(f"LinearPatchVAE: components must be 1 to {width} for factor {factor}, got {components}")
        if latent_channels is not None and latent_channels != kept:
            raise LaminaError(f"LinearPatchVAE: latent_channels is {kept} (components), got {latent_channels}")
        if {in_channels, out_channels} - {None, image_channels}:
            raise LaminaError(f"LinearPatchVAE: in_channels / out_channels are image_channels ({image_channels}), "
                              f"got {in_channels} / {out_channels}")
        if (unpremultiply_grey is not None) != (image_channels == 4):
            raise LaminaError("LinearPatchVAE: unpremultiply_grey is set exactly when image_channels is 4")
        self.register_to_config(latent_channels=kept, in_channels=image_channels, out_channels=image_channels)
        self.register_buffer("basis", torch.eye(width)[:, :kept].contiguous())  # [4 f^2, components], orthonormal
        self.register_buffer("center", torch.zeros(width))  # [4 f^2], the patches' mean

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, image_channels, H, W]`` -> unshuffled patches ``[B, 4 f^2, H / f, W / f]``."""
        c, f = int(self.config.image_channels), int(self.config.factor)
        if x.ndim != 4 or x.shape[1] != c or x.shape[-1] % f or x.shape[-2] % f:
            raise LaminaError(f"LinearPatchVAE: expected [B, {c}, H, W] with sides multiples of {f}, "
                              f"got {tuple(x.shape)}")
        if c == 3:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # the composite is opaque: alpha 1 (+1 in [-1, 1])
        return nnf.pixel_unshuffle(x, f)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set ``center`` and ``basis`` to the mean and principal directions of ``images``' patches
        (``[N, image_channels, H, W]`` in ``[-1, 1]``)."""
        patches = self._patches(images.to(self.center.device, self.center.dtype)).permute(0, 2, 3, 1)
        patches = patches.reshape(-1, patches.shape[-1]).double()
        center = patches.mean(0)
        _, _, directions = torch.linalg.svd(patches - center, full_matrices=False)
        self.center.copy_(center)
        self.basis.copy_(directions[: self.basis.shape[1]].T)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """``x`` ``[B, image_channels, H, W]`` in ``[-1, 1]`` (sides multiples of ``factor``) -> a point-mass
        posterior over ``[B, latent_channels, H / factor, W / factor]``."""
        patches = self._patches(x) - self.center[None, :, None, None]
        mean = torch.einsum("bchw,ck->bkhw", patches, self.basis)
        posterior = DiagonalGaussianDistribution(torch.cat([mean, torch.zeros_like(mean)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **_: object) -> DecoderOutput | tuple:
        """Latents ``[B, latent_channels, h, w]`` -> ``[B, image_channels, h factor, w factor]`` in ``[-1, 1]``
        (straight RGBA for the transparency VAE)."""
        patches = torch.einsum("bkhw,ck->bchw", z, self.basis) + self.center[None, :, None, None]
        image = nnf.pixel_shuffle(patches, int(self.config.factor))
        grey = self.config.unpremultiply_grey
        if grey is None:
            image = image[:, :3]
        else:
            over = (image[:, :3] + 1) / 2
            alpha = ((image[:, 3:4] + 1) / 2).clamp(0, 1)
            colour = (over - grey * (1 - alpha)) / alpha.clamp_min(MIN_ALPHA)
            colour = torch.where(alpha > MIN_ALPHA, colour, torch.zeros_like(colour)).clamp(0, 1)
            image = torch.cat([colour, alpha], dim=1) * 2 - 1
        return DecoderOutput(sample=image) if return_dict else (image,)
