"""LayeringDiff as one object, in the habits of diffusers: ``from_pretrained``, then call it.

::

    from lamina.layeringdiff import LayeringDiff

    pipe = LayeringDiff.from_pretrained("builtin", device="auto")   # or a folder / hub id
    layered = pipe(Image.open("photo.jpg"), box=(40, 30, 200, 220))  # -> LayeredImage
    layered = pipe(photo, prompt="the cat")                            # layer named "the cat"
    layered = pipe(photo)                                              # automatic mode
    layered.save("photo.psd")

The model's own config supplies the defaults (its trained number of denoising steps, its
prefill, its HFA); keyword arguments of :meth:`from_pretrained` override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import LaminaError
from ..layers import LayeredImage
from .decompose import decompose_image, make_decomposer
from .disassembly import Decomposer
from .foreground import ForegroundConfig


class LayeringDiff:
    """A loaded LayeringDiff: decomposer (FBDD or classical), optional text/segmentation models, foreground options.

    Args:
        decomposer: any :class:`~lamina.layeringdiff.disassembly.Decomposer`.
        grounder: a :class:`~lamina.layeringdiff.grounding.Grounder` for prompts (and SAM for boxes), or ``None``
            (prompts then load the default Grounding DINO / SAM / ViTMatte on first use).
        foreground: options of the foreground stage.
    """

    def __init__(self, decomposer: Decomposer, grounder: Any = None,
                 foreground: ForegroundConfig | None = None) -> None:
        self.decomposer = decomposer
        self.grounder = grounder
        self.foreground = foreground or ForegroundConfig()

    @classmethod
    def from_pretrained(cls, model: Any = "builtin", *, method: str = "layeringdiff", device: Any = "auto",
                        dtype: Any = "auto", grounding: Any = None, foreground: ForegroundConfig | None = None,
                        **options: Any) -> LayeringDiff:
        """Load a LayeringDiff.

        Args:
            model: ``"builtin"`` (the model shipped with lamina), a folder saved by
                ``FBDDPipeline.save_pretrained`` / a training run's ``export``, a hub id, or a
                loaded FBDD pipeline; ignored by ``method="classical"``.
            method: ``"layeringdiff"`` (FBDD) or ``"classical"`` (no weights).
            device, dtype: :mod:`lamina.devices` names (``"auto"``: the GPU if there is one; lamina's
                small FBDD stays float32 under ``auto``).
            grounding: a :class:`~lamina.layeringdiff.grounding.GroundingConfig`, or a dict of its
                fields (``{"detector": ..., "segmenter": ..., "matting": ...}``): text prompts, and SAM
                for boxes and automatic mode.
            options: the decomposer's options (``num_inference_steps``, ``seed``, ``hfa``, ``window``...;
                default: the model's own config).
        """
        if method == "classical":
            decomposer = make_decomposer("classical", **options)
        elif method == "layeringdiff":
            decomposer = make_decomposer("layeringdiff", model, device=device, dtype=dtype, **options)
        else:
            raise LaminaError(f"unknown LayeringDiff method {method!r}; choose layeringdiff or classical")
        grounder = None
        if grounding is not None:
            from .grounding import Grounder, GroundingConfig

            if isinstance(grounding, dict):
                grounding = GroundingConfig(**({"device": device, "dtype": dtype} | grounding))
            if not isinstance(grounding, GroundingConfig):
                raise LaminaError(f"grounding must be a GroundingConfig or a dict of its fields, not "
                                  f"{type(grounding).__name__}")
            grounder = Grounder(grounding)
        return cls(decomposer, grounder, foreground)

    @property
    def device(self) -> Any:
        """Where the FBDD model runs (the CPU for the classical path)."""
        import torch

        pipeline = getattr(self.decomposer, "pipeline", None)
        return pipeline.device if pipeline is not None else torch.device("cpu")

    def __call__(self, image: Any, *, box: Any = None, mask: Any = None, prompt: Any = None,
                 layers: int | None = None, split_effects: bool = False,
                 names: Sequence[str] | None = None) -> LayeredImage:
        """Decompose ``image`` (PIL image, ``[H, W, 3]`` array, or ``[3, H, W]`` tensor in ``[0, 1]``).

        Give the object(s) by ``box`` (``(x0, y0, x1, y1)``, exclusive end), ``mask`` (``[H, W]``) or
        ``prompt`` (``"the cat"``; also the layer's name), each optionally a list front-most first;
        with none of them the ``layers`` (default 1) most salient objects are found automatically.
        Returns a :class:`~lamina.LayeredImage` whose composite equals ``image`` (see
        :func:`~lamina.layeringdiff.decompose.decompose_image` for every argument).
        """
        return decompose_image(image, box=box, mask=mask, prompt=prompt, layers=layers, config=self.foreground,
                               decomposer=self.decomposer, grounder=self.grounder, split_effects=split_effects,
                               names=names)

    def __repr__(self) -> str:
        return f"LayeringDiff(decomposer={type(self.decomposer).__name__}, device={self.device})"
