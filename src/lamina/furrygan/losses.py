"""FurryGAN loss terms as small pure functions (paper Sec. 3.3, Eq. 4-10; official ``loss.py``).

Each function takes tensors and returns a scalar; weights and schedules live in
:class:`~lamina.furrygan.config.LossConfig` and are applied by :class:`FurryGANLoss`
(end of this file), which combines them per training phase. Images are ``[N, 3, H, W]`` in [-1, 1], masks
``[N, 1, H, W]`` in [0, 1], logits ``[N]``.

Where the official code differs from the paper's text, the code is followed and the
difference noted (Eq. 9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..compositing import blend
from ..training import autocast
from .config import FurryGANConfig
from .networks import ForegroundOutput, FurryGANDiscriminator, FurryGANGenerator, GeneratorOutput


# ----------------------------------------------------------------------------- adversarial
def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_adv^D, the non-saturating discriminator loss: ``E[softplus(-D(x))] + E[softplus(D(G(z)))]``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_adv^G, the non-saturating generator loss: ``E[softplus(-D(G(z)))]``."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``E[||grad_x D(x)||^2]`` over reals, differentiable (create_graph).

    ``real_images`` must require grad and ``real_logits`` be computed from them. The
    discriminator loss L_R1^D is ``gamma / 2 * r1_penalty * interval`` (lazy regularization).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


# ----------------------------------------------------------------------------- mask predictor
def downsample_mask(alpha: torch.Tensor, size: int) -> torch.Tensor:
    """``Downsample`` of Eq. 4: plain bilinear ``F.interpolate`` to ``size x size`` (no antialias, as official)."""
    return F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False)


def mask_prediction_loss(alpha: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Eq. 4, L_pred = ``mean((Downsample(m) - m_hat)^2)``.

    Args:
        alpha: generated mask m ``[N, 1, H, W]`` (the target; detach it in the D step).
        predicted: D_aux's prediction m_hat ``[N, 1, h, w]``.
    """
    return F.mse_loss(predicted, downsample_mask(alpha, predicted.shape[-1]))


def mask_consistency_loss(predicted_fg: torch.Tensor, predicted_comp: torch.Tensor) -> torch.Tensor:
    """Eq. 5, L_consistency = ``mean((D_aux(stopgrad(x_fg)) - D_aux(x_comp))^2)``.

    ``predicted_fg`` is the target and is detached here (feed D_aux a detached x_fg too, to
    save the graph); the gradient reaches the generator through ``predicted_comp`` only.
    """
    return F.mse_loss(predicted_comp, predicted_fg.detach())


# ----------------------------------------------------------------------------- coarse and fine masks
def binarization_loss(alpha_coarse: torch.Tensor) -> torch.Tensor:
    """Eq. 6, L_binary = ``E[min(m_coarse, 1 - m_coarse)]``: pushes the coarse mask to 0 or 1."""
    return torch.minimum(alpha_coarse, 1.0 - alpha_coarse).mean()


def coarse_area_loss(alpha_coarse: torch.Tensor, min_mask: float) -> torch.Tensor:
    """Eq. 7, L_area^coarse = ``E_n[max(0, phi_1 - mean_hw(m_coarse))]``, per sample then averaged.

    Penalises masks covering less than ``phi_1`` (official ``min_mask`` = 0.35) of the image.
    """
    return F.relu(min_mask - alpha_coarse.flatten(1).mean(dim=1)).mean()


def coarse_mask_loss(alpha_coarse: torch.Tensor, min_mask: float, binary_weight: float,
                     area_weight: float) -> torch.Tensor:
    """Eq. 8 with the official weights: ``binary_weight * L_binary + area_weight * L_area^coarse``.

    The paper writes ``lambda_coarse * (L_binary + L_area)`` with lambda = 5; the official
    MaskLoss weights the two separately, decaying ``binary_weight`` from 5 to 0.5.
    """
    return binary_weight * binarization_loss(alpha_coarse) + area_weight * coarse_area_loss(alpha_coarse, min_mask)


