"""Stage 3 of LayeringDiff, the layer maths: disassemble ``I = alpha F + (1 - alpha) B`` into layers.

The common interface of the classical and the learned (FBDD) paths:

* a :class:`Decomposer` turns an image ``I`` ``[H, W, 3]`` and the object's alpha ``[H, W]``
  into a :class:`Decomposition`: the foreground layer ``[H, W, 4]`` (straight RGBA) and the
  completed background ``[H, W, 3]``, including the pixels the object hid;
* :func:`finish_decomposition` is the step both paths end with: it moves the object's
  effects (shadows, reflections) from the background into the foreground layer and
  projects ``(F, B)`` onto the recomposition constraint;
* the entry points that run the foreground stage and a decomposer front to back
  (:func:`~lamina.layeringdiff.decompose.peel`, :func:`~lamina.layeringdiff.decompose.decompose_image`)
  are in :mod:`.decompose`; this module is the maths every decomposer shares and imports
  no decomposer, so :mod:`.classical`, :mod:`.fbdd` and :mod:`.latent` depend on it alone.

**Recomposition constraint** (:func:`project_recomposition`, our design). Given any
estimates ``F0, B0``, the closest ``(F, B)`` in the least-squares sense with
``alpha F + (1 - alpha) B = I`` exactly is, per pixel and channel, with the residual
``r = I - alpha F0 - (1 - alpha) B0``::

    F = F0 + alpha r / (alpha^2 + (1 - alpha)^2)      B = B0 + (1 - alpha) r / (alpha^2 + (1 - alpha)^2)

The residual goes to the layer that shows: all of it into ``F`` where ``alpha = 1`` and into
``B`` where ``alpha = 0``. When that point leaves ``[0, 1]``, it slides along the constraint
line to the nearest point inside, the exact nearest feasible pair, so the layers always
recompose the input (up to float rounding). It also copies the composite's
high frequencies into whichever layer shows them: the parameter-free part of the paper's
high-frequency alignment (the learned part, for what no visible pixel shows, is :mod:`.hfa`).

**Effects** (:func:`detect_effects`, beyond the paper). Inside the effects region of the
foreground stage, the image with the object removed, ``E``, is compared with the completed
(effect-free) background ``B``. The difference is explained by the *least* opaque layer that
can produce it over ``B``: per channel, darkening needs ``alpha_e >= (B - E) / B`` (with
colour 0) and brightening ``alpha_e >= (E - B) / (1 - B)`` (with colour 1); ``alpha_e`` is the
largest of these, so a shadow becomes black at its true opacity. Only pixels where every
channel moves the same way by more than a threshold count (a shadow darkens all three; the
error of an inpainted texture mostly does not); the rest is left to the background. The
effect layer is placed *under* the object in the same foreground layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from scipy import ndimage

from ..errors import LayerError
from ..layers import LayeredImage, as_float_image

#: Alpha below this counts as transparent when un-mixing colours.
ALPHA_EPS = 1e-3


@dataclass(frozen=True)
class Decomposition:
    """One peeled object.

    Attributes:
        foreground: ``float32`` ``[H, W, 4]`` straight RGBA: the object over its effects.
        background: ``float32`` ``[H, W, 3]``, completed under the object and its effects.
        object_alpha: ``float32`` ``[H, W]``, the matte the decomposer was given.
        effects_alpha: ``float32`` ``[H, W]``, the effects' opacity (zeros when none).
    """

    foreground: np.ndarray
    background: np.ndarray
    object_alpha: np.ndarray
    effects_alpha: np.ndarray

    def composite(self) -> np.ndarray:
        """``alpha F + (1 - alpha) B``: ``float32`` ``[H, W, 3]``."""
        a = self.foreground[:, :, 3:]
        return a * self.foreground[:, :, :3] + (1.0 - a) * self.background

    def to_layered(self, name: str = "foreground", metadata: dict[str, Any] | None = None) -> LayeredImage:
        """The two-layer image: the completed background and the foreground layer."""
        return LayeredImage.from_foreground(self.background, self.foreground, name=name, metadata=metadata)


@runtime_checkable
class Decomposer(Protocol):
    """Anything that splits an image into foreground and completed background, given alpha."""

    #: Recorded as ``metadata["method"]`` of the layered image.
    name: str

    def decompose(self, image: np.ndarray, alpha: np.ndarray,
                  effects_region: np.ndarray | None = None) -> Decomposition:
        """Split ``image`` ``[H, W, 3]`` with object alpha ``[H, W]``; effects searched in ``effects_region``."""
        ...


# ------------------------------------------------------------------ shared steps
def check_alpha(alpha: Any, height: int, width: int, what: str = "alpha") -> np.ndarray:
    """Validate an alpha matte for a ``width x height`` image: ``float32`` ``[H, W]``."""
    alpha = as_float_image(alpha, what, channels=(1,))[:, :, 0]
    if alpha.shape != (height, width):
        raise LayerError(f"{what} is {alpha.shape[1]}x{alpha.shape[0]} but the image is {width}x{height}")
    return alpha


def project_recomposition(
    image: torch.Tensor,
    alpha: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(F, B)`` in ``[0, 1]`` nearest the estimates with ``alpha F + (1 - alpha) B = I`` exactly.

    Elementwise, so any layout works as long as the shapes broadcast (``[N, 3, H, W]`` with
    alpha ``[N, 1, H, W]``, or ``[H, W, 3]`` with ``[H, W, 1]``); ``image`` must lie in
    ``[0, 1]`` (then ``F = B = I`` is feasible and so is the result). Differentiable.
    """
    a, c = alpha, 1.0 - alpha
    # Foot of the perpendicular from (F0, B0) onto the line a F + c B = I ...
    residual = (image - a * foreground - c * background) / (a.square() + c.square())
    f, b = foreground + a * residual, background + c * residual
    # ... then along the line, direction (c, -a), to the nearest point inside [0, 1]^2.
    inf = torch.full_like(f, float("inf"))
    c_ok, a_ok = (c > ALPHA_EPS).expand_as(f), (a > ALPHA_EPS).expand_as(f)
    c_safe, a_safe = c.clamp_min(ALPHA_EPS), a.clamp_min(ALPHA_EPS)
    low = torch.maximum(torch.where(c_ok, -f / c_safe, -inf), torch.where(a_ok, (b - 1.0) / a_safe, -inf))
    high = torch.minimum(torch.where(c_ok, (1.0 - f) / c_safe, inf), torch.where(a_ok, b / a_safe, inf))
    step = torch.minimum(torch.maximum(torch.zeros_like(f), low), high)
    return (f + c * step).clamp(0.0, 1.0), (b - a * step).clamp(0.0, 1.0)


