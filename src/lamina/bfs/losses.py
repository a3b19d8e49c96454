"""BFS training losses: small pure functions.

The paper's losses are not public (``shared/reference/bfs.md`` section 1, "Training: unknown");
these are **our design**, following the facts we have:

* Flow matching as FLUX is trained and as the author's inpainting code does
  (``target = noise - x0``): the noisy latent is ``x_s = (1 - s) x0 + s noise`` and the
  transformer predicts the velocity ``v = noise - x0`` (eq. FM). Both rows of the dual branch
  (row x: the composite, row y: the foreground layer) share one ``sigma`` per pair, drawn from a
  logit-normal distribution (SD3); only their noise differs (BFS ``inference.py`` L236-237).
* Stage 2 supervises only the composite row (eq. FM on x alone): unlayered composites have no layer.
* Transparency VAE (LayerDiffuse / AlphaVAE-style): L1 on alpha, alpha-weighted RGB L1, L1 of the
  layer composited over random backgrounds, shadow (partial alpha) pixels weighted more, and an
  identity loss pulling its latent towards the RGB VAE's latent of the layer over grey.
"""

from __future__ import annotations

import torch


def logit_normal_sigmas(n: int, mean: float, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n]`` noise levels ``sigmoid(N(mean, std))`` in (0, 1) (SD3's logit-normal sampling)."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


def noisy_latent(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Flow-matching interpolation ``(1 - sigma) x0 + sigma noise``; ``sigma`` ``[N]`` broadcast over the rest."""
    s = sigma.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1.0 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the transformer predicts: ``d x_s / d s = noise - x0`` (eq. FM)."""
    return noise - x0


def flow_matching_loss(pred_x: torch.Tensor, pred_y: torch.Tensor, target_x: torch.Tensor, target_y: torch.Tensor,
                       foreground_weight: float = 1.0,
                       token_weight_y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Stage 1: MSE of both rows' velocities. Row x is the composite branch, row y the foreground branch.

    ``token_weight_y`` ``[N, T, 1]`` (optional): per-token weights of row y (:func:`partial_alpha_token_weights`);
    row y's loss is then the weighted mean ``sum(w e^2) / (sum(w) C)``, equal to the plain mean for ``w = 1``.
    Returns ``{"loss": loss_x + foreground_weight * loss_y, "loss_x", "loss_y"}`` (scalars).
    """
    loss_x = torch.mean((pred_x.float() - target_x.float()) ** 2)
    error_y = (pred_y.float() - target_y.float()) ** 2
    if token_weight_y is None:
        loss_y = torch.mean(error_y)
    else:
        w = token_weight_y.float().expand_as(error_y)
        loss_y = (w * error_y).sum() / w.sum().clamp_min(1e-8)
    return {"loss": loss_x + foreground_weight * loss_y, "loss_x": loss_x, "loss_y": loss_y}


def partial_alpha_token_weights(alpha: torch.Tensor, token_size: int, weight: float,
                                low: float = 0.02, high: float = 0.9) -> torch.Tensor:
    """Per-token weights ``[N, T, 1]`` of the foreground row (our design, not the paper's): ``1 + (weight - 1) f``
    where ``f`` in [0, 1] is the share of the token's ``token_size`` x ``token_size`` pixels whose alpha
    (``[N, 1, H, W]``, straight, [0, 1]) is partial, ``low < alpha < high`` -- soft shadows, reflections and
    edges, a small part of each layer that the plain mean lets the model wash out. Tokens are in
    :func:`~lamina.bfs.pipeline.pack_latents` order (row-major)."""
    partial = ((alpha > low) & (alpha < high)).float()
    share = torch.nn.functional.avg_pool2d(partial, token_size)  # [N, 1, H / t, W / t]
    return (1.0 + (weight - 1.0) * share).flatten(2).transpose(1, 2)


def composite_only_loss(pred_x: torch.Tensor, target_x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stage 2: MSE of the composite row's velocity only; the foreground row gets no direct supervision
    (what it learns flows from the composite branch through the joint attention)."""
    loss_x = torch.mean((pred_x.float() - target_x.float()) ** 2)
    return {"loss": loss_x, "loss_x": loss_x}


# ------------------------------------------------------------------------------------ VAEs
def shadow_weights(alpha: torch.Tensor, shadow_weight: float) -> torch.Tensor:
    """Per-pixel weights ``[N, 1, H, W]``: ``shadow_weight`` where ``0 < alpha < 1`` (soft shadows, fur,
    glass edges), 1 elsewhere, so the VAE does not wash out partial alpha."""
    partial = (alpha > 0) & (alpha < 1)
    return torch.where(partial, torch.full_like(alpha, shadow_weight), torch.ones_like(alpha))


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum(w |pred - target|) / (sum(w) * C)``: the weighted mean over pixels and channels."""
    w = weight.expand_as(pred)
    return (w * (pred - target).abs()).sum() / w.sum().clamp_min(1e-8)


def transparency_losses(pred: torch.Tensor, target: torch.Tensor, backgrounds: torch.Tensor,
                        shadow_weight: float = 4.0, alpha_weight: float = 1.0, rgb_weight: float = 1.0,
                        composite_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Reconstruction losses of the transparency VAE.

    Args:
        pred, target: straight RGBA ``[N, 4, H, W]`` in [0, 1] (decoded and ground-truth layers).
        backgrounds: ``[N, 3, H, W]`` random opaque backgrounds for the composite term.
        shadow_weight: weight of partial-alpha pixels of the target (see :func:`shadow_weights`).

    Returns ``{"loss", "alpha", "rgb", "composite"}``:
    ``alpha`` = weighted L1 on alpha; ``rgb`` = L1 of colour weighted by the target alpha (colour is
    undefined where the layer is transparent); ``composite`` = L1 of ``pred over bg`` vs
    ``target over bg`` (what a viewer sees; AlphaVAE-style).
    """
    a_hat, a = pred[:, 3:], target[:, 3:]
    w = shadow_weights(a, shadow_weight)
    loss_alpha = weighted_l1(a_hat, a, w)
    loss_rgb = weighted_l1(pred[:, :3], target[:, :3], w * a)
    comp_hat = backgrounds + a_hat * (pred[:, :3] - backgrounds)
    comp = backgrounds + a * (target[:, :3] - backgrounds)
    loss_comp = weighted_l1(comp_hat, comp, w)
    total = alpha_weight * loss_alpha + rgb_weight * loss_rgb + composite_weight * loss_comp
    return {"loss": total, "alpha": loss_alpha, "rgb": loss_rgb, "composite": loss_comp}


def identity_loss(latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """MSE pulling the transparency encoder's latent towards the RGB VAE's latent of the layer over grey
    (LayerDiffuse-style), so one transformer can denoise both rows. ``reference`` is not differentiated."""
    return torch.mean((latent - reference.detach()) ** 2)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(mean, exp(logvar))`` from ``N(0, 1)``, averaged over elements."""
    return 0.5 * torch.mean(mean ** 2 + logvar.exp() - 1.0 - logvar)


def over_grey(rgba: torch.Tensor, grey: float = 0.5) -> torch.Tensor:
    """Straight RGBA ``[N, 4, H, W]`` over a flat grey: ``[N, 3, H, W]``."""
    return grey + rgba[:, 3:] * (rgba[:, :3] - grey)