def fine_area_loss(alpha: torch.Tensor, alpha_coarse: torch.Tensor, max_mask_fine: float) -> torch.Tensor:
    """Eq. 9 (official form), L_area^fine = ``E_n[max(0, (1 - phi_2) - mean_hw(1 - m~_fine))]``.

    ``m~_fine = clip(m - m_coarse, 0, 1)`` is what the fine mask adds after clipping (gamma
    included). This equals ``max(0, mean(m~_fine) - phi_2)``: the fine mask may cover at most
    ``phi_2`` (0.01) of the image. The paper prints ``phi_2 - mean(1 - m~)``, which would be
    zero for any mask; the official FineMaskLoss uses ``1 - phi_2``.
    """
    residual = (alpha - alpha_coarse).clamp(0.0, 1.0)
    return F.relu((1.0 - max_mask_fine) - (1.0 - residual).flatten(1).mean(dim=1)).mean()


# ----------------------------------------------------------------------------- background participation
def background_participation_loss(fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor,
                                  detach_target: bool = False) -> torch.Tensor:
    """Eq. 10, L_reg = ``mean((x_comp - x_bg)^2)`` as in the official code.

    The composite is rebuilt from detached layers, ``sg(x_fg) * m + sg(x_bg) * (1 - m)``, so
    the gradient reaches the mask; the target ``x_bg`` is not detached officially (it is also
    pulled towards the composite). ``detach_target=True`` makes the loss act on the mask only.
    """
    composite = blend(fg.detach(), alpha, bg.detach())
    return F.mse_loss(composite, bg.detach() if detach_target else bg)


# ----------------------------------------------------------------------------- the training objective
@dataclass
class FakeBatch:
    """The generator's side of one step, split for the dual fake input (Sec. 3.1).

    Attributes:
        composites: the first ``n_comp`` samples with both layers (``GeneratorOutput``).
        fg_only: the other samples, foreground and masks only (``ForegroundOutput``, maybe empty).
    """

    composites: GeneratorOutput
    fg_only: ForegroundOutput

    @property
    def images(self) -> torch.Tensor:
        """The fake mini-batch for D: composites then foregrounds, ``[N, 3, H, W]``."""
        return torch.cat([self.composites.composite, self.fg_only.fg])

    @property
    def alpha_coarse(self) -> torch.Tensor:
        """m_coarse of every sample, ``[N, 1, H, W]`` (the coarse loss covers all of them)."""
        return torch.cat([self.composites.alpha_coarse, self.fg_only.alpha_coarse])


Phase = Literal["G", "D", "Dreg"]


