"""Training the cut-out refiner (:mod:`.cutout`): config presets, samples, and the training loop.

Our design. Each sample is a :func:`lamina.data.photo_scenes.photo_scene` composite (a procedural
object) or, a share ``p_object`` of them, an :func:`~lamina.data.photo_scenes.object_scene` composite
(a real object's cut-out from the ``train`` split of ``objects``) at a random size over a folder of
photographs (``photos``; the built-in model used photographs that the photo benchmark never sees,
see ``assets/cutout/README.md``), its box grown by a random ``pad`` (a
user's box is loose by a varying amount), GrabCut run on it exactly as at inference
(:func:`lamina.layeringdiff.foreground.grabcut_mask` with lamina's defaults), and the window the
refiner sees (:func:`.cutout.network_input`); the target is the true object's coverage in that
window (object alpha, not its shadows: effects are found later, by the disassembly). Samples are
made by ``workers`` data-loader processes from seeds that depend only on ``(seed, step)``, so a
resumed run sees the same data.

The loop follows lamina's run protocol (:class:`lamina.training.RunDir`): ``training-config.json``,
``log.jsonl`` and ``losses.png``, ``previews/`` (per held-out sample: GrabCut's cut-out, the
refined one and the truth), a resumable ``training-state.pt`` (running the same command again
resumes), the export of the EMA weights (``export/``: ``config.json`` + ``model.safetensors``,
:meth:`CutoutNet.from_pretrained`), and the divergence guard. ``accelerate`` for several processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..overrides import config_values
from ..training import EMA, Deadline, RunDir
from .cutout import CutoutNet, CutoutNetConfig, crop_padded, cutout_loss, network_input, refine_mask

#: Options that may change when a run is resumed (run length and bookkeeping).
RESUMABLE_CHANGES = ("total_steps", "log_every", "checkpoint_every", "preview_every", "workers", "max_loss")
#: Seeds of the preview samples (never drawn for training: training seeds are below 2**40).
PREVIEW_SEED = 2**41


@dataclass(frozen=True)
class CutoutTrainingConfig:
    """All options of a refiner training run (saved as ``training-config.json``).

    Attributes:
        photos: folder of photographs for backgrounds and object textures (at least two).
        objects: folder of real objects' cut-outs with their true alpha (RGBA images,
            :class:`lamina.data.photo_scenes.ObjectFolder`; its ``train`` split is used, the other two
            are the photo benchmark's); ``None``: procedural objects only.
        p_object: share of samples that put a real object (:func:`lamina.data.photo_scenes.object_scene`)
            instead of a procedural one over the photograph.
        net: the refiner's size (:class:`CutoutNetConfig`).
        sizes: scene sizes in px, drawn uniformly per sample.
        pad: the box is the object's box grown by a share of its size drawn from this range.
        p_handle: share of scenes with a thin handle (:func:`lamina.data.photo_scenes.handle_alpha`).
        p_inner: share of objects given inner content (:func:`inner_content`: a rim and another texture
            inside it, still the object). A handle's inside shows the background around the object; a
            cup seen from above is also a ring, but what it encloses is the object: without such
            samples the refiner learns that whatever a ring encloses is background.
        p_camouflage: share of samples in which part of the object takes the colours of its surroundings
            (:func:`camouflage`: a cup's red body on a red saucer). GrabCut's colour models miss such parts,
            so the refiner must find them by shape, shading and edges instead.
        p_flip: probability of a horizontal mirror of the window.
        dice_weight: weight of the Dice term (:func:`.cutout.cutout_loss`).
        batch_size, total_steps, lr, warmup_steps, weight_decay, grad_clip: optimisation (AdamW).
        ema_halflife_nimg, ema_rampup: EMA of the weights (half-life in samples).
        workers: data-loader processes making samples (0: in the training process).
        init: start from a saved refiner's weights (``"builtin"`` or a folder; same network, any working size).
        seed: data and initialisation seed.
        log_every, checkpoint_every, preview_every: in steps; max_loss: divergence guard.
        preview_count: held-out samples in each preview.
    """

    photos: str | None = None
    objects: str | None = None
    p_object: float = 0.0
    net: CutoutNetConfig = field(default_factory=CutoutNetConfig)
    sizes: tuple[int, ...] = (192, 256)
    pad: tuple[float, float] = (0.01, 0.12)
    p_handle: float = 0.5
    p_inner: float = 0.0
    p_camouflage: float = 0.0
    p_flip: float = 0.5
    dice_weight: float = 1.0
    batch_size: int = 16
    total_steps: int = 3000
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_halflife_nimg: float = 2000.0
    ema_rampup: float | None = 0.2
    workers: int = 1
    init: str | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    preview_every: int = 250
    preview_count: int = 6
    max_loss: float = 100.0

    def __post_init__(self) -> None:
        if isinstance(self.net, dict):
            object.__setattr__(self, "net", CutoutNetConfig.from_dict(self.net))
        for name in ("sizes", "pad"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("p_handle", "p_inner", "p_camouflage", "p_flip", "p_object"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"CutoutTrainingConfig.{name} must be a probability in [0, 1], "
                                  f"got {getattr(self, name)}")
        if not self.sizes or min(self.sizes) < 32:
            raise ConfigError(f"CutoutTrainingConfig.sizes must be sides >= 32 px, got {self.sizes}")
        if len(self.pad) != 2 or not 0 <= self.pad[0] <= self.pad[1]:
            raise ConfigError(f"CutoutTrainingConfig.pad must be a range (lo, hi) with 0 <= lo <= hi, got {self.pad}")
        for name in ("batch_size", "total_steps", "log_every", "checkpoint_every", "preview_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CutoutTrainingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.p_object > 0 and self.objects is None:
            raise ConfigError("CutoutTrainingConfig.p_object > 0 needs a folder of object cut-outs: "
                              "--objects FOLDER (--set objects=FOLDER)")
        if self.workers < 0:
            raise ConfigError(f"CutoutTrainingConfig.workers must be >= 0, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["net"] = self.net.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CutoutTrainingConfig:
        return cls(**config_values(cls, values, "cut-out training", ConfigError, nested=("net",)))


#: Named presets. ``builtin``: the built-in refiner (about 40 minutes on two CPU threads); ``tiny``: tests.
PRESETS: dict[str, CutoutTrainingConfig] = {
    "builtin": CutoutTrainingConfig(),
    "tiny": CutoutTrainingConfig(net=CutoutNetConfig(working_size=32, channels=(8, 16), dilations=(1,)),
                                 sizes=(64,), batch_size=2, total_steps=4, workers=0, log_every=1,
                                 checkpoint_every=2, preview_every=4, preview_count=2),
}


def resolve_config(preset: str = "builtin", **overrides: Any) -> CutoutTrainingConfig:
    """A preset with ``overrides`` applied (``net.channels=[...]`` style keys reach the network's config)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown cut-out preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = PRESETS[preset].to_dict()
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name and section == "net":
            values["net"][name] = value
        elif name:
            raise ConfigError(f"unknown cut-out training option {key!r}")
        else:
            values[key] = value
    return CutoutTrainingConfig.from_dict(values)


# --------------------------------------------------------------------------- data
def _photos(folder: str | None) -> list[np.ndarray]:
    from ..data.photo_scenes import PhotoFolder

    if folder is None:
        raise ConfigError("the cut-out refiner trains on photographs: give a folder with --set photos=FOLDER")
    photos = PhotoFolder.of(folder).photos
    if len(photos) < 2:
        raise ConfigError(f"photos {folder!r}: need at least two photographs (background and texture differ)")
    return photos


def _objects(config: CutoutTrainingConfig) -> list[np.ndarray]:
    """The ``train`` split of the run's object cut-outs (none without ``objects``)."""
    from ..data.photo_scenes import ObjectFolder

    return [] if config.objects is None else ObjectFolder.of(config.objects, "train").objects


def training_scene(seed: int, config: CutoutTrainingConfig, photos: list[np.ndarray], objects: list[np.ndarray],
                   size: int, pad: float, rng: np.random.Generator) -> dict[str, Any]:
    """A real object's scene (share ``p_object``) or a procedural object's (maybe with inner content)."""
    from ..data.photo_scenes import object_scene, photo_scene

    # No extra draw without objects (or camouflage): runs without them see the samples they always saw.
    if config.p_object > 0 and rng.random() < config.p_object:
        scene = object_scene(seed, size, photos, objects, pad=pad)
    else:
        scene = photo_scene(seed, size, photos, pad=pad, p_handle=config.p_handle)
        scene = inner_content(scene, rng, photos) if rng.random() < config.p_inner else scene
    if config.p_camouflage > 0 and rng.random() < config.p_camouflage:
        scene = camouflage(scene, rng)
    return scene


def make_sample(seed: int, config: CutoutTrainingConfig, photos: list[np.ndarray],
                objects: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One training sample: ``{"input": [6, S, S], "target": [1, S, S]}`` (``S`` the refiner's working size)."""
    import cv2

    rng = np.random.default_rng([seed, 37])
    size = int(config.sizes[int(rng.integers(len(config.sizes)))])
    pad = float(rng.uniform(*config.pad))
    scene = training_scene(seed, config, photos, _objects(config) if objects is None else objects, size, pad, rng)
    inputs, (x, y, side) = network_input(scene["composite"], scene["box"], _grabcut(scene), config.net)
    s = config.net.working_size
    target = cv2.resize(crop_padded(scene["object_alpha"], x, y, side), (s, s), interpolation=cv2.INTER_AREA)
    if rng.random() < config.p_flip:
        inputs, target = inputs[:, :, ::-1], target[:, ::-1]
    return {"input": np.ascontiguousarray(inputs), "target": np.ascontiguousarray(target[None], dtype=np.float32)}


def _grabcut(scene: dict[str, Any]) -> np.ndarray:
    """GrabCut's mask of the scene's box with lamina's defaults, as at inference; empty when it finds nothing."""
    from .foreground import ForegroundConfig, grabcut_mask

    defaults = ForegroundConfig()
    # allow_empty: when GrabCut finds nothing, the refiner must find the object from the image alone.
    return grabcut_mask(scene["composite"], scene["box"], defaults.grabcut_iterations, defaults.grabcut_max_side,
                        defaults.seed, allow_empty=True)


def inner_content(scene: dict[str, Any], rng: np.random.Generator, photos: list[np.ndarray]) -> dict[str, Any]:
    """``scene`` with an ellipse inside its object painted with another photo's texture and a rim (a cup's inside).

    The alpha, the box and the background are unchanged (the inside is still the object); the layer
    and the composite are redrawn (:func:`_redrawn`).
    """
    from ..data.photo_scenes import object_share, square_crop
    from .foreground import distance_to_outside

    solid = scene["object_alpha"] > 0.99
    depth = distance_to_outside(solid)
    if depth.max() < 4:
        return scene
    cy, cx = np.unravel_index(int(np.argmax(depth)), depth.shape)
    radius = float(depth.max()) * rng.uniform(0.6, 0.95)
    ry, rx = radius * rng.uniform(0.6, 1.0), radius * rng.uniform(0.6, 1.0)
    yy, xx = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    r = np.hypot((yy - cy) / ry, (xx - cx) / rx) * min(ry, rx)  # about px from the centre
    rim = depth.shape[0] / 256.0 * rng.uniform(1.5, 4.0)
    inside = np.clip(min(ry, rx) - rim - r + 0.5, 0.0, 1.0)[:, :, None]
    ring = np.clip(min(ry, rx) - r + 0.5, 0.0, 1.0)[:, :, None] - inside
    texture = square_crop(rng, photos[int(rng.integers(len(photos)))], depth.shape, (0.2, 0.6))
    colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    layer = scene["layer"].copy()
    share = object_share(scene["object_alpha"], layer[:, :, 3])
    paint = ring * colour + inside * texture
    amount = (ring + inside) * share
    layer[:, :, :3] = (1.0 - amount) * layer[:, :, :3] + amount * paint / np.maximum(ring + inside, 1e-6)
    return _redrawn(scene, layer)


def _redrawn(scene: dict[str, Any], layer: np.ndarray) -> dict[str, Any]:
    """``scene`` with a recoloured ``layer`` ``[S, S, 4]``: its composite redrawn over the unchanged background,
    and its ``truth`` entry, which would be stale, left out."""
    a = layer[:, :, 3:]
    composite = (a * layer[:, :, :3] + (1.0 - a) * scene["background"]).astype(np.float32)
    kept = {key: value for key, value in scene.items() if key != "truth"}
    return kept | {"layer": layer.astype(np.float32), "composite": composite}


#: :func:`camouflage`: share of the object's area recoloured; how far its colours move towards those around it;
#: the ring of surroundings whose colours it takes and the smoothing that carries them inwards (shares of
#: the object's larger side); the soft edge of the recoloured part, px.
CAMOUFLAGE_AREA = (0.3, 1.0)
CAMOUFLAGE_STRENGTH = (0.7, 1.0)
CAMOUFLAGE_RING = 0.1
CAMOUFLAGE_SMOOTH = 0.15
CAMOUFLAGE_EDGE = 1.0


def camouflage(scene: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``scene`` with part of its object recoloured to the colours of the background next to it.

    A random half-plane through the object (a share ``CAMOUFLAGE_AREA`` of its pixels) takes, by
    ``CAMOUFLAGE_STRENGTH``, the colour of the background in a ring around the object, smoothed and
    carried inwards (each pixel the mean colour of the surroundings nearest it) plus its own deviation
    from the part's mean (scaled down to the ring's spread where that is smaller): the part keeps its shading
    and texture but shares its surroundings' colours, as a cup's red body on a red saucer does. The alpha,
    box and background are unchanged; the layer (the object's share of it, not its effects) and the
    composite are redrawn (:func:`_redrawn`).
    """
    import cv2

    from ..data.photo_scenes import object_share
    from .foreground import distance_to_outside

    a_obj = scene["object_alpha"]
    solid = a_obj > 0.5
    if solid.sum() < 16:
        return scene
    rows, cols = np.nonzero(solid)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    ring = (distance_to_outside(~(a_obj > 0.01)) <= max(2.0, CAMOUFLAGE_RING * extent)) & (a_obj <= 0.01)
    if ring.sum() < 16:
        return scene
    # The half-plane: a random direction, its offset chosen so that the wanted share of the object is in it.
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:a_obj.shape[0], 0:a_obj.shape[1]].astype(np.float32)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    cut = np.quantile(along[solid], 1.0 - rng.uniform(*CAMOUFLAGE_AREA))
    part = np.clip((along - cut) / CAMOUFLAGE_EDGE + 0.5, 0.0, 1.0)[:, :, None]
    inside = solid & (part[:, :, 0] > 0.5)
    if inside.sum() < 4:
        return scene
    # The surroundings' colour at each pixel: the ring's colours smoothed by normalised convolution.
    sigma = max(1.0, CAMOUFLAGE_SMOOTH * extent)
    weight = ring.astype(np.float32)
    spread = cv2.GaussianBlur(weight, (0, 0), sigma)
    surround = cv2.GaussianBlur(scene["background"] * weight[:, :, None], (0, 0), sigma)
    surroundings = scene["background"][ring]  # [n, 3]
    far = spread < 1e-4  # beyond the blur's reach: the ring's mean colour
    surround = np.where(far[:, :, None], surroundings.mean(0), surround / np.maximum(spread, 1e-4)[:, :, None])
    layer = scene["layer"].copy()
    rgb = layer[:, :, :3]
    mu_o, sd_o = rgb[inside].mean(0), rgb[inside].std(0) + 1e-3
    moved = np.clip(surround + (rgb - mu_o) / sd_o * np.minimum(surroundings.std(0), sd_o), 0.0, 1.0)
    amount = rng.uniform(*CAMOUFLAGE_STRENGTH) * part * object_share(a_obj, layer[:, :, 3])
    layer[:, :, :3] = (1.0 - amount) * rgb + amount * moved
    return _redrawn(scene, layer)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step``: that step's batch (seeds from ``(seed, step)`` only)."""

    def __init__(self, config: CutoutTrainingConfig) -> None:
        self.config = config

    def __len__(self) -> int:
        return self.config.total_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        photos, objects = _photos(self.config.photos), _objects(self.config)
        base = (self.config.seed * 1_000_003 + step) * self.config.batch_size
        samples = [make_sample(base + i, self.config, photos, objects) for i in range(self.config.batch_size)]
        return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


# ------------------------------------------------------------------------ preview
def write_preview(net: CutoutNet, config: CutoutTrainingConfig, path: Path) -> None:
    """A contact sheet of held-out scenes: the composite with GrabCut's cut-out, the refined one and the truth.

    With ``objects``, every other scene is a real object's (of the ``validation`` split: never trained on).
    """
    from ..data.photo_scenes import ObjectFolder, object_scene, photo_scene
    from ..io import save_contact_sheet
    from ..layers import Layer, LayeredImage

    photos = _photos(config.photos)
    held_out = None if config.objects is None else ObjectFolder.of(config.objects, "validation").objects
    sheets = []
    for i in range(config.preview_count):
        if held_out and i % 2:
            scene = object_scene(PREVIEW_SEED + i, max(config.sizes), photos, held_out)
        else:
            scene = photo_scene(PREVIEW_SEED + i, max(config.sizes), photos)
        image, grabcut = scene["composite"], _grabcut(scene)
        refined = refine_mask(net, image, scene["box"], grabcut)
        cutouts = [Layer(np.dstack([image, m.astype(np.float32)]), name=name) for name, m in (
            ("grabcut", grabcut), ("refined", refined), ("truth", scene["object_alpha"] > 0.5))]
        sheets.append(LayeredImage(Layer(image, name="composite"), cutouts))
    save_contact_sheet(sheets, path, overwrite=True)


# --------------------------------------------------------------------------- loop
def training_loop(config: CutoutTrainingConfig, run_dir: str | Path, *, echo: Callable[[str], None] = print,
                  stop_after_s: float | None = None) -> Path:
    """Train the refiner into ``run_dir``; running it again resumes. Returns the export folder.

    Raises:
        ConfigError: ``run_dir`` holds a run with other options, or ``photos`` is missing.
        TrainingDivergedError: a loss became NaN/Inf or exceeded ``max_loss``; the last good state is kept.
    """
    from ..extras import require
    from ..progress import progress

    _photos(config.photos), _objects(config)  # fail before anything is written
    Accelerator = require("accelerate", "train").Accelerator
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main, world = accelerator.is_main_process, accelerator.num_processes
    if config.batch_size % world:
        raise ConfigError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({world})")
    run = RunDir(run_dir, is_main=main, echo=echo)
    run.open(config.to_dict(), may_change=RESUMABLE_CHANGES,
             normalize=lambda d: CutoutTrainingConfig.from_dict(d).to_dict())
    accelerator.wait_for_everyone()

    torch.manual_seed(config.seed)
    net = CutoutNet(config.net)
    if config.init is not None and not run.has_state():
        saved = CutoutNet.from_pretrained(config.init)
        # The working size is not in the weights (the network is convolutional): a refiner may continue at another.
        if replace(saved.config, working_size=config.net.working_size) != config.net:
            raise ConfigError(f"init {config.init!r} is a refiner of another size ({saved.config}); "
                              f"this run's is {config.net}")
        net.load_state_dict(saved.state_dict())
        echo(f"starting from the weights of {config.init}")
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(net, config.ema_halflife_nimg, config.ema_rampup)
    step = 0
    state = run.load_state()
    if state is not None:
        net.load_state_dict(state["net"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        echo(f"resuming {run.path} at step {step}")
        if run.export_is_stale():
            run.export(ema.model.save_pretrained, step)
    net, optimizer = accelerator.prepare(net, optimizer)
    ema.model.to(accelerator.device).eval()

    def save() -> None:
        run.save_state({"step": step, "net": accelerator.unwrap_model(net).state_dict(),
                        "ema": ema.model.state_dict(), "optimizer": optimizer.state_dict(),
                        "config": config.to_dict()})
        run.export(ema.model.save_pretrained, step)

    # Each process takes every world-th sample of the step's global batch.
    per_process = replace(config, batch_size=config.batch_size // world,
                          seed=config.seed * world + accelerator.process_index)
    loader = torch.utils.data.DataLoader(
        _StepBatches(per_process), batch_size=None, sampler=range(step, config.total_steps),
        num_workers=config.workers, persistent_workers=False)
    deadline = Deadline(stop_after_s)
    net.train()
    for batch in progress(loader, desc="cut-out refiner", disable=None if main else True):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
        logits = net(batch["input"].to(accelerator.device)).logits
        losses = cutout_loss(logits, batch["target"].to(accelerator.device), config.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        ema.update(accelerator.unwrap_model(net), step * config.batch_size, config.batch_size)
        run.log_step(step, losses, accelerator, batch_size=config.batch_size, max_loss=config.max_loss,
                     log_every=config.log_every)
        timed_out = deadline.passed(accelerator)
        if step % config.checkpoint_every == 0 or step == config.total_steps or timed_out:
            save()
        if main and (step % config.preview_every == 0 or step == config.total_steps):
            write_preview(ema.model, config, run.preview_path(step))
            run.plot()
        if timed_out:
            echo(f"stopping after {deadline.elapsed():.0f} s at step {step}; run again to resume")
            break
    if step >= config.total_steps and not run.export_dir.is_dir():
        save()
    return run.export_dir
