"""What the studio's buttons do, as plain functions on a per-browser-session :class:`Session`.

Nothing here imports gradio: the page (:mod:`.app`) wires these functions to its widgets,
and the tests call them directly. Every function that changes the layered image first
pushes an undo snapshot; every bad input raises a one-line :class:`~lamina.LaminaError`
that the page shows as a message.

Layers are addressed by ``k``, an index into :attr:`LayeredImage.all_layers`: ``0`` is the
background, ``1..L`` the foreground layers back to front (``L`` is the top one).
"""

from __future__ import annotations

import copy
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputFileError, LaminaError, LayerError
from ..io import save, write_png
from ..io.images import decode_image
from ..io.preview import checkerboard
from ..layers import Layer, LayeredImage, check_box, parse_box, to_uint8
from .backend import Backend, Report, _no_report

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class StudioLimits:
    """Limits of one studio (``lamina studio --max-pixels``).

    Attributes:
        max_pixels: uploads with more pixels are refused from the file header, before decoding.
        preview_side: longest side of the images shown in the page (work is at full size).
        tile_side: longest side of each layer's tile in the layer gallery.
        history: undo steps kept per session.
        max_objects: most boxes (objects) in one decomposition.
        sessions: sessions (browser tabs) kept in memory; the least recently used beyond it is dropped.
        session_ttl_s: a session untouched this long is dropped (its images freed).
        download_ttl_s: prepared downloads are deleted from the server after this long.
    """

    max_pixels: int = 16_000_000
    preview_side: int = 1024
    tile_side: int = 256
    history: int = 20
    max_objects: int = 8
    sessions: int = 100
    session_ttl_s: float = 6 * 3600
    download_ttl_s: float = 3600


DEFAULT_LIMITS = StudioLimits()

#: Export formats: key -> (label, file suffix).
EXPORT_FORMATS = {
    "psd": ("Photoshop PSD", ".psd"),
    "ora": ("OpenRaster (GIMP, Krita)", ".ora"),
    "png-stack": ("PNG stack (zip)", ".zip"),
    "png": ("flattened PNG", ".png"),
}

#: Colours of the boxes drawn on the photo (front-most object first) and of a pending corner.
BOX_COLOURS = ((255, 40, 40), (40, 160, 255), (40, 200, 60), (255, 170, 0), (200, 60, 255))
CORNER_COLOUR = (255, 255, 0)


@dataclass
class Picker:
    """Boxes given by clicking two opposite corners on a shown image.

    Attributes:
        boxes: finished boxes ``(x0, y0, x1, y1)`` in full-size pixels (exclusive end), in click order.
        corner: the first corner of a box being drawn, or ``None``.
        scale: full-size pixels per shown pixel.
    """

    boxes: list[Box] = field(default_factory=list)
    corner: tuple[int, int] | None = None
    scale: float = 1.0


