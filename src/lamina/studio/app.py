"""The studio's page: gradio widgets wired to :mod:`.handlers`.

:func:`build_app` returns the ``gr.Blocks``; :func:`launch` serves it on 127.0.0.1. Each
browser tab gets its own :class:`~.handlers.Session` (a ``gr.State``), so two tabs never see
each other's images. Every callback goes through :func:`_guarded`: a
:class:`~lamina.LaminaError` becomes a message in the page (``gr.Error``), and any other
exception too (with the traceback in the server's log), so the page never breaks.

The named endpoints (``api_name``) are the studio's HTTP API, callable with ``gradio_client``
(see ``docs/studio-api.md``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports to the internet

import gradio as gr  # noqa: E402

from ..errors import LaminaError  # noqa: E402
from . import handlers as h  # noqa: E402
from .backend import DECOMPOSE_METHODS, Backend  # noqa: E402

log = logging.getLogger("lamina.studio")

#: Default of the callbacks' ``progress`` argument: gradio passes each call its own progress tracker.
PROGRESS = gr.Progress()

#: Height of the shown photo and composite, in CSS pixels (the image is fitted inside).
IMAGE_HEIGHT = 440

#: Concurrency group of the model calls: they share the CPU/GPU, so they queue together.
HEAVY = "lamina-model"

CSS = """
#lamina-photo img, #lamina-bfs-canvas img { cursor: crosshair; }
#lamina-status { min-height: 3em; }
"""

INTRO = ("**lamina studio**: make layered images and edit them. Make one in a tab (a photo taken apart, "
         "objects drawn onto a background, FurryGAN samples), then edit its layers below and download it.")


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a callback; turn every failure into a message shown in the page."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except LaminaError as exc:
            raise gr.Error(str(exc), duration=20, print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the page must keep working whatever happens
            log.exception("studio callback %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(exc).__name__}: {exc}); the server log has the details",
                           duration=20, print_exception=False) from None

    return run


def _reporter(progress: gr.Progress) -> Callable[[float, str], None]:
    def report(fraction: float, message: str) -> None:
        progress(fraction, desc=message)

    return report


def build_app(backend: Backend, limits: h.StudioLimits = h.DEFAULT_LIMITS, export_dir: str | Path | None = None,
              concurrency: int = 1) -> gr.Blocks:
    """The studio page.

    Args:
        backend: runs the methods (shared by all sessions).
        limits: upload size, preview sizes, undo depth.
        export_dir: where downloads are written (a fresh temporary folder when ``None``).
        concurrency: model calls run at once (others wait in the queue, with their place shown).
    """
    out_root = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="lamina-studio-"))
    out_root.mkdir(parents=True, exist_ok=True)

    def session_of(state: h.Session | None) -> h.Session:
        return state if isinstance(state, h.Session) else h.new_session()

    with gr.Blocks(title="lamina studio", delete_cache=(3600, 3600)) as app:
        state = gr.State(None, time_to_live=limits.session_ttl_s)
        gr.Markdown(INTRO)
        status = gr.Markdown("", elem_id="lamina-status")

        with gr.Tabs():
            # ------------------------------------------------------------ photo -> layers
            with gr.Tab("Photo → layers", id="photo"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        photo_file = gr.UploadButton("Upload a photo (PNG, JPEG, WebP, TIFF...)",
                                                     file_types=["image"], type="filepath", variant="primary",
                                                     elem_id="lamina-photo-file")
                        example_btn = gr.Button("Use an example photo", size="sm")
                        gr.Markdown("**The object**: click two opposite corners of a box around it on the "
                                    "photo (repeat for more objects, front-most first), or type boxes; with no "
                                    "box, the most salient object(s) are found automatically.")
                        boxes_text = gr.Textbox(label="Boxes x0,y0,x1,y1; ... (front-most first)",
                                                elem_id="lamina-boxes")
                        with gr.Row():
                            set_boxes_btn = gr.Button("Use typed boxes", size="sm")
                            clear_boxes_btn = gr.Button("Clear boxes", size="sm")
                        phrases = gr.Textbox(label="...or name the object(s): 'the cat; the dog'",
                                             visible=backend.phrases_available)
                        layer_count = gr.Slider(1, limits.max_objects, value=1, step=1,
                                                label="Objects to find (automatic mode, no box)",
                                                visible=backend.auto_available)
                        method = gr.Radio([("learned (LayeringDiff FBDD)", "layeringdiff"),
                                           ("classical (matting + inpainting)", "classical")],
                                          value=DECOMPOSE_METHODS[0], label="Method")
                        decompose_btn = gr.Button("Take apart into layers", variant="primary",
                                                  elem_id="lamina-decompose")
                    with gr.Column(scale=2):
                        photo_img = gr.Image(label="Photo: click two corners to draw a box", interactive=False,
                                             format="png", height=IMAGE_HEIGHT, elem_id="lamina-photo",
                                             buttons=["fullscreen"])

            # ------------------------------------------------------------ background -> layers
            with gr.Tab("Background → layers (BFS)", id="bfs"):
                if not backend.bfs_available:
                    gr.Markdown("**BFS is not installed in this lamina** (the `lamina.bfs` method is missing). "
                                "Update lamina to place captioned objects with their shadows onto a background.",
                                elem_id="lamina-bfs-missing")
                with gr.Row(visible=backend.bfs_available):
                    with gr.Column(scale=1, min_width=280):
                        bg_file = gr.UploadButton("Upload a background", file_types=["image"], type="filepath",
                                                  variant="primary", elem_id="lamina-bg-file")
                        bg_example_btn = gr.Button("Use an example background", size="sm")
                        bg_current_btn = gr.Button("Add onto the current layered image", size="sm")
                        caption = gr.Textbox(label="Caption of the new object",
                                             placeholder="a red star with a shadow", elem_id="lamina-caption")
                        bfs_seed = gr.Number(0, label="Seed", precision=0)
                        with gr.Row():
                            bfs_add_btn = gr.Button("Add object", variant="primary", elem_id="lamina-bfs-add")
                            bfs_undo_btn = gr.Button("Undo")
                    with gr.Column(scale=2):
                        bfs_img = gr.Image(label="Click two corners for the new object's box", interactive=False,
                                           format="png", height=IMAGE_HEIGHT, elem_id="lamina-bfs-canvas",
                                           buttons=["fullscreen"])

            # ------------------------------------------------------------ FurryGAN
            with gr.Tab("FurryGAN", id="furrygan"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        gr.Markdown(f"Checkpoint: `{backend.config.furrygan}`")
                        fg_count = gr.Slider(1, 16, value=8, step=1, label="Samples")
                        fg_psi = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Truncation ψ")
                        fg_seed = gr.Number(0, label="Seed", precision=0)
                        fg_sample_btn = gr.Button("Sample layered images", variant="primary")
                        fg_file = gr.UploadButton("Upload an image to segment (GAN inversion)",
                                                  file_types=["image"], type="filepath", elem_id="lamina-fg-file")
                        fg_steps = gr.Slider(20, 1000, value=200, step=10, label="Inversion steps")
                        fg_segment_btn = gr.Button("Segment")
                    with gr.Column(scale=2):
                        fg_gallery = gr.Gallery(label="Samples: click one to edit it below", columns=4,
                                                object_fit="contain", fit_columns=False, allow_preview=False,
                                                buttons=[], elem_id="lamina-samples")

            # ------------------------------------------------------------ text -> layers
            with gr.Tab("Text → layers", id="text"):
                if not backend.t2i_available:
                    gr.Markdown("Start the studio with `--t2i HUB_ID_OR_DIR` (a diffusers text-to-image model you "
                                "have) and `--grounding-model ...` to generate layered images from text.")
                with gr.Column(visible=backend.t2i_available):
                    t2i_prompt = gr.Textbox(label="Prompt", placeholder="a cat on a sofa")
                    t2i_phrases = gr.Textbox(label="Foreground object(s), front-most first",
                                             placeholder="the cat")
                    t2i_seed = gr.Number(0, label="Seed", precision=0)
                    t2i_btn = gr.Button("Generate layers", variant="primary")

        # ---------------------------------------------------------------- layer panel
        gr.Markdown("### Layers")
        with gr.Row():
            with gr.Column(scale=2):
                composite_img = gr.Image(label="Composite (visible layers)", interactive=False, format="png",
                                         height=IMAGE_HEIGHT,
                                         elem_id="lamina-composite", buttons=["download", "fullscreen"])
            with gr.Column(scale=1, min_width=300):
                layer_pick = gr.Radio([], label="Layer (top first)", elem_id="lamina-layer-pick")
                with gr.Row():
                    toggle_btn = gr.Button("Show / hide", size="sm", elem_id="lamina-toggle")
                    up_btn = gr.Button("Up", size="sm", elem_id="lamina-up")
                    down_btn = gr.Button("Down", size="sm", elem_id="lamina-down")
                    delete_btn = gr.Button("Delete", size="sm", variant="stop", elem_id="lamina-delete")
                with gr.Row():
                    name_box = gr.Textbox(label="Name", scale=3, elem_id="lamina-name")
                    rename_btn = gr.Button("Rename", size="sm", scale=1, elem_id="lamina-rename")
                opacity = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Opacity", elem_id="lamina-opacity")
                with gr.Row():
                    left = gr.Number(0, label="Left (px)", precision=0, elem_id="lamina-left")
                    top = gr.Number(0, label="Top (px)", precision=0, elem_id="lamina-top")
                    move_btn = gr.Button("Move", size="sm", elem_id="lamina-move")
                undo_btn = gr.Button("Undo", size="sm", elem_id="lamina-undo")
                table = gr.Markdown(h.layer_table(h.new_session()), elem_id="lamina-table")
        tiles = gr.Gallery(label="Each layer over a checkerboard (top first)", columns=6, height=260,
                           object_fit="contain", fit_columns=False, allow_preview=False, buttons=[],
                           elem_id="lamina-tiles")
        with gr.Row():
            fmt = gr.Radio([(label, key) for key, (label, _) in h.EXPORT_FORMATS.items()], value="psd",
                           label="Download as", elem_id="lamina-format")
            export_btn = gr.Button("Prepare download", variant="primary", elem_id="lamina-export")
            download = gr.File(label="Download", interactive=False, elem_id="lamina-download")

        # ---------------------------------------------------------------- one-call API (no page widgets)
        with gr.Row(visible=False):
            api_file = gr.File(type="filepath")
            api_boxes = gr.Textbox()
            api_method = gr.Textbox(value=DECOMPOSE_METHODS[0])
            api_fmt = gr.Textbox(value="psd")
            api_out = gr.File()
            api_btn = gr.Button()

        panel = [state, composite_img, tiles, table, layer_pick, name_box, opacity, left, top]

        def wire(trigger: Callable[..., Any], fn: Callable[..., Any], inputs: list[Any], outputs: list[Any],
                 **options: Any) -> None:
            """Register a callback; its progress (and an error's badge) shows on the status line only, so a
            failed call never covers the photo or the composite."""
            trigger(fn, inputs, outputs, show_progress_on=[status], **options)

        def show(session: h.Session, k: int | None = None, message: str = "") -> tuple[Any, ...]:
            """Values of the panel's widgets (and the status line) for ``session``, layer ``k`` selected."""
            choices = h.layer_choices(session)
            if session.image is not None and (k is None or not 0 <= k < len(session.image.all_layers)):
                k = len(session.image.all_layers) - 1  # the top layer
            fields = h.layer_fields(session, k)
            return (session, h.composite_view(session, limits), h.layer_tiles(session, limits),
                    h.layer_table(session), gr.Radio(choices=choices, value=k), fields["name"], fields["opacity"],
                    fields["left"], fields["top"], message)

        # ---------------------------------------------------------------- photo callbacks
        @_guarded
        def on_photo(state: Any, path: str | None) -> tuple[Any, ...]:
            session = session_of(state)
            if path is None:
                return session, None, "", ""
            h.load_photo(session, path, limits)
            height, width = session.photo.shape[:2]
            return session, h.photo_view(session, limits), "", f"Photo {width}x{height}: now click two corners."

        wire(photo_file.upload, on_photo, [state, photo_file], [state, photo_img, boxes_text, status],
                          api_name="load_photo")

        @_guarded
        def on_example(state: Any) -> tuple[Any, ...]:
            from ..data import generate_scene

            session = session_of(state)
            scene = generate_scene(7)
            h.use_photo(session, scene.composite, "example", limits)
            session.photo_pick.boxes = [tuple(int(v) for v in scene.box)]
            return (session, h.photo_view(session, limits), h.format_boxes(session.photo_pick.boxes),
                    "Example photo with its object's box: press 'Take apart into layers'.")

        wire(example_btn.click, on_example, [state], [state, photo_img, boxes_text, status], api_name="example_photo")

        @_guarded
        def on_photo_click(state: Any, evt: gr.SelectData) -> tuple[Any, ...]:
            session = session_of(state)
            x, y = evt.index
            h.click_photo(session, x, y, limits)
            pick = session.photo_pick
            message = ("Now click the opposite corner." if pick.corner is not None else
                       f"Box {len(pick.boxes)} set; add another, or press 'Take apart into layers'.")
            return session, h.photo_view(session, limits), h.format_boxes(pick.boxes), message

        wire(photo_img.select, on_photo_click, [state], [state, photo_img, boxes_text, status],
                         api_visibility="private")

        @_guarded
        def on_set_boxes(state: Any, text: str) -> tuple[Any, ...]:
            session = session_of(state)
            h.set_photo_boxes(session, text, limits)
            return (session, h.photo_view(session, limits), h.format_boxes(session.photo_pick.boxes),
                    f"{len(session.photo_pick.boxes)} box(es) set.")

        wire(set_boxes_btn.click, on_set_boxes, [state, boxes_text], [state, photo_img, boxes_text, status],
                            api_name="set_boxes")
        wire(boxes_text.submit, on_set_boxes, [state, boxes_text], [state, photo_img, boxes_text, status],
                          api_visibility="private")

        @_guarded
        def on_clear_boxes(state: Any) -> tuple[Any, ...]:
            session = session_of(state)
            h.clear_boxes(session.photo_pick)
            return session, h.photo_view(session, limits), "", "Boxes cleared."

        wire(clear_boxes_btn.click, on_clear_boxes, [state], [state, photo_img, boxes_text, status],
                              api_name="clear_boxes")

        @_guarded
        def on_decompose(state: Any, method_name: str, words: str, count: float,
                         progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
            session = session_of(state)
            start = time.perf_counter()
            h.decompose(session, backend, method=method_name, phrases=words, layers=int(count),
                        report=_reporter(progress), limits=limits)
            image = session.image
            psnr = image.metadata.get("recomposition_psnr")
            note = f"; recomposition PSNR {psnr:.1f} dB" if isinstance(psnr, (int, float)) else ""
            return show(session, message=f"Done in {time.perf_counter() - start:.1f} s: {len(image.layers)} "
                                         f"object layer(s) over the completed background{note}.")

        wire(decompose_btn.click, on_decompose, [state, method, phrases, layer_count], [*panel, status],
                            api_name="decompose", concurrency_id=HEAVY, concurrency_limit=concurrency)

        # ---------------------------------------------------------------- BFS callbacks
        def bfs_outputs(session: h.Session, message: str) -> tuple[Any, ...]:
            return (*show(session, message=message), h.bfs_view(session, limits))

        @_guarded
        def on_background(state: Any, path: str | None) -> tuple[Any, ...]:
            session = session_of(state)
            if path is None:
                return bfs_outputs(session, "")
            h.load_background(session, path, limits)
            return bfs_outputs(session, "Background set: click two corners for the first object's box.")

        wire(bg_file.upload, on_background, [state, bg_file], [*panel, status, bfs_img], api_name="bfs_background")

        @_guarded
        def on_bg_example(state: Any) -> tuple[Any, ...]:
            from ..data import generate_scene

            session = session_of(state)
            h.use_background(session, generate_scene(3).background, "example_background", limits)
            return bfs_outputs(session, "Example background: click two corners for the first object's box.")

        wire(bg_example_btn.click, on_bg_example, [state], [*panel, status, bfs_img],
             api_name="bfs_example_background")

        @_guarded
        def on_bg_current(state: Any) -> tuple[Any, ...]:
            session = session_of(state)
            h.clear_boxes(session.bfs_pick)
            return bfs_outputs(session, "Click two corners for the new object's box.")

        wire(bg_current_btn.click, on_bg_current, [state], [*panel, status, bfs_img], api_visibility="private")

        @_guarded
        def on_bfs_click(state: Any, evt: gr.SelectData) -> tuple[Any, ...]:
            session = session_of(state)
            x, y = evt.index
            h.click_bfs(session, x, y)
            message = ("Now click the opposite corner." if session.bfs_pick.corner is not None else
                       f"Box {h.format_boxes(session.bfs_pick.boxes)}: type a caption and press 'Add object'.")
            return session, h.bfs_view(session, limits), message

        wire(bfs_img.select, on_bfs_click, [state], [state, bfs_img, status], api_visibility="private")

        @_guarded
        def on_bfs_box(state: Any, text: str) -> tuple[Any, ...]:
            session = session_of(state)
            image = h.need_image(session)
            boxes = h.parse_boxes(text, image.width, image.height, limits)
            if len(boxes) != 1:
                raise LaminaError("give exactly one box x0,y0,x1,y1 for the new object")
            session.bfs_pick.boxes, session.bfs_pick.corner = boxes, None
            return session, h.bfs_view(session, limits), f"Box {h.format_boxes(boxes)} set."

        with gr.Row(visible=False):
            bfs_box_text = gr.Textbox()
            bfs_box_btn = gr.Button()
        wire(bfs_box_btn.click, on_bfs_box, [state, bfs_box_text], [state, bfs_img, status], api_name="bfs_box")

        @_guarded
        def on_bfs_add(state: Any, text: str, seed: float, progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
            session = session_of(state)
            start = time.perf_counter()
            h.add_bfs_object(session, backend, text, seed=int(seed or 0), report=_reporter(progress), limits=limits)
            return bfs_outputs(session, f"Added '{text.strip()}' in {time.perf_counter() - start:.1f} s "
                                        f"({len(session.image.layers)} object layer(s)).")

        wire(bfs_add_btn.click, on_bfs_add, [state, caption, bfs_seed], [*panel, status, bfs_img], api_name="bfs_add",
                          concurrency_id=HEAVY, concurrency_limit=concurrency)

        @_guarded
        def on_bfs_undo(state: Any) -> tuple[Any, ...]:
            session = session_of(state)
            h.undo(session)
            return bfs_outputs(session, "Undone.")

        wire(bfs_undo_btn.click, on_bfs_undo, [state], [*panel, status, bfs_img], api_visibility="private")

        # ---------------------------------------------------------------- FurryGAN callbacks
        @_guarded
        def on_fg_sample(state: Any, count: float, psi: float, seed: float,
                         progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
            session = session_of(state)
            h.furrygan_sample(session, backend, int(count), float(psi), int(seed or 0), report=_reporter(progress))
            gallery = [(h.over_checkerboard(s.composite(), limits.tile_side), f"sample {i}")
                       for i, s in enumerate(session.samples)]
            return session, gallery, f"{len(session.samples)} samples: click one to edit its layers."

        wire(fg_sample_btn.click, on_fg_sample, [state, fg_count, fg_psi, fg_seed], [state, fg_gallery, status],
                            api_name="furrygan_sample", concurrency_id=HEAVY, concurrency_limit=concurrency)

        @_guarded
        def on_fg_pick(state: Any, evt: gr.SelectData) -> tuple[Any, ...]:
            session = session_of(state)
            h.pick_sample(session, int(evt.index), limits)
            return show(session, message=f"Sample {evt.index} is in the layer panel.")

        wire(fg_gallery.select, on_fg_pick, [state], [*panel, status], api_visibility="private")

        @_guarded
        def on_fg_segment(state: Any, path: str | None, steps: float,
                          progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
            session = session_of(state)
            start = time.perf_counter()
            h.furrygan_segment(session, backend, path, int(steps), report=_reporter(progress), limits=limits)
            return show(session, message=f"Segmented in {time.perf_counter() - start:.1f} s.")

        wire(fg_segment_btn.click, on_fg_segment, [state, fg_file, fg_steps], [*panel, status],
                             api_name="furrygan_segment", concurrency_id=HEAVY, concurrency_limit=concurrency)

        # ---------------------------------------------------------------- text -> layers
        @_guarded
        def on_t2i(state: Any, prompt: str, words: str, seed: float,
                   progress: gr.Progress = PROGRESS) -> tuple[Any, ...]:
            session = session_of(state)
            h.text_to_layers(session, backend, prompt, words, seed=int(seed or 0), report=_reporter(progress),
                             limits=limits)
            return show(session, message="Generated.")

        wire(t2i_btn.click, on_t2i, [state, t2i_prompt, t2i_phrases, t2i_seed], [*panel, status],
                      api_name="text_to_layers", concurrency_id=HEAVY, concurrency_limit=concurrency)

        # ---------------------------------------------------------------- layer panel callbacks
        @_guarded
        def on_pick(state: Any, k: int | None) -> tuple[Any, ...]:
            session = session_of(state)
            fields = h.layer_fields(session, k)
            return fields["name"], fields["opacity"], fields["left"], fields["top"]

        wire(layer_pick.input, on_pick, [state, layer_pick], [name_box, opacity, left, top], api_visibility="private")

        def panel_op(op: Callable[..., Any], message: str, api_name: str) -> Callable[..., Any]:
            @_guarded
            def run(state: Any, k: int | None, *values: Any) -> tuple[Any, ...]:
                session = session_of(state)
                new_k = op(session, k, *values)
                return show(session, new_k if isinstance(new_k, int) else k, message)

            run.__name__ = api_name
            return run

        def _toggle(session: h.Session, k: Any) -> None:
            h.toggle_visible(session, h.layer_index(session, k), limits)

        def _rename(session: h.Session, k: Any, name: str) -> None:
            h.rename(session, h.layer_index(session, k), name, limits)

        def _opacity(session: h.Session, k: Any, value: float) -> None:
            h.set_opacity(session, h.layer_index(session, k), value, limits)

        def _move(session: h.Session, k: Any, x: float, y: float) -> None:
            h.set_offset(session, h.layer_index(session, k), int(x or 0), int(y or 0), limits)

        def _up(session: h.Session, k: Any) -> int:
            return h.move_layer(session, h.layer_index(session, k), +1, limits)

        def _down(session: h.Session, k: Any) -> int:
            return h.move_layer(session, h.layer_index(session, k), -1, limits)

        def _delete(session: h.Session, k: Any) -> None:
            h.delete_layer(session, h.layer_index(session, k), limits)

        def _undo(session: h.Session, k: Any) -> None:
            h.undo(session)

        outputs = [*panel, status]
        wire(toggle_btn.click, panel_op(_toggle, "Visibility changed.", "toggle_layer"), [state, layer_pick], outputs,
                         api_name="toggle_layer")
        wire(rename_btn.click, panel_op(_rename, "Renamed.", "rename_layer"), [state, layer_pick, name_box], outputs,
                         api_name="rename_layer")
        wire(name_box.submit, panel_op(_rename, "Renamed.", "rename_layer"), [state, layer_pick, name_box], outputs,
                        api_visibility="private")
        wire(opacity.release, panel_op(_opacity, "Opacity changed.", "set_opacity"), [state, layer_pick, opacity],
                        outputs, api_name="set_opacity")
        wire(move_btn.click, panel_op(_move, "Moved.", "move_layer"), [state, layer_pick, left, top], outputs,
                       api_name="move_layer")
        wire(up_btn.click, panel_op(_up, "Moved up.", "layer_up"), [state, layer_pick], outputs, api_name="layer_up")
        wire(down_btn.click, panel_op(_down, "Moved down.", "layer_down"), [state, layer_pick], outputs,
                       api_name="layer_down")
        wire(delete_btn.click, panel_op(_delete, "Deleted.", "delete_layer"), [state, layer_pick], outputs,
                         api_name="delete_layer")
        wire(undo_btn.click, panel_op(_undo, "Undone.", "undo"), [state, layer_pick], outputs, api_name="undo")

        @_guarded
        def on_export(state: Any, key: str) -> tuple[Any, ...]:
            session = session_of(state)
            h.prune_exports(out_root, limits.download_ttl_s)
            path = h.export(session, key, out_root)
            return session, str(path), f"{h.EXPORT_FORMATS[key][0]} ready: {path.name} (click it to download)."

        wire(export_btn.click, on_export, [state, fmt], [state, download, status], api_name="export")

        @_guarded
        def on_api_decompose(path: str | None, box_text: str, method_name: str, key: str) -> str:
            session = h.new_session()
            h.load_photo(session, path, limits)
            h.set_photo_boxes(session, box_text, limits)
            h.decompose(session, backend, method=method_name or DECOMPOSE_METHODS[0], limits=limits)
            return str(h.export(session, key or "psd", out_root))

        api_btn.click(on_api_decompose, [api_file, api_boxes, api_method, api_fmt], [api_out],
                      api_name="decompose_file", concurrency_id=HEAVY, concurrency_limit=concurrency)

    app.lamina_export_dir = out_root  # type: ignore[attr-defined]
    return app


def launch(backend: Backend, *, host: str = "127.0.0.1", port: int | None = None,
           limits: h.StudioLimits = h.DEFAULT_LIMITS, concurrency: int = 1, max_file_size: str = "200mb",
           open_browser: bool = False) -> None:
    """Serve the studio until interrupted; downloads are written to a temporary folder removed at exit."""
    export_dir = Path(tempfile.mkdtemp(prefix="lamina-studio-"))
    try:
        app = build_app(backend, limits, export_dir, concurrency=concurrency)
        app.queue(max_size=64)
        app.launch(server_name=host, server_port=port, inbrowser=open_browser, show_error=True,
                   max_file_size=max_file_size, allowed_paths=[str(export_dir)], css=CSS,
                   state_session_capacity=limits.sessions,
                   theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                           font_mono=["ui-monospace", "monospace"]),
                   footer_links=["api"], ssr_mode=False)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
