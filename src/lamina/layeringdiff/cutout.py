"""The learned cut-out refiner: GrabCut's mask from a box, corrected by a small CNN.

LayeringDiff's foreground stage turns a box into a hard mask (GrabCut), the mask into a trimap
and the trimap into alpha (matting). GrabCut decides whole regions by colour: it fills the
inside of a cup's handle, keeps box corners whose colour fits both models and loses thin parts
(issue 21: on real-photo composites the cut-out, not the fill, is what the learned path loses
most to). The paper's chain uses SAM here, which needs weights lamina cannot download; this
module is lamina's own small replacement for that step (our design, not the paper's):

* **Input** (:func:`network_input`): a square window around the box (the box grown by
  ``context`` of its larger side on each side, padded by edge replication where it leaves the
  image), resized to ``working_size``: the image (3 channels), GrabCut's mask, the box and the
  inside-the-image indicator (one channel each), all in ``[-1, 1]``: ``[N, 6, S, S]``.
* **Network** (:class:`CutoutNet`): a small UNet (residual blocks, GroupNorm, SiLU, dilated
  blocks at the lowest scale for context) whose logits are a correction on top of GrabCut's
  mask: ``logits = head(features) + prior_gain * (2 m - 1)``, so an untrained net reproduces
  GrabCut and training learns only where GrabCut errs.
* **Output** (:func:`object_probability`): the object probability, resized back to the window,
  inside the box. lamina's foreground stage (:func:`.foreground.foreground_from_box`) runs GrabCut
  a second time from it (``ForegroundConfig.refiner_grabcut``): the network says where the object
  is at its working size, GrabCut's colour models draw the outline at full resolution; the usual
  trimap and matting follow, so soft edges and thin parts still come from matting.
  (:func:`refine_mask`: the probability thresholded at 0.5, without the second pass.)

Trained on :func:`lamina.data.photo_scenes.photo_scene` composites (procedural objects) and
:func:`~lamina.data.photo_scenes.object_scene` composites (real objects' cut-outs with their true
alpha) over photographs that the photo benchmark never uses (:mod:`.cutout_train`); the built-in
model and its sources are in ``assets/cutout`` (``README.md``). Inference is pure PyTorch (no
diffusers import): the weights are ``model.safetensors`` beside ``config.json``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..errors import ConfigError, LaminaError
from ..overrides import config_values

#: Files of a saved refiner.
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
#: The built-in refiner's folder.
BUILTIN_DIR = Path(__file__).parent / "assets" / "cutout"
#: Input channels: RGB, GrabCut's mask, the box, inside-the-image (all in [-1, 1]).
IN_CHANNELS = 6


@dataclass(frozen=True)
class CutoutNetConfig:
    """Size of the refiner.

    Attributes:
        working_size: side of the square window the network sees, in px (a multiple of
            ``2 ** (len(channels) - 1)``).
        channels: feature channels per scale, finest first (each further scale halves the side).
        dilations: dilations of the residual blocks at the coarsest scale (context).
        context: the window is the box grown by this share of its larger side on each side.
        groups: GroupNorm groups (divides every entry of ``channels``).
        prior_gain: initial weight of GrabCut's mask in the logits.
    """

    working_size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 96)
    dilations: tuple[int, ...] = (1, 2, 4)
    context: float = 0.15
    groups: int = 8
    prior_gain: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        if not self.channels or any(c < 1 or c % self.groups for c in self.channels):
            raise ConfigError(f"CutoutNetConfig.channels {self.channels} must be positive multiples of groups "
                              f"({self.groups})")
        if self.working_size % 2 ** (len(self.channels) - 1):
            raise ConfigError(f"CutoutNetConfig.working_size {self.working_size} must be a multiple of "
                              f"{2 ** (len(self.channels) - 1)}")
        if self.context < 0:
            raise ConfigError(f"CutoutNetConfig.context must be >= 0, got {self.context}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CutoutNetConfig:
        return cls(**config_values(cls, values, "CutoutNetConfig", ConfigError))


@dataclass(frozen=True)
class CutoutOutput:
    """What :class:`CutoutNet` returns: ``logits`` ``[N, 1, S, S]`` of the object (``sigmoid`` -> probability)."""

    logits: torch.Tensor


class _Block(nn.Module):
    """Residual block: (GroupNorm, SiLU, 3x3 conv) twice, the second conv zero-initialised."""

    def __init__(self, channels: int, groups: int, dilation: int = 1) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nnf.silu(self.norm1(x)))
        return x + self.conv2(nnf.silu(self.norm2(h)))


class CutoutNet(nn.Module):
    """The refiner: ``[N, 6, S, S]`` (:func:`network_input`) -> :class:`CutoutOutput` (logits ``[N, 1, S, S]``)."""

    def __init__(self, config: CutoutNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CutoutNetConfig()
        c = config.channels
        pairs = list(zip(c[:-1], c[1:], strict=True))  # (finer, coarser) channels of each scale step
        self.stem = nn.Conv2d(IN_CHANNELS, c[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(_Block(ch, config.groups) for ch in c[:-1])
        self.downsamples = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairs)
        self.middle = nn.Sequential(*(_Block(c[-1], config.groups, d) for d in config.dilations))
        self.upsamples = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in pairs)
        self.merges = nn.ModuleList(nn.Conv2d(2 * ch, ch, 1) for ch in c[:-1])
        self.up_blocks = nn.ModuleList(_Block(ch, config.groups) for ch in c[:-1])
        self.head = nn.Sequential(nn.GroupNorm(config.groups, c[0]), nn.SiLU(), nn.Conv2d(c[0], 1, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.prior_gain = nn.Parameter(torch.tensor(float(config.prior_gain)))

    def forward(self, x: torch.Tensor) -> CutoutOutput:
        """``x`` ``[N, 6, S, S]`` in ``[-1, 1]`` (channel 3 is GrabCut's mask) -> logits ``[N, 1, S, S]``."""
        if x.ndim != 4 or x.shape[1] != IN_CHANNELS:
            raise LaminaError(f"CutoutNet expects [N, {IN_CHANNELS}, S, S], got {list(x.shape)}")
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples, strict=True):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, merge, block, skip in zip(reversed(self.upsamples), reversed(self.merges), reversed(self.up_blocks),
                                          reversed(skips), strict=True):
            h = up(nnf.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(merge(torch.cat([h, skip], dim=1)))
        return CutoutOutput(logits=self.head(h) + self.prior_gain * x[:, 3:4])

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps({"_class_name": type(self).__name__, **self.config.to_dict()},
                                                     indent=2) + "\n", encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, folder / WEIGHTS_FILE)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CutoutNet:
        """Load a folder written by :meth:`save_pretrained` (``"builtin"``: the built-in refiner); eval mode."""
        from safetensors.torch import load_file

        folder = BUILTIN_DIR if str(folder) == "builtin" else Path(folder).expanduser()
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise LaminaError(f"{folder}: not a cut-out refiner (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            values = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise LaminaError(f"{folder / CONFIG_FILE}: not valid JSON ({exc})") from None
        values.pop("_class_name", None)
        model = cls(CutoutNetConfig.from_dict(values))
        try:
            model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
        except (RuntimeError, OSError) as exc:
            raise LaminaError(f"{folder / WEIGHTS_FILE}: weights do not fit {CONFIG_FILE} "
                              f"({str(exc).splitlines()[0]})") from None
        return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def load_refiner(name: str) -> CutoutNet:
    """The refiner ``name`` (``"builtin"`` or a folder), loaded once per process."""
    return CutoutNet.from_pretrained(name)


# ----------------------------------------------------------------------- windows
def cutout_window(box: tuple[int, int, int, int], context: float) -> tuple[int, int, int]:
    """``(x, y, side)``: the square window around ``box`` ``(x0, y0, x1, y1)`` grown by ``context``.

    The window may reach outside the image (:func:`crop_padded` replicates the edges there).
    """
    x0, y0, x1, y1 = box
    side = int(np.ceil(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * context)))
    return int(np.floor((x0 + x1 - side) / 2.0)), int(np.floor((y0 + y1 - side) / 2.0)), side