@dataclass
class Session:
    """Everything one browser tab owns; gradio keeps one per tab (``gr.State``), never shared.

    Attributes:
        id: random id (shown in exports' metadata; lets tests tell sessions apart).
        photo: the uploaded photo ``float32`` ``[H, W, 3]`` in ``[0, 1]`` (Photo -> layers).
        name: file stem for downloads.
        photo_pick: boxes on the photo, front-most object first.
        bfs_pick: the box of the next BFS object, on the current composite.
        image: the layered image the layer panel edits (``None`` before any).
        history: undo snapshots of ``image``, oldest first.
        samples: the last FurryGAN samples (pick one into the panel).
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    photo: np.ndarray | None = None
    name: str = "layers"
    photo_pick: Picker = field(default_factory=Picker)
    bfs_pick: Picker = field(default_factory=Picker)
    image: LayeredImage | None = None
    history: list[LayeredImage | None] = field(default_factory=list)
    samples: list[LayeredImage] = field(default_factory=list)


def new_session() -> Session:
    return Session()


# ----------------------------------------------------------------------------- uploads
def _stem(path: str | Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem).strip("._")
    return stem[:64] or "layers"


def read_upload(path: str | Path | None, limits: StudioLimits = DEFAULT_LIMITS, what: str = "photo") -> np.ndarray:
    """An uploaded image as ``float32`` ``[H, W, 3]`` in ``[0, 1]`` (alpha dropped).

    The pixel count is checked from the file header before anything is decoded, so a
    20,000 x 20,000 upload costs nothing. Raises :class:`~lamina.errors.InputFileError`
    naming the file (its uploaded name, not the server's temporary path).
    """
    if path is None:
        raise InputFileError(f"no {what} uploaded: choose an image file first")
    label = Path(path).name
    return decode_image(path, label, max_pixels=limits.max_pixels, alpha=False)


def load_photo(session: Session, path: str | Path | None, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Photo -> layers: take an upload as the photo; its boxes start empty."""
    session.photo = read_upload(path, limits)
    session.name = _stem(path)  # type: ignore[arg-type]
    session.photo_pick = Picker(scale=_scale(session.photo.shape[:2], limits))
    return session


def use_photo(session: Session, rgb: np.ndarray, name: str, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Take an array ``[H, W, 3]`` (e.g. a built-in example) as the photo."""
    session.photo = np.ascontiguousarray(rgb[:, :, :3], dtype=np.float32)
    session.name = _stem(name)
    session.photo_pick = Picker(scale=_scale(session.photo.shape[:2], limits))
    return session


def load_background(session: Session, path: str | Path | None, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Background -> layers: start a new layered image from an uploaded background (undoable)."""
    rgb = read_upload(path, limits, what="background")
    return use_background(session, rgb, _stem(path), limits)  # type: ignore[arg-type]


def use_background(session: Session, rgb: np.ndarray, name: str, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Start a new layered image holding only the background ``rgb`` ``[H, W, 3]``."""
    image = LayeredImage(np.ascontiguousarray(rgb[:, :, :3], dtype=np.float32), [],
                         metadata={"method": "bfs"})
    image.background.name = "background"
    set_image(session, image, limits)
    session.name = _stem(name)
    return session


def _scale(shape: tuple[int, ...], limits: StudioLimits) -> float:
    return max(1.0, max(shape[0], shape[1]) / limits.preview_side)


# ----------------------------------------------------------------------------- boxes by clicks
def click(pick: Picker, x: float, y: float, width: int, height: int) -> Picker:
    """A click at shown pixel ``(x, y)``: the first click of a box marks a corner, the second closes it.

    A zero-area box (two clicks on the same row or column) is refused. Coordinates are
    clamped to the image.
    """
    px = min(max(round(x * pick.scale), 0), width)
    py = min(max(round(y * pick.scale), 0), height)
    if pick.corner is None:
        pick.corner = (px, py)
        return pick
    (cx, cy), pick.corner = pick.corner, None
    box = (min(cx, px), min(cy, py), max(cx, px), max(cy, py))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise LaminaError(f"the box {box} is empty: click two opposite corners of the object")
    pick.boxes.append(box)
    return pick


def parse_boxes(text: str, width: int, height: int, limits: StudioLimits = DEFAULT_LIMITS) -> list[Box]:
    """``"x0,y0,x1,y1; x0,y0,x1,y1"`` (front-most first) -> checked boxes; empty text -> no boxes."""
    parts = [p for p in re.split(r"[;\n]+", text or "") if p.strip()]
    if len(parts) > limits.max_objects:
        raise LaminaError(f"{len(parts)} boxes given; the studio peels at most {limits.max_objects} objects")
    return [check_box(parse_box(p.strip()), width, height) for p in parts]


def format_boxes(boxes: list[Box]) -> str:
    return "; ".join(",".join(str(v) for v in box) for box in boxes)


def set_photo_boxes(session: Session, text: str, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Boxes typed as text replace the clicked ones."""
    photo = _need_photo(session)
    session.photo_pick.boxes = parse_boxes(text, photo.shape[1], photo.shape[0], limits)
    session.photo_pick.corner = None
    return session


def click_photo(session: Session, x: float, y: float, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    photo = _need_photo(session)
    if session.photo_pick.corner is None and len(session.photo_pick.boxes) >= limits.max_objects:
        raise LaminaError(f"at most {limits.max_objects} boxes; clear them to start again")
    click(session.photo_pick, x, y, photo.shape[1], photo.shape[0])
    return session


def click_bfs(session: Session, x: float, y: float) -> Session:
    """A click on the BFS canvas; a new box replaces the previous one (BFS adds one object at a time)."""
    image = need_image(session)
    pick = session.bfs_pick
    if pick.corner is None:
        pick.boxes = []
    click(pick, x, y, image.width, image.height)
    return session


def clear_boxes(pick: Picker) -> Picker:
    pick.boxes, pick.corner = [], None
    return pick


def draw_boxes(rgb: np.ndarray, pick: Picker, limits: StudioLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The shown image: ``rgb`` ``[H, W, 3]`` fitted to the preview size with the boxes drawn, ``uint8``."""
    shown = Image.fromarray(to_uint8(rgb[:, :, :3]))
    if pick.scale > 1.0:
        size = (max(1, round(shown.width / pick.scale)), max(1, round(shown.height / pick.scale)))
        shown = shown.resize(size, Image.Resampling.BOX)
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 200))
    for i, box in enumerate(pick.boxes):
        x0, y0, x1, y1 = (v / pick.scale for v in box)
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
        draw.text((x0 + 2 * width, y0 + width), str(i + 1), fill=colour)
    if pick.corner is not None:
        cx, cy = (v / pick.scale for v in pick.corner)
        arm = 4 * width
        draw.line((cx - arm, cy, cx + arm, cy), fill=CORNER_COLOUR, width=width)
        draw.line((cx, cy - arm, cx, cy + arm), fill=CORNER_COLOUR, width=width)
    return np.asarray(shown)


def photo_view(session: Session, limits: StudioLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    return None if session.photo is None else draw_boxes(session.photo, session.photo_pick, limits)


def bfs_view(session: Session, limits: StudioLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    if session.image is None:
        return None
    session.bfs_pick.scale = _scale((session.image.height, session.image.width), limits)
    return draw_boxes(session.image.composite()[:, :, :3], session.bfs_pick, limits)


# ----------------------------------------------------------------------------- running the methods
def decompose(session: Session, backend: Backend, *, method: str = "layeringdiff", phrases: str = "",
              layers: int | None = None, report: Report = _no_report,
              limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Photo -> layers with the clicked/typed boxes (front-most first), else phrases, else automatically
    (the ``layers`` most salient objects)."""
    photo = _need_photo(session)
    boxes = list(session.photo_pick.boxes)
    words = [p.strip() for p in re.split(r"[;\n]+", phrases or "") if p.strip()]
    if len(words) > limits.max_objects:
        raise LaminaError(f"{len(words)} phrases given; the studio peels at most {limits.max_objects} objects")
    result = backend.decompose(photo, boxes=boxes or None, phrases=None if boxes else words or None,
                               layers=layers, method=method, report=report)
    result.metadata["studio_session"] = session.id
    set_image(session, result, limits)
    return session


def add_bfs_object(session: Session, backend: Backend, prompt: str, seed: int = 0, report: Report = _no_report,
                   limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Background -> layers: BFS draws ``prompt`` (with its shadow) in the box, as a new top layer."""
    image = need_image(session)
    if not session.bfs_pick.boxes:
        raise LaminaError("draw the box for the new object first: click two opposite corners on the image")
    if not (prompt or "").strip():
        raise LaminaError("type a caption for the new object, e.g. 'a red star with a shadow'")
    box = session.bfs_pick.boxes[-1]
    layer = backend.bfs_add(image, box, prompt.strip(), seed=seed, report=report)
    layer.name = prompt.strip()[:64]
    layer.metadata = {**layer.metadata, "caption": prompt.strip(), "box": list(box)}
    updated = snapshot(image)
    updated.layers.append(layer)
    updated.validate()
    set_image(session, updated, limits)
    clear_boxes(session.bfs_pick)
    return session


def furrygan_sample(session: Session, backend: Backend, count: int, truncation: float, seed: int,
                    report: Report = _no_report) -> Session:
    session.samples = backend.furrygan_sample(count, truncation=truncation, seed=seed, report=report)
    return session


def pick_sample(session: Session, index: int, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Put FurryGAN sample ``index`` into the layer panel."""
    if not 0 <= index < len(session.samples):
        raise LaminaError("no such sample: generate samples first, then click one")
    set_image(session, session.samples[index].copy(), limits)
    session.name = f"furrygan_{index}"
    return session


def furrygan_segment(session: Session, backend: Backend, path: str | Path | None, steps: int, seed: int = 0,
                     report: Report = _no_report, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    rgb = read_upload(path, limits)
    set_image(session, backend.furrygan_segment(rgb, steps=steps, seed=seed, report=report), limits)
    session.name = _stem(path)  # type: ignore[arg-type]
    return session


def text_to_layers(session: Session, backend: Backend, prompt: str, phrases: str, seed: int = 0,
                   report: Report = _no_report, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    if not (prompt or "").strip():
        raise LaminaError("type a prompt describing the picture")
    words = [p.strip() for p in re.split(r"[;\n]+", phrases or "") if p.strip()]
    set_image(session, backend.text_to_layers(prompt.strip(), words, seed=seed, report=report), limits)
    session.name = _stem(prompt.strip()[:40].replace(" ", "_"))
    return session


# ----------------------------------------------------------------------------- the layer panel
def snapshot(image: LayeredImage) -> LayeredImage:
    """A copy whose layer list and layer attributes can change without touching ``image``.

    Pixels are shared (no operation of the panel writes pixels in place), so an undo step
    costs a few objects, not a copy of every layer.
    """
    out = copy.copy(image)
    out.background = copy.copy(image.background)
    out.background.metadata = copy.deepcopy(image.background.metadata)
    out.layers = [copy.copy(layer) for layer in image.layers]
    for layer in out.layers:
        layer.metadata = copy.deepcopy(layer.metadata)
    out.metadata = copy.deepcopy(image.metadata)
    return out


def set_image(session: Session, image: LayeredImage, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Make ``image`` the current one, keeping the previous one for :func:`undo`."""
    session.history.append(session.image)
    del session.history[:-limits.history]
    session.image = image
    return session


def undo(session: Session) -> Session:
    if not session.history:
        raise LaminaError("nothing to undo")
    session.image = session.history.pop()
    clear_boxes(session.bfs_pick)
    return session


def _edit(session: Session, k: int, limits: StudioLimits) -> tuple[LayeredImage, Layer]:
    """A snapshot made current (undoable) and its layer ``k``."""
    image = need_image(session)
    layer = _layer(image, k)
    del layer
    edited = snapshot(image)
    set_image(session, edited, limits)
    return edited, edited.all_layers[k]


def toggle_visible(session: Session, k: int, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    _, layer = _edit(session, k, limits)
    layer.visible = not layer.visible
    return session


def set_visible(session: Session, k: int, visible: bool, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    _, layer = _edit(session, k, limits)
    layer.visible = bool(visible)
    return session


def rename(session: Session, k: int, name: str, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    name = (name or "").strip()
    if not name:
        raise LayerError("a layer name cannot be empty")
    if len(name) > 255:
        raise LayerError(f"a layer name has at most 255 characters, got {len(name)}")
    _, layer = _edit(session, k, limits)
    layer.name = name
    return session


def set_opacity(session: Session, k: int, opacity: float, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Opacity in ``[0, 1]``."""
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise LayerError(f"opacity must lie in [0, 1], got {opacity}")
    _, layer = _edit(session, k, limits)
    layer.opacity = opacity
    return session


def set_offset(session: Session, k: int, left: int, top: int, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    """Place layer ``k`` (not the background) with its top-left corner at canvas pixel ``(left, top)``."""
    if k == 0:
        raise LayerError("the background cannot be moved")
    image = need_image(session)
    bound = 4 * max(image.width, image.height)
    if abs(int(left)) > bound or abs(int(top)) > bound:
        raise LayerError(f"offset ({int(left)}, {int(top)}) is too far off the {image.width}x{image.height} canvas")
    _, layer = _edit(session, k, limits)
    layer.offset = (int(left), int(top))
    return session


def move_layer(session: Session, k: int, steps: int, limits: StudioLimits = DEFAULT_LIMITS) -> int:
    """Move foreground layer ``k`` up (``steps > 0``, towards the front) or down; returns its new ``k``."""
    image = need_image(session)
    _layer(image, k)
    if k == 0:
        raise LayerError("the background stays at the bottom")
    target = min(max(k + int(steps), 1), len(image.layers))
    if target == k:
        return k
    edited = snapshot(image)
    layer = edited.layers.pop(k - 1)
    edited.layers.insert(target - 1, layer)
    set_image(session, edited, limits)
    return target


def delete_layer(session: Session, k: int, limits: StudioLimits = DEFAULT_LIMITS) -> Session:
    image = need_image(session)
    _layer(image, k)
    if k == 0:
        raise LayerError("the background cannot be deleted (hide it instead)")
    edited = snapshot(image)
    del edited.layers[k - 1]
    set_image(session, edited, limits)
    return session


def _need_photo(session: Session) -> np.ndarray:
    if session.photo is None:
        raise LaminaError("upload a photo first")
    return session.photo


def need_image(session: Session) -> LayeredImage:
    if session.image is None:
        raise LaminaError("no layered image yet: make one first (Photo -> layers, Background -> layers, FurryGAN)")
    return session.image


def layer_index(session: Session, k: Any) -> int:
    """The layer list's value (an int, or a string from an HTTP client) as a checked ``k``."""
    image = need_image(session)
    if isinstance(k, str) and k.strip().lstrip("-").isdigit():
        k = int(k)
    _layer(image, k)
    return int(k)


def _layer(image: LayeredImage, k: Any) -> Layer:
    if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise LayerError("choose a layer in the layer list first")
    if not 0 <= int(k) < len(image.all_layers):
        raise LayerError(f"no layer {k}: this image has layers 0..{len(image.all_layers) - 1} (0 = background)")
    return image.all_layers[int(k)]


# ----------------------------------------------------------------------------- showing
def over_checkerboard(rgba: np.ndarray, max_side: int) -> np.ndarray:
    """Straight RGBA ``[H, W, 4]`` fitted within ``max_side``, over a checkerboard: ``uint8`` ``[h, w, 3]``."""
    height, width = rgba.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    fitted = rgba
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pil = Image.fromarray(to_uint8(rgba), "RGBA").resize(size, Image.Resampling.BOX)  # premultiplied resize
        fitted = np.asarray(pil, np.float32) / 255.0
    alpha = fitted[:, :, 3:]
    shown = fitted[:, :, :3] * alpha + checkerboard(fitted.shape[0], fitted.shape[1]) * (1.0 - alpha)
    return to_uint8(shown)


def composite_view(session: Session, limits: StudioLimits = DEFAULT_LIMITS) -> np.ndarray | None:
    """The composite of the visible layers over a checkerboard, fitted to the preview size."""
    if session.image is None:
        return None
    return over_checkerboard(session.image.composite(), limits.preview_side)


def layer_tiles(session: Session, limits: StudioLimits = DEFAULT_LIMITS) -> list[tuple[np.ndarray, str]]:
    """Each layer on the canvas over a checkerboard, top first as editors list them, with a caption."""
    if session.image is None:
        return []
    image = session.image
    tiles = []
    for k in range(len(image.all_layers) - 1, -1, -1):
        layer = image.all_layers[k]
        rgba = image.canvas(None if k == 0 else k - 1)
        hidden = "" if layer.visible else " (hidden)"
        tiles.append((over_checkerboard(rgba, limits.tile_side), f"{k}: {layer.name}{hidden}"))
    return tiles


def layer_choices(session: Session) -> list[tuple[str, int]]:
    """``(label, k)`` per layer, top first."""
    if session.image is None:
        return []
    image = session.image
    out = []
    for k in range(len(image.all_layers) - 1, -1, -1):
        layer = image.all_layers[k]
        out.append((f"{k}: {layer.name}" + ("" if layer.visible else " (hidden)"), k))
    return out


def layer_table(session: Session) -> str:
    """A Markdown table of the layers, top first: name, visible, opacity, offset, size."""
    if session.image is None:
        return "*No layered image yet.*"
    image = session.image
    rows = ["| # | layer | visible | opacity | offset | size |", "|---|---|---|---|---|---|"]
    for k in range(len(image.all_layers) - 1, -1, -1):
        layer = image.all_layers[k]
        name = layer.name.replace("|", "/")
        rows.append(f"| {k} | {name} | {'yes' if layer.visible else 'no'} | {layer.opacity:.2f} | "
                    f"{layer.offset[0]}, {layer.offset[1]} | {layer.width}x{layer.height} |")
    return "\n".join(rows)


def layer_fields(session: Session, k: int | None) -> dict[str, Any]:
    """What the panel's fields show for layer ``k``: name, visible, opacity, left, top."""
    if session.image is None or k is None or not 0 <= int(k) < len(session.image.all_layers):
        return {"name": "", "visible": True, "opacity": 1.0, "left": 0, "top": 0}
    layer = session.image.all_layers[int(k)]
    return {"name": layer.name, "visible": layer.visible, "opacity": layer.opacity,
            "left": layer.offset[0], "top": layer.offset[1]}


# ----------------------------------------------------------------------------- downloads
def prune_exports(out_dir: str | Path, max_age_s: float) -> int:
    """Remove the download folders of :func:`export` older than ``max_age_s``; returns how many."""
    import time

    now, removed = time.time(), 0
    for folder in Path(out_dir).iterdir() if Path(out_dir).is_dir() else ():
        if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def export(session: Session, fmt: str, out_dir: str | Path) -> Path:
    """Write the current image to a new file in ``out_dir``: PSD, ORA, zipped PNG stack or flattened PNG."""
    image = need_image(session)
    if fmt not in EXPORT_FORMATS:
        raise LaminaError(f"unknown download format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    folder = Path(out_dir) / uuid.uuid4().hex[:12]  # a fresh folder: names never collide between requests
    folder.mkdir(parents=True)
    suffix = EXPORT_FORMATS[fmt][1]
    path = folder / f"{session.name}{suffix}"
    if fmt in ("psd", "ora"):
        return save(image, path)
    if fmt == "png":
        return write_png(image.composite(), path)
    stack = save(image, folder / session.name)
    archive = shutil.make_archive(str(folder / session.name), "zip", root_dir=folder, base_dir=stack.name)
    shutil.rmtree(stack)
    return Path(archive)
