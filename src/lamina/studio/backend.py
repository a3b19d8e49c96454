"""The studio's one door to the methods: every call from the app to lamina's methods goes through here.

The handlers (:mod:`.handlers`) and the page (:mod:`.app`) never import a method package;
they call a :class:`Backend`. When a method's API changes, only this module changes:

* devices: :mod:`lamina.devices` (``--device`` / ``--dtype`` as every command has them);
* decomposition: :func:`lamina.layeringdiff.decompose_image` with a cached decomposer; with no
  box and no phrase, its automatic mode finds the most salient object(s);
* BFS: ``lamina.bfs.BFSPipeline.from_pretrained(model)(background=..., box=..., prompt=...)``,
  returning a :class:`~lamina.LayeredImage` whose top layer is the new object (``ADAPTER``:
  written against the planned API until ``lamina.bfs`` is merged);
* FurryGAN: :mod:`lamina.furrygan.inference` (``generate``, ``invert``).

Models are loaded on first use and kept for the life of the process (one copy shared by
every browser session; a lock makes the first load happen once).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LaminaError
from ..layers import Layer, LayeredImage

#: ``report(fraction in [0, 1], message)``: progress of one long call.
Report = Callable[[float, str], None]

#: Name of the optional preview layer a BFS call may add on top (not an object layer).
BFS_PREVIEW_LAYER = "bfs composite"

#: Decomposition methods offered by the studio (``lamina decompose --method``).
DECOMPOSE_METHODS = ("layeringdiff", "classical")


def _no_report(fraction: float, message: str) -> None:
    del fraction, message


def _resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` / ``mps`` / ``cpu`` (what is there); any other name is checked (:mod:`lamina.devices`)."""
    from ..devices import resolve_device

    return str(resolve_device(name))


def bfs_available() -> bool:
    """Whether this lamina has the BFS method (``lamina.bfs.BFSPipeline``)."""
    try:
        if importlib.util.find_spec("lamina.bfs") is None:
            return False
        import lamina.bfs as bfs
    except ImportError:
        return False
    return hasattr(bfs, "BFSPipeline")


@dataclass
class BackendConfig:
    """What ``lamina studio`` was started with.

    Attributes:
        model: LayeringDiff FBDD model (folder, hub id, or ``None`` for the built-in one).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16`` (pretrained models on a GPU).
        grounding: ``{"detector": ID, "segmenter": ID, "matting": ID}`` for objects given by a phrase;
            empty: phrases are not offered.
        t2i: a diffusers text-to-image pipeline (hub id or folder) for Text -> layers; ``None``: tab off.
        furrygan: FurryGAN checkpoint (``builtin``, ``builtin-64``, a run or export folder).
        bfs_model: BFS model (``builtin``, folder or hub id).
        steps: FBDD denoising steps (``None``: the model's own).
    """

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    grounding: dict[str, str] = field(default_factory=dict)
    t2i: str | None = None
    furrygan: str = "builtin"
    bfs_model: str = "builtin"
    steps: int | None = None