def project_layers(image: np.ndarray, alpha: np.ndarray, foreground: np.ndarray,
                   background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project_recomposition` on arrays: ``[H, W, 3]`` layers and image, alpha ``[H, W]``; ``float32``."""
    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32))

    f, b = project_recomposition(tensor(image), tensor(alpha)[:, :, None], tensor(foreground), tensor(background))
    return f.numpy(), b.numpy()


def _darkening(target: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the opacity of black (``darker``) or white (``brighter``) making ``target`` of ``background``."""
    darker = (background - target) / np.maximum(background, ALPHA_EPS)
    brighter = (target - background) / np.maximum(1.0 - background, ALPHA_EPS)
    return darker, brighter


def minimum_alpha(target: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least opaque layer ``(alpha [H, W], colour [H, W, 3])`` that turns ``background`` into ``target``."""
    darker, brighter = _darkening(target, background)
    alpha = np.clip(np.maximum(darker, brighter).max(axis=2), 0.0, 1.0).astype(np.float32)
    a = alpha[:, :, None]
    colour = np.clip((target - (1.0 - a) * background) / np.maximum(a, ALPHA_EPS), 0.0, 1.0)
    return alpha, colour.astype(np.float32)


def detect_effects(
    image: np.ndarray,
    alpha: np.ndarray,
    foreground: np.ndarray,
    background: np.ndarray,
    region: np.ndarray,
    threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The object's effects over ``background``: ``(opacity [H, W], colour [H, W, 3])``.

    ``foreground`` is the object's colour, ``background`` the completed background, ``region``
    where effects may be. A pixel gets an effect when all three channels are darker (or all
    brighter) than the background by at least ``threshold`` of their range, after a 1 px blur:
    shadows and reflections move every channel the same way, while the error of an inpainted
    texture mostly does not. Pixels the object mostly covers (alpha >= 0.5) get none.
    """
    free = np.asarray(region, bool) & (alpha < 0.5)
    if not free.any():
        return np.zeros_like(alpha), np.zeros_like(image)
    a = alpha[:, :, None]
    unoccluded = np.clip((image - a * foreground) / np.maximum(1.0 - a, ALPHA_EPS), 0.0, 1.0)  # I without the object
    strength, colour = minimum_alpha(unoccluded, background)
    darker, brighter = _darkening(unoccluded, background)
    evidence = np.maximum(np.maximum(darker.min(axis=2), brighter.min(axis=2)), 0.0) * free
    keep = free & (ndimage.gaussian_filter(evidence, sigma=1.0) > threshold)
    return np.where(keep, strength, 0.0).astype(np.float32), colour


def touching_components(found: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected components (8-neighbourhood) of the boolean map ``found`` that overlap ``seed``.

    Used to keep only effects attached to the object (contact shadows, reflections): detached
    blobs are more often texture mistaken for a shadow than a shadow.
    """
    labels, count = ndimage.label(found, structure=np.ones((3, 3), bool))
    if not count:
        return found
    keep = np.zeros(count + 1, bool)
    keep[np.unique(labels[seed & found])] = True
    keep[0] = False
    return keep[labels]


def effects_colour(image: np.ndarray, alpha: np.ndarray, foreground: np.ndarray, background: np.ndarray,
                   effects: np.ndarray) -> np.ndarray:
    """The colour ``[H, W, 3]`` of effects of opacity ``effects`` that turns ``background`` into the image.

    The image without the object, ``E = (I - alpha F) / (1 - alpha)``, is ``e C + (1 - e) B``;
    solved for ``C`` where ``e > 0`` and clipped to ``[0, 1]`` (black elsewhere).
    """
    a, e = alpha[:, :, None], effects[:, :, None]
    unoccluded = np.clip((image - a * foreground) / np.maximum(1.0 - a, ALPHA_EPS), 0.0, 1.0)
    colour = (unoccluded - (1.0 - e) * background) / np.maximum(e, ALPHA_EPS)
    return np.where(e > 0, np.clip(colour, 0.0, 1.0), 0.0).astype(np.float32)


def attach_effects(alpha: np.ndarray, foreground: np.ndarray, effects: np.ndarray,
                   colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object over its effects, as one layer: ``(rgb [H, W, 3], alpha [H, W])`` ("over", straight colour)."""
    a, e = alpha[:, :, None], effects[:, :, None]
    total = alpha + effects * (1.0 - alpha)
    rgb = (a * foreground + (1.0 - a) * e * colour) / np.maximum(total, ALPHA_EPS)[:, :, None]
    return np.clip(rgb, 0.0, 1.0).astype(np.float32), total.astype(np.float32)


def finish_decomposition(
    image: np.ndarray,
    alpha: np.ndarray,
    foreground: np.ndarray,
    background: np.ndarray,
    effects_region: np.ndarray | None = None,
    effects_threshold: float = 0.1,
    effects: np.ndarray | None = None,
) -> Decomposition:
    """The last step of every decomposer: attach effects, then project onto the recomposition constraint.

    Args:
        image: ``[H, W, 3]`` the composite.
        alpha: ``[H, W]`` the object's matte.
        foreground: ``[H, W, 3]`` estimated object colours (only used where ``alpha > 0``).
        background: ``[H, W, 3]`` estimated effect-free background, completed under the object.
        effects_region: ``bool`` ``[H, W]`` where effects may lie; ``None`` for none.
        effects: ``[H, W]`` the effects' opacity when the decomposer estimated it (FBDD with an
            effects channel); then ``effects_region`` is not searched, the opacity is raised
            where needed to the least that explains the image over the completed background
            (:func:`minimum_alpha`), and the effects' colour is what turns the completed
            background into the image (:func:`effects_colour`).
    """
    total = alpha
    if effects is not None:
        effects = np.where(alpha < 0.5, np.clip(effects, 0.0, 1.0), 0.0).astype(np.float32)
        # Where the decomposer sees an effect, it is at least as opaque as needed to turn its
        # background into the image with black or white: the projection then leaves the
        # background as estimated instead of darkening it with the rest of a shadow.
        a = alpha[:, :, None]
        unoccluded = np.clip((image - a * foreground) / np.maximum(1.0 - a, ALPHA_EPS), 0.0, 1.0)
        needed, _ = minimum_alpha(unoccluded, background)
        effects = np.where(effects > 0, np.maximum(effects, needed), 0.0).astype(np.float32)
        colour = effects_colour(image, alpha, foreground, background, effects)
    elif effects_region is not None:
        effects, colour = detect_effects(image, alpha, foreground, background, effects_region, effects_threshold)
    else:
        effects = np.zeros_like(alpha)
    if effects.any():
        foreground, total = attach_effects(alpha, foreground, effects, colour)
    f, b = project_layers(image, total, foreground, background)
    rgba = np.concatenate([f, total[:, :, None]], axis=2)
    return Decomposition(foreground=rgba.astype(np.float32), background=b,
                         object_alpha=alpha.astype(np.float32), effects_alpha=effects)


def psnr(a: np.ndarray, b: np.ndarray, cap: float = 100.0) -> float:
    """PSNR in dB of two images in ``[0, 1]``, capped (an exact match gives ``cap``)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return cap if mse <= 10 ** (-cap / 10) else float(-10.0 * np.log10(mse))
