"""LayeringDiff (Kang et al. 2025): layered images by generation, then disassembly.

Stages: (1) a composite from any text-to-image model (optional), (2) the foreground's alpha
(:mod:`.foreground`: box -> GrabCut -> trimap -> matting, or a user mask), (3) disassembly
into the foreground layer and the completed background, by the classical path
(:mod:`.classical`: closed-form matting + OpenCV inpainting) or by FBDD (:mod:`.fbdd`, a conditional
diffusion model), both behind the :class:`Decomposer` interface (:mod:`.disassembly`, the layer maths); the entry
points (:func:`decompose_image`, :func:`peel`, :func:`make_decomposer`) are in :mod:`.decompose`.

FBDD comes in two forms: :mod:`.fbdd`, a small pixel-space model trained from scratch (the
built-in one), and :mod:`.latent`, the latent model on a pretrained VAE and inpainting UNet;
:mod:`.hfa` is the learned high-frequency alignment a pixel-space FBDD may carry, and
:mod:`.selfsim` the parameter-free completion of a repeating background texture under the object.
Every name below is imported on first use (``from lamina.layeringdiff import FBDDPipeline``
imports :mod:`.fbdd_pipeline`, and diffusers, then); the built-in model's inference (:class:`LiteFBDD`,
:func:`load_builtin_lite`, what :func:`make_decomposer` gives for it) is pure PyTorch and never imports diffusers.
Training is in :mod:`.train`, the text stages (Grounding DINO, SAM, ViTMatte, any diffusers
text-to-image pipeline) in :mod:`.grounding`, the commands in :mod:`.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> submodule that defines it; every name is imported on first access, so
#: ``lamina decompose --help`` (which imports :mod:`.cli` inside this package) needs no torch.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("BoundedConfig", "read_photo"), "bounded"),
    **dict.fromkeys(("ClassicalConfig", "ClassicalDecomposer"), "classical"),
    **dict.fromkeys(("decompose_image", "make_decomposer", "peel", "regions_from_args", "split_effects_layers"),
                    "decompose"),
    **dict.fromkeys(("Decomposer", "Decomposition", "finish_decomposition", "project_recomposition"), "disassembly"),
    **dict.fromkeys(("ForegroundConfig", "ForegroundEstimate", "estimate_alpha", "foreground_from_box",
                     "foreground_from_mask", "grabcut_mask", "trimap_from_mask"), "foreground"),
    "LayeringDiff": "pipeline",
    **dict.fromkeys(("SaliencyConfig", "salient_boxes"), "saliency"),
    **dict.fromkeys(("FBDDDecomposer", "FBDDPipeline", "FBDDPipelineOutput", "LiteFBDD", "compute_prefill",
                     "fbdd_loss", "load_builtin", "load_builtin_lite", "load_pipeline", "make_scheduler", "make_unet",
                     "telea_prefill"), "fbdd"),
    **dict.fromkeys(("LatentFBDDPipeline", "latent_fbdd_loss", "widen_unet"), "latent"),
    **dict.fromkeys(("HFANet", "hfa_loss"), "hfa"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BoundedConfig",
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
    "LayeringDiff",
    "LiteFBDD",
    "SaliencyConfig",
    "LatentFBDDPipeline",
    "compute_prefill",
    "decompose_image",
    "read_photo",
    "estimate_alpha",
    "fbdd_loss",
    "finish_decomposition",
    "foreground_from_box",
    "foreground_from_mask",
    "grabcut_mask",
    "hfa_loss",
    "latent_fbdd_loss",
    "load_builtin",
    "load_builtin_lite",
    "load_pipeline",
    "make_decomposer",
    "make_scheduler",
    "make_unet",
    "peel",
    "salient_boxes",
    "split_effects_layers",
    "project_recomposition",
    "regions_from_args",
    "telea_prefill",
    "trimap_from_mask",
    "widen_unet",
]