class Backend:
    """Loads models lazily and runs the methods for the studio; safe to share between sessions."""

    def __init__(self, config: BackendConfig | None = None) -> None:
        self.config = config or BackendConfig()
        self.device = _resolve_device(self.config.device)
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ capabilities
    @property
    def phrases_available(self) -> bool:
        """Objects can be given by a phrase (grounding models were named at start)."""
        return bool(self.config.grounding)

    @property
    def auto_available(self) -> bool:
        """Objects can be left out: the method finds them."""
        return True

    @property
    def bfs_available(self) -> bool:
        return bfs_available()

    @property
    def t2i_available(self) -> bool:
        return self.config.t2i is not None

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:  # one load, even when two sessions ask at once
            if key not in self._cache:
                self._cache[key] = load()
            return self._cache[key]

    # ------------------------------------------------------------------ photo -> layers
    def _decomposer(self, method: str) -> Any:
        from ..layeringdiff import make_decomposer

        if method not in DECOMPOSE_METHODS:
            raise LaminaError(f"unknown method {method!r}; choose from {', '.join(DECOMPOSE_METHODS)}")
        if method == "classical":
            return self._cached("classical", lambda: make_decomposer("classical"))

        def load() -> Any:
            options = {"num_inference_steps": self.config.steps} if self.config.steps else {}
            return make_decomposer("layeringdiff", self.config.model, device=self.device, dtype=self.config.dtype,
                                   **options)

        return self._cached("layeringdiff", load)

    def _grounder(self) -> Any:
        from ..layeringdiff.grounding import Grounder, GroundingConfig

        config = {"device": self.device, "dtype": self.config.dtype} | self.config.grounding
        return self._cached("grounder", lambda: Grounder(GroundingConfig(**config)))

    def decompose(self, rgb: np.ndarray, *, boxes: list[tuple[int, int, int, int]] | None = None,
                  phrases: list[str] | None = None, layers: int | None = None, method: str = "layeringdiff",
                  report: Report = _no_report) -> LayeredImage:
        """Photo ``[H, W, 3]`` in ``[0, 1]`` -> background + one layer per object (boxes/phrases front-most first).

        With neither boxes nor phrases, the ``layers`` most salient objects are found automatically
        (SAM refines them when grounding models were given).
        """
        from ..layeringdiff import decompose_image

        report(0.05, f"loading the {method} model")
        decomposer = self._decomposer(method)
        report(0.2, "decomposing")
        grounder = self._grounder() if self.phrases_available else None
        if boxes:
            return decompose_image(rgb, box=list(boxes), decomposer=decomposer, grounder=grounder)
        if phrases:
            if grounder is None:
                raise LaminaError("objects by phrase need grounding models: start the studio with "
                                  "--grounding-model detector=ID --grounding-model segmenter=ID ...")
            return decompose_image(rgb, prompt=list(phrases), decomposer=decomposer, grounder=grounder)
        return decompose_image(rgb, layers=layers or 1, decomposer=decomposer, grounder=grounder)

    # ------------------------------------------------------------------ background -> layers (BFS)
    def bfs_add(self, image: LayeredImage, box: tuple[int, int, int, int], prompt: str, seed: int = 0,
                report: Report = _no_report) -> Layer:
        """The new object layer (with its shadow) that BFS draws onto ``image``'s composite in ``box``.

        ADAPTER: written against the BFS branch as it stands (``lamina.bfs.train.load_model`` for
        ``builtin`` / a folder / a hub id, else ``BFSPipeline.from_pretrained``; the pipeline's call
        ``(background=, box=, prompt=, generator=)`` returns the background plus one layer).
        """
        if not self.bfs_available:
            raise LaminaError("BFS is not installed in this lamina (lamina.bfs is missing)")
        import torch

        report(0.05, "loading the BFS model")
        pipeline = self._cached("bfs", self._load_bfs)
        report(0.2, "drawing the object")
        background = image.composite()[:, :, :3]
        result = pipeline(background=background, box=box, prompt=prompt,
                          generator=torch.Generator().manual_seed(int(seed)))
        layers = [layer for layer in getattr(result, "layers", []) if layer.name != BFS_PREVIEW_LAYER]
        if not isinstance(result, LayeredImage) or not layers:
            raise LaminaError(f"BFS returned {type(result).__name__} without a layer")
        return layers[0]

    def _load_bfs(self) -> Any:
        try:
            from lamina.bfs.train import load_model  # type: ignore[import-not-found]
        except ImportError:
            from lamina.bfs import BFSPipeline  # type: ignore[import-not-found]

            pipeline = BFSPipeline.from_pretrained(self.config.bfs_model)
        else:
            pipeline = load_model(self.config.bfs_model)
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)
        return pipeline.to(self.device) if hasattr(pipeline, "to") else pipeline

    # ------------------------------------------------------------------ FurryGAN
    def _furrygan(self) -> Any:
        from ..furrygan.inference import load_generator

        return self._cached("furrygan", lambda: load_generator(self.config.furrygan, device=self.device))

    def furrygan_sample(self, count: int, truncation: float = 0.7, seed: int = 0,
                        report: Report = _no_report) -> list[LayeredImage]:
        """``count`` two-layer samples of the FurryGAN checkpoint."""
        from ..furrygan.inference import generate

        report(0.1, "loading FurryGAN")
        G = self._furrygan()
        report(0.5, "sampling")
        return generate(G, count, truncation_psi=truncation, seed=seed)

    def furrygan_segment(self, rgb: np.ndarray, steps: int = 200, seed: int = 0,
                         report: Report = _no_report) -> LayeredImage:
        """Segment a photo ``[H, W, 3]`` by FurryGAN inversion: the photo cut out by the GAN's mask, at its size."""
        import torch

        from ..data.datasets import resize_crop
        from ..furrygan.inference import invert

        report(0.1, "loading FurryGAN")
        G = self._furrygan()
        original = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        target = resize_crop(original, G.cfg.resolution, G.cfg.resolution)[None]
        report(0.2, f"inverting ({steps} steps)")
        result = invert(G, target.to(self.device), steps=steps, seed=seed)
        return result.to_layered_at(0, original)

    # ------------------------------------------------------------------ text -> layers
    def text_to_layers(self, prompt: str, phrases: list[str], seed: int = 0, steps: int = 30,
                       report: Report = _no_report) -> LayeredImage:
        """Generate a composite from ``prompt`` with the ``t2i`` model, then peel ``phrases`` (front-most first)."""
        if not self.t2i_available:
            raise LaminaError("Text -> layers needs a text-to-image model: start the studio with --t2i HUB_ID_OR_DIR")
        if not phrases:
            raise LaminaError("name the foreground object(s) to peel, e.g. 'the cat'")
        from ..layeringdiff.grounding import generate_composite

        report(0.05, "generating the composite")
        image = generate_composite(self.config.t2i, prompt, num_inference_steps=steps, seed=seed, device=self.device,
                                   dtype=self.config.dtype)
        report(0.6, "peeling the layers")
        result = self.decompose(image, phrases=phrases)
        result.metadata["prompt"] = prompt
        return result