class FurryGANLoss:
    """Eq. 11-12 with the official schedules: one entry point per phase, as in stylegan3.

    Args:
        G: the generator being trained.
        D: the discriminator being trained.
        cfg: the run configuration (weights, schedules and ablation switches).
        backward: how to backpropagate a scalar (``accelerator.backward``); default ``loss.backward()``.

    :meth:`accumulate_gradients` adds gradients to the phase's network only (the other is
    frozen for the call) and returns the detached loss terms for logging. Per step the
    training loop runs ``"D"``, then ``"Dreg"`` when ``cfg.loss.r1_due(step)``, then ``"G"``.
    """

    def __init__(self, G: FurryGANGenerator, D: FurryGANDiscriminator, cfg: FurryGANConfig,
                 backward: Callable[[torch.Tensor], None] | None = None) -> None:
        self.G, self.D, self.cfg = G, D, cfg
        self.backward = backward or (lambda loss: loss.backward())

    def generate(self, z: torch.Tensor, step: int) -> FakeBatch:
        """Run G on ``z`` ``[N, z_dim]``: composites for the first ``num_composites(N)``, fg-only for the rest.

        z_bg is the front part of z_fg (the official code samples backgrounds only for composites).
        """
        n_comp = self.cfg.loss.num_composites(z.shape[0])
        gamma = self.cfg.loss.fine_gamma(step)
        ws_fg, ws_bg = self.G.mapping(z)
        fg = self.G.foreground(ws_fg, fine_gamma=gamma)
        bg = self.G.background(ws_bg[:n_comp])
        alpha = fg.alpha[:n_comp]
        composites = GeneratorOutput(
            fg=fg.fg[:n_comp], bg=bg, alpha_coarse=fg.alpha_coarse[:n_comp], alpha_fine=fg.alpha_fine[:n_comp],
            alpha=alpha, composite=blend(fg.fg[:n_comp], alpha, bg), w=ws_fg[:n_comp], w_bg=ws_bg[:n_comp])
        fg_only = ForegroundOutput(fg=fg.fg[n_comp:], alpha_coarse=fg.alpha_coarse[n_comp:],
                                   alpha_fine=fg.alpha_fine[n_comp:], alpha=fg.alpha[n_comp:])
        return FakeBatch(composites=composites, fg_only=fg_only)

    def accumulate_gradients(self, phase: Phase, real: torch.Tensor, z: torch.Tensor | None, step: int
                             ) -> dict[str, torch.Tensor]:
        """Compute one phase's loss at training step ``step`` and backpropagate it.

        Args:
            phase: ``"G"`` (Eq. 12), ``"D"`` (Eq. 11 without R1) or ``"Dreg"`` (lazy R1).
            real: real images ``[N, 3, H, W]`` in [-1, 1] (unused by ``"G"``).
            z: latents ``[N, z_dim]`` (unused by ``"Dreg"``).
        Returns:
            Detached scalar terms keyed ``"G/adv"``, ``"D/pred"``, ...; ``"<phase>/total"`` is the sum.
        """
        train, frozen = (self.G, self.D) if phase == "G" else (self.D, self.G)
        train.requires_grad_(True)
        frozen.requires_grad_(False)
        try:
            with autocast(self.cfg.train.precision, real.device.type):  # the forward pass only
                terms = {"G": self._generator_terms, "D": self._discriminator_terms, "Dreg": self._r1_terms}[phase](
                    real, z, step)
        finally:
            frozen.requires_grad_(True)
        terms = {name: value.float() for name, value in terms.items()}
        total = sum(terms.values())
        self.backward(total)
        stats = {f"{phase}/{name}": value.detach() for name, value in terms.items()}
        stats[f"{phase}/total"] = total.detach()
        return stats

    def _generator_terms(self, real: torch.Tensor, z: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        lc, D = self.cfg.loss, self.D
        fake = self.generate(z, step)
        comp = fake.composites
        d_fake = D(fake.images)
        terms = {"adv": g_nonsaturating_loss(d_fake.logits)}
        terms["coarse"] = coarse_mask_loss(fake.alpha_coarse, lc.min_mask, lc.binary_weight(step), lc.area_weight)
        if self.G.mask_fine is not None:
            terms["fine"] = lc.fine_weight * fine_area_loss(comp.alpha, comp.alpha_coarse, lc.max_mask_fine)
        if lc.consistency_due(step, D.mask_head is not None):
            with torch.no_grad():
                pred_fg = D.predict_mask(comp.fg.detach())
            terms["consistency"] = lc.consistency_weight * mask_consistency_loss(pred_fg, d_fake.mask[: len(comp)])
        if lc.bg_participation_due(step):
            terms["bg_participation"] = lc.bg_participation_weight * background_participation_loss(
                comp.fg, comp.bg, comp.alpha, lc.bg_participation_detach_target)
        return terms

    def _discriminator_terms(self, real: torch.Tensor, z: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        D = self.D
        with torch.no_grad():
            fake = self.generate(z, step)
        comp = fake.composites
        d_fake = D(fake.images)
        d_real = D(real)
        terms = {"adv": d_logistic_loss(d_real.logits, d_fake.logits)}
        if D.mask_head is not None:  # Eq. 4 on the composites and on their own foregrounds
            pred_comp = d_fake.mask[: len(comp)]
            pred_fg = D.predict_mask(comp.fg)
            terms["pred"] = self.cfg.loss.pred_weight * 0.5 * (
                mask_prediction_loss(comp.alpha, pred_comp) + mask_prediction_loss(comp.alpha, pred_fg))
        return terms

    def _r1_terms(self, real: torch.Tensor, z: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        lc = self.cfg.loss
        real = real.detach().requires_grad_(True)
        penalty = r1_penalty(real, self.D(real).logits)
        return {"r1": lc.r1_gamma / 2 * penalty * lc.r1_interval}
