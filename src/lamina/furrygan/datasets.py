"""Training images for FurryGAN: a folder of the user's images, or lamina's procedural composites.

Both yield ``uint8`` tensors ``[3, R, R]`` (the training loop flips them). The GAN never sees
a mask: :class:`SynthComposites` returns only the composite of each procedural scene; the
exact masks are used by the evaluation code alone (:func:`synth_masks`).

``SYNTH_SCENES`` is the scene configuration FurryGAN trains on: one large object near the
centre, no shadows or reflections (the ``single`` preset), objects enlarged so that they
cover about 27% of the canvas on average (5th-95th percentile 13-46%), like the object-centric
crops of AFHQ or FFHQ that the paper uses.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch.utils.data import Dataset

from ..data import SCENE_PRESETS, ImageFolder, ProceduralScenes, SceneConfig

#: Object-centric procedural scenes (see the module docstring).
SYNTH_SCENES: SceneConfig = dataclasses.replace(SCENE_PRESETS["single"], scale=(0.32, 0.45))

#: Dataset seeds (:func:`lamina.data.scene_seed`): GAN training scenes use seed 0 (the segmenter
#: ``train_segmenter(seed=s)`` uses ``s``, 0 by default); held-out evaluation scenes use seed 1.
SYNTH_TRAIN_SEED = 0
SYNTH_EVAL_SEED = 1


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


class SynthComposites(Dataset):
    """``length`` procedural scenes at ``resolution`` px, rendered on the fly (about 2 ms each at 32 px).

    Item ``i`` is the composite of :class:`lamina.data.ProceduralScenes` item ``i`` as ``uint8``
    ``[3, R, R]``; no masks.
    """

    def __init__(self, resolution: int, length: int = 100_000, seed: int = SYNTH_TRAIN_SEED,
                 scenes: SceneConfig = SYNTH_SCENES) -> None:
        self.scenes = ProceduralScenes(scenes.with_size(resolution), length=length, seed=seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _to_uint8(torch.from_numpy(self.scenes.scene(i).composite.transpose(2, 0, 1).copy()))


def synth_masks(resolution: int, count: int, seed: int = SYNTH_EVAL_SEED, start: int = 0,
                scenes: SceneConfig = SYNTH_SCENES) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural scenes ``start .. start + count`` of dataset ``seed`` with their exact masks: images
    ``float`` ``[N, 3, R, R]`` in [0, 1] and object alpha ``[N, 1, R, R]`` (default: the held-out ones)."""
    data = ProceduralScenes(scenes.with_size(resolution), length=start + count, seed=seed)
    items = [data.scene(start + i) for i in range(count)]
    images = torch.stack([torch.from_numpy(s.composite.transpose(2, 0, 1).copy()) for s in items])
    masks = torch.stack([torch.from_numpy(s.object_alpha[None].copy()) for s in items])
    return images.float(), masks.float()


class ImageFolderDataset(Dataset):
    """Every image under ``root`` (:class:`lamina.data.ImageFolder`: resized to cover, centre-cropped,
    unreadable files skipped with a warning) as ``uint8`` ``[3, R, R]``; the training loop flips.

    Decoded images are kept in memory (``cache=True``), which suits the small folders
    FurryGAN is trained on here.
    """

    def __init__(self, root: str | os.PathLike[str], resolution: int, cache: bool = True) -> None:
        self.images = ImageFolder(root, resolution)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    @property
    def files(self):
        return self.images.files

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image = _to_uint8(self.images[i]["composite"])
        if self._cache is not None:
            self._cache[i] = image
        return image
