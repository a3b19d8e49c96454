"""LayeringDiff (Kang et al. 2025): layered images by generation, then disassembly.

Stages: (1) a composite from any text-to-image model (optional), (2) the foreground's alpha
(:mod:`.foreground`: box -> GrabCut -> trimap -> matting, or a user mask), (3) disassembly
into the foreground layer and the completed background, by the classical path
(:mod:`.classical`: pymatting + OpenCV inpainting) or by FBDD (:mod:`.fbdd`, a conditional
diffusion model), both behind the :class:`Decomposer` interface (:mod:`.disassembly`, the layer maths); the entry
points (:func:`decompose_image`, :func:`peel`, :func:`make_decomposer`) are in :mod:`.decompose`.

FBDD comes in two forms: :mod:`.fbdd`, a small pixel-space model trained from scratch (the
built-in one), and :mod:`.latent`, the latent model on a pretrained VAE and inpainting UNet;
:mod:`.hfa` is the learned high-frequency alignment a pixel-space FBDD may carry, and
:mod:`.selfsim` the parameter-free completion of a repeating background texture under the object.
All three need diffusers and are imported only when used (their names are re-exported lazily:
``from lamina.layeringdiff import FBDDPipeline`` imports it then).
Training is in :mod:`.train`, the text stages (Grounding DINO, SAM, ViTMatte, any diffusers
text-to-image pipeline) in :mod:`.grounding`, the commands in :mod:`.cli`.
"""

from typing import Any

from .classical import ClassicalConfig, ClassicalDecomposer
from .decompose import decompose_image, make_decomposer, peel, regions_from_args
from .disassembly import Decomposer, Decomposition, finish_decomposition, project_recomposition
from .foreground import (
    ForegroundConfig,
    ForegroundEstimate,
    estimate_alpha,
    foreground_from_box,
    foreground_from_mask,
    grabcut_mask,
    trimap_from_mask,
)

#: Names of :mod:`.fbdd`, imported on first access.
_FBDD_NAMES = ("FBDDDecomposer", "FBDDPipeline", "FBDDPipelineOutput", "compute_prefill", "fbdd_loss", "load_builtin",
               "load_pipeline", "make_scheduler", "make_unet", "telea_prefill")


#: Names of :mod:`.latent`, imported on first access.
_LATENT_NAMES = ("LatentFBDDPipeline", "latent_fbdd_loss", "widen_unet")

#: Names of :mod:`.hfa`, imported on first access.
_HFA_NAMES = ("HFANet", "hfa_loss")


def __getattr__(name: str) -> Any:
    if name in _FBDD_NAMES:
        from . import fbdd

        return getattr(fbdd, name)
    if name in _LATENT_NAMES:
        from . import latent

        return getattr(latent, name)
    if name in _HFA_NAMES:
        from . import hfa

        return getattr(hfa, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClassicalConfig",
    "ClassicalDecomposer",
    "Decomposer",
    "Decomposition",
    "FBDDDecomposer",
    "FBDDPipeline",
    "FBDDPipelineOutput",
    "ForegroundConfig",
    "ForegroundEstimate",
    "HFANet",
    "LatentFBDDPipeline",
    "compute_prefill",
    "decompose_image",
    "estimate_alpha",
    "fbdd_loss",
    "finish_decomposition",
    "foreground_from_box",
    "foreground_from_mask",
    "grabcut_mask",
    "hfa_loss",
    "latent_fbdd_loss",
    "load_builtin",
    "load_pipeline",
    "make_decomposer",
    "make_scheduler",
    "make_unet",
    "peel",
    "project_recomposition",
    "regions_from_args",
    "telea_prefill",
    "trimap_from_mask",
    "widen_unet",
]
