"""Procedural layered scenes with exact ground truth, and loaders for user images.

* :func:`generate_scene` / :class:`Scene`: one background, foreground objects (with fur,
  glassy parts, shadows and reflections in their layers) and every ground-truth array.
* :class:`SceneConfig` and :data:`SCENE_PRESETS`: all knobs.
* :class:`ProceduralScenes`, :class:`ImageFolder`, :class:`LayeredFolder`: torch datasets.
* :func:`write_dataset`: PNG stacks or ``.npz`` shards on disk.
"""

from .captions import COLORS
from .config import BACKGROUNDS, DEFAULT_CONFIG, SCENE_PRESETS, SHAPES, TEXTURES, SceneConfig
from .datasets import IMAGE_EXTENSIONS, ImageFolder, LayeredFolder, ProceduralScenes
from .scenes import Instance, Scene, generate_scene, scene_seed
from .writer import write_dataset

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_CONFIG",
    "IMAGE_EXTENSIONS",
    "SCENE_PRESETS",
    "SHAPES",
    "TEXTURES",
    "ImageFolder",
    "Instance",
    "LayeredFolder",
    "ProceduralScenes",
    "Scene",
    "SceneConfig",
    "generate_scene",
    "scene_seed",
    "write_dataset",
]