def crop_padded(array: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    """``array[y:y+side, x:x+side]`` with edge replication outside the array."""
    h, w = array.shape[:2]
    pads = ((max(0, -y), max(0, y + side - h)), (max(0, -x), max(0, x + side - w)))
    inner = array[max(0, y):min(h, y + side), max(0, x):min(w, x + side)]
    if any(p for pair in pads for p in pair):
        inner = np.pad(inner, pads + ((0, 0),) * (array.ndim - 2), mode="edge")
    return inner


def _resize(array: np.ndarray, side: int) -> np.ndarray:
    import cv2

    interpolation = cv2.INTER_AREA if array.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(array, (side, side), interpolation=interpolation)


def network_input(image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray,
                  config: CutoutNetConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The refiner's input ``float32`` ``[6, S, S]`` in ``[-1, 1]`` and its window ``(x, y, side)``.

    Args:
        image: ``float32`` ``[H, W, 3]`` in ``[0, 1]``.
        box: ``(x0, y0, x1, y1)`` inside the image, exclusive end.
        mask: GrabCut's mask ``[H, W]`` (bool or ``[0, 1]``).
    """
    h, w = image.shape[:2]
    x, y, side = cutout_window(box, config.context)
    x0, y0, x1, y1 = box
    planes = np.zeros((side, side, 3), np.float32)  # GrabCut's mask, the box, inside the image
    planes[:, :, 0] = crop_padded(np.asarray(mask), x, y, side)
    planes[max(0, y0 - y):y1 - y, max(0, x0 - x):x1 - x, 1] = 1.0
    planes[max(0, -y):min(side, h - y), max(0, -x):min(side, w - x), 2] = 1.0
    crop = np.concatenate([_resize(crop_padded(np.asarray(image, np.float32), x, y, side), config.working_size),
                           _resize(planes, config.working_size)], axis=2)  # (OpenCV resizes up to 4 channels)
    return np.ascontiguousarray((crop * 2.0 - 1.0).transpose(2, 0, 1)), (x, y, side)


def object_probability(net: CutoutNet, image: np.ndarray, box: tuple[int, int, int, int],
                       mask: np.ndarray, *, mirror: bool = False) -> np.ndarray:
    """The refiner's object probability ``float32`` ``[H, W]`` in ``[0, 1]`` (0 outside ``box``).

    Args:
        net: the refiner.
        image: ``float32`` ``[H, W, 3]`` in ``[0, 1]``.
        box: ``(x0, y0, x1, y1)`` inside the image, exclusive end.
        mask: GrabCut's mask ``[H, W]``.
        mirror: average the probabilities of the window and of its mirror image (one batch of two).
    """
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    inputs, (x, y, side) = network_input(image, box, mask, net.config)
    batch = torch.from_numpy(np.stack([inputs, inputs[:, :, ::-1]]) if mirror else inputs[None])
    with torch.inference_mode():
        parameter = next(net.parameters())
        p = torch.sigmoid(net(batch.to(parameter.device, parameter.dtype)).logits)[:, 0]
        window = ((p[0] + p[1].flip(-1)) / 2.0 if mirror else p[0]).float().cpu().numpy()
    window = cv2.resize(window, (side, side), interpolation=cv2.INTER_LINEAR)
    probability = np.zeros((h, w), np.float32)
    ya, yb, xa, xb = max(y0, y), min(y1, y + side), max(x0, x), min(x1, x + side)
    probability[ya:yb, xa:xb] = window[ya - y:yb - y, xa - x:xb - x]
    return probability


def refine_mask(net: CutoutNet, image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray) -> np.ndarray:
    """GrabCut's ``mask`` ``[H, W]`` corrected by ``net``: ``bool`` ``[H, W]``, object pixels inside ``box`` only.

    The refiner's probability above 0.5; ``mask`` itself when the refiner keeps nothing of the object.
    """
    refined = object_probability(net, image, box, mask) > 0.5
    return refined if refined.any() else np.asarray(mask, bool)


# --------------------------------------------------------------------------- loss
def cutout_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Binary cross-entropy plus a soft Dice term (our design; no paper equation).

    ``bce = mean(-t log p - (1 - t) log(1 - p))`` and ``dice = 1 - 2 sum(p t) / (sum(p) + sum(t))`` per
    sample, averaged; ``p = sigmoid(logits)``. The Dice term keeps small objects and thin parts from
    being outweighed by the background.

    Args:
        logits: ``[N, 1, S, S]``.
        target: ``[N, 1, S, S]`` object coverage in ``[0, 1]``.
    Returns:
        ``{"loss", "bce", "dice"}`` (scalars).
    """
    bce = nnf.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (1.0 - 2.0 * (p * t).sum(1) / (p.sum(1) + t.sum(1)).clamp_min(1e-6)).mean()
    return {"loss": bce + dice_weight * dice, "bce": bce, "dice": dice}
