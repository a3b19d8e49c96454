"""BFS (Sim, Kang, Cho, SIGGRAPH 2026): back-to-front layered image synthesis.

Given a background, a box (or region mask) and a caption, BFS synthesises one straight-alpha
foreground layer holding the object and its shadows and reflections; the background is never
regenerated. A dual-branch FLUX Fill transformer denoises the composite and the layer
together (:mod:`.joint`: joint attention through diffusers attention processors on a stock
transformer), a transparency VAE (:mod:`.transparency`) decodes the layer, and
:class:`~.pipeline.BFSPipeline` runs it. :mod:`.components` builds the tiny components and
names the full-size preset; :mod:`.checkpoint` loads the official release's weights.

Everything here needs diffusers and is imported on first use
(``from lamina.bfs import BFSPipeline`` imports :mod:`.pipeline` then).
"""

from importlib import import_module
from typing import Any

#: Public names and the submodule each lives in.
_LAZY = {
    # joint
    "BFSJointAdapter": "joint",
    "BFSJointProcessor": "joint",
    # pipeline and its building blocks
    "BFSPipeline": "pipeline",
    "PromptEmbeddings": "pipeline",
    "VelocityOutput": "pipeline",
    "calculate_shift": "pipeline",
    "decode_latents": "pipeline",
    "flux_sigmas": "pipeline",
    "load_pipeline": "pipeline",
    "resize_premultiplied": "pipeline",
    "working_size": "pipeline",
    "sampling_window": "pipeline",
    "encode_image": "pipeline",
    "encode_prompts": "pipeline",
    "latent_image_ids": "pipeline",
    "pack_latents": "pipeline",
    "pack_mask": "pipeline",
    "predict_velocity": "pipeline",
    "prepare_fill_condition": "pipeline",
    "unpack_latents": "pipeline",
    # transparency VAE
    "composite_over": "transparency",
    "decode_layer": "transparency",
    "encode_layer": "transparency",
    "layer_to_vae_input": "transparency",
    "widen_vae": "transparency",
    # components
    "BFSComponentsConfig": "components",
    "PRESETS": "components",
    "build_components": "components",
    "caption_vocabulary": "components",
    "get_preset": "components",
    # official checkpoints
    "CheckpointReport": "checkpoint",
    "load_bfs_checkpoint": "checkpoint",
    "to_official_state_dict": "checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
