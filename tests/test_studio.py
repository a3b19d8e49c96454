"""lamina studio without a browser: the handlers, the backend adapter, the command, and the HTTP API."""

from __future__ import annotations

import json
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lamina import InputFileError, LaminaError, Layer, LayeredImage, LayerError
from lamina.cli import main
from lamina.data import generate_scene
from lamina.io import load
from lamina.studio import handlers as h
from lamina.studio.backend import Backend, BackendConfig, _resolve_device
from lamina.testing.fuzz import png_bytes

LIMITS = h.StudioLimits(max_pixels=1_000_000, preview_side=64, tile_side=32, history=5, max_objects=3)


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (8-bit grey) with a tiny, truncated pixel stream."""
    path.write_bytes(png_bytes(width, height, colour_type=0, idat=zlib.compress(b"\0" * 64)))
    return path


def save_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


class FakeBackend:
    """Stands in for the methods: records calls; "decomposes" into a square layer; "BFS" draws a square + shadow."""

    phrases_available = False
    auto_available = False
    bfs_available = True
    t2i_available = False

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def decompose(self, rgb, *, boxes=None, phrases=None, layers=None, method="layeringdiff", report=None):
        self.calls.append(("decompose", boxes, phrases, method))
        if not boxes:
            raise LaminaError("give the object")
        layers_ = []
        for i, (x0, y0, x1, y1) in enumerate(reversed(boxes)):
            rgba = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
            rgba[..., :3] = rgb[y0:y1, x0:x1]
            rgba[..., 3] = 1.0
            layers_.append(Layer(rgba, name=f"object_{len(boxes) - i}", offset=(x0, y0)))
        return LayeredImage(np.full_like(rgb, 0.5), layers_, metadata={"method": method})

    def bfs_add(self, image, box, prompt, seed=0, report=None):
        self.calls.append(("bfs", box, prompt))
        x0, y0, x1, y1 = box
        rgba = np.zeros((image.height, image.width, 4), np.float32)
        rgba[y1:y1 + 3, x0 + 2:x1 + 2, 3] = 0.5  # the shadow, below the object
        rgba[y0:y1, x0:x1] = (1.0, 0.0, 0.0, 1.0)
        return Layer(rgba, name="new")


@pytest.fixture
def scene():
    return generate_scene(1)


@pytest.fixture
def session_with_image() -> h.Session:
    session = h.new_session()
    bg = np.zeros((40, 60, 3), np.float32)
    red = np.zeros((10, 10, 4), np.float32)
    red[..., 0] = red[..., 3] = 1.0
    blue = np.zeros((10, 10, 4), np.float32)
    blue[..., 2] = blue[..., 3] = 1.0
    h.set_image(session, LayeredImage(bg, [Layer(red, "red", (5, 5)), Layer(blue, "blue", (10, 10))]), LIMITS)
    return session


# ----------------------------------------------------------------------------- uploads
def test_read_upload_refuses_text_named_png_and_huge_images_by_header(tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not an image")
    with pytest.raises(InputFileError, match=r"photo\.png: not an image file"):
        h.read_upload(fake, LIMITS)
    huge = png_header(tmp_path / "huge.png", 20_000, 20_000)
    with pytest.raises(InputFileError, match=r"huge\.png: refused as a decompression bomb \(.*400000000 pixels"):
        h.read_upload(huge, LIMITS)  # past Pillow's own limit: refused when the header is read
    big = png_header(tmp_path / "big.png", 2_000, 1_000)
    with pytest.raises(InputFileError, match=r"big\.png: 2000x1000 image has more than 1,000,000 pixels"):
        h.read_upload(big, LIMITS)  # past the studio's limit: refused from the header, nothing decoded
    with pytest.raises(InputFileError, match="no photo uploaded"):
        h.read_upload(None, LIMITS)
    session = h.new_session()
    with pytest.raises(InputFileError):
        h.load_photo(session, fake, LIMITS)
    assert session.photo is None  # a refused upload changes nothing


def test_load_photo_drops_alpha_and_names_downloads(tmp_path):
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "my photo!.png")
    session = h.load_photo(h.new_session(), tmp_path / "my photo!.png", LIMITS)
    assert session.photo.shape == (30, 50, 3) and session.photo.dtype == np.float32
    assert session.photo[0, 0, 1] == pytest.approx(200 / 255)
    assert session.name == "my_photo"
    assert session.photo_pick.scale == 1.0  # 50 px fits the 64 px preview


# ----------------------------------------------------------------------------- boxes
def test_two_clicks_make_a_box_in_full_size_pixels():
    pick = h.Picker(scale=2.0)
    h.click(pick, 30, 10, width=200, height=100)
    assert pick.corner == (60, 20) and pick.boxes == []
    h.click(pick, 5, 40, width=200, height=100)  # opposite corner, up-left of the first
    assert pick.boxes == [(10, 20, 60, 80)] and pick.corner is None
    h.click(pick, 90, 10, 200, 100)
    h.click(pick, 200, 70, 200, 100)  # (400, 140) in full size: clamped to the 200x100 image
    assert pick.boxes[-1] == (180, 20, 200, 100)


def test_empty_box_is_refused():
    pick = h.Picker()
    h.click(pick, 10, 10, 100, 100)
    with pytest.raises(LaminaError, match="empty"):
        h.click(pick, 10, 50, 100, 100)
    assert pick.boxes == [] and pick.corner is None


def test_typed_boxes_are_checked(scene):
    session = h.use_photo(h.new_session(), scene.composite, "scene", LIMITS)
    h.set_photo_boxes(session, "1,2,30,40; 5,5,20,20", LIMITS)
    assert session.photo_pick.boxes == [(1, 2, 30, 40), (5, 5, 20, 20)]
    with pytest.raises(LaminaError, match="256"):
        h.set_photo_boxes(session, "0,0,300,10", LIMITS)  # past the 256 px image
    with pytest.raises(LaminaError):
        h.set_photo_boxes(session, "1,2,3", LIMITS)
    with pytest.raises(LaminaError, match="at most 3"):
        h.set_photo_boxes(session, "; ".join(["0,0,10,10"] * 4), LIMITS)
    h.set_photo_boxes(session, "", LIMITS)
    assert session.photo_pick.boxes == []


def test_photo_view_is_fitted_and_shows_the_boxes(scene):
    session = h.use_photo(h.new_session(), scene.composite, "scene", LIMITS)  # 256 px -> shown at 64
    assert session.photo_pick.scale == 4.0
    plain = h.photo_view(session, LIMITS)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    h.click_photo(session, 4, 4, LIMITS)
    h.click_photo(session, 40, 40, LIMITS)
    assert session.photo_pick.boxes == [(16, 16, 160, 160)]
    boxed = h.photo_view(session, LIMITS)
    assert (boxed[4:40, 4] == h.BOX_COLOURS[0]).all()  # the box's left edge, in the first colour
    assert (boxed != plain).sum() > 0 and (boxed[20:30, 20:30] == plain[20:30, 20:30]).all()


# ----------------------------------------------------------------------------- methods
def test_decompose_passes_boxes_front_most_first_and_keeps_undo(scene):
    backend = FakeBackend()
    session = h.use_photo(h.new_session(), scene.composite, "scene", LIMITS)
    with pytest.raises(LaminaError, match="give the object"):
        h.decompose(session, backend, method="classical", limits=LIMITS)
    h.set_photo_boxes(session, "10,10,50,50; 60,60,100,120", LIMITS)
    h.decompose(session, backend, method="classical", limits=LIMITS)
    assert backend.calls[-1] == ("decompose", [(10, 10, 50, 50), (60, 60, 100, 120)], None, "classical")
    assert [layer.name for layer in session.image.layers] == ["object_2", "object_1"]  # back to front
    assert session.image.metadata["studio_session"] == session.id
    h.undo(session)
    assert session.image is None


def test_decompose_needs_a_photo():
    with pytest.raises(LaminaError, match="upload a photo first"):
        h.decompose(h.new_session(), FakeBackend(), limits=LIMITS)


def test_real_backend_classical_decomposition(scene):
    """The built-in classical path through the real adapter: the layers recompose the photo."""
    session = h.use_photo(h.new_session(), scene.composite, "scene", LIMITS)
    backend = Backend(BackendConfig(device="cpu"))
    session.photo_pick.boxes = [scene.box]
    reports = []
    h.decompose(session, backend, method="classical", report=lambda f, m: reports.append((f, m)), limits=LIMITS)
    image = session.image
    assert len(image.layers) == 1 and image.size == (256, 256)
    assert image.metadata["method"] == "classical"
    assert np.abs(image.composite()[..., :3] - scene.composite).max() < 2 / 255
    assert reports and all(0 <= f <= 1 for f, _ in reports)
    session.photo_pick.boxes = []  # nothing given: the automatic mode finds the object itself
    h.decompose(session, backend, method="classical", layers=1, limits=LIMITS)
    assert session.image.layers[0].metadata.get("auto") is True
    found = session.image.layers[0].bbox(threshold=0.5)
    x0, y0, x1, y1 = scene.box
    assert found[0] < x1 and x0 < found[2] and found[1] < y1 and y0 < found[3]  # it overlaps the true object
    with pytest.raises(LaminaError, match="unknown method"):
        h.decompose(session, backend, method="magic", limits=LIMITS)
    with pytest.raises(LaminaError, match="grounding models"):
        session.photo_pick.boxes = []
        h.decompose(session, backend, method="classical", phrases="the star", limits=LIMITS)


def test_bfs_stacks_back_to_front_and_undoes():
    backend = FakeBackend()
    session = h.use_background(h.new_session(), np.full((40, 60, 3), 0.25, np.float32), "bg", LIMITS)
    with pytest.raises(LaminaError, match="draw the box"):
        h.add_bfs_object(session, backend, "a star", limits=LIMITS)
    h.bfs_view(session, LIMITS)
    h.click_bfs(session, 5, 5)
    h.click_bfs(session, 15, 20)
    with pytest.raises(LaminaError, match="caption"):
        h.add_bfs_object(session, backend, "  ", limits=LIMITS)
    h.add_bfs_object(session, backend, "a red star with a shadow", limits=LIMITS)
    assert session.bfs_pick.boxes == []  # the next object needs its own box
    h.click_bfs(session, 10, 10)
    h.click_bfs(session, 30, 30)
    h.add_bfs_object(session, backend, "a second star", limits=LIMITS)
    image = session.image
    assert [layer.name for layer in image.layers] == ["a red star with a shadow", "a second star"]
    assert image.layers[0].metadata["box"] == [5, 5, 15, 20]
    assert backend.calls[-1] == ("bfs", (10, 10, 30, 30), "a second star")
    assert image.composite()[15, 25, 0] == 1.0 and image.composite()[0, 0, 0] == 0.25  # background untouched
    h.undo(session)
    assert [layer.name for layer in session.image.layers] == ["a red star with a shadow"]
    h.undo(session)
    assert session.image.layers == [] and session.image.background.name == "background"


def test_bfs_missing_is_a_clear_message(monkeypatch):
    backend = Backend(BackendConfig(device="cpu"))
    monkeypatch.setattr("lamina.studio.backend.bfs_available", lambda: False)
    image = LayeredImage(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(LaminaError, match="BFS is not installed"):
        backend.bfs_add(image, (0, 0, 4, 4), "a star")


def test_furrygan_samples_with_the_builtin_model():
    backend = Backend(BackendConfig(device="cpu"))
    session = h.new_session()
    h.furrygan_sample(session, backend, 2, truncation=0.7, seed=0)
    assert len(session.samples) == 2
    with pytest.raises(LaminaError, match="no such sample"):
        h.pick_sample(session, 5, LIMITS)
    h.pick_sample(session, 1, LIMITS)
    assert len(session.image.layers) == 1 and session.name == "furrygan_1"
    h.toggle_visible(session, 1, LIMITS)
    assert session.samples[1].layers[0].visible  # editing the panel's copy leaves the sample alone


@pytest.mark.slow
def test_furrygan_segmentation_with_the_builtin_model(scene, tmp_path):
    session = h.new_session()
    photo = save_png(tmp_path / "cat.png", scene.composite[:200, :240])
    h.furrygan_segment(session, Backend(BackendConfig(device="cpu")), photo, steps=3, limits=LIMITS)
    assert session.image.size == (240, 200) and len(session.image.layers) == 1 and session.name == "cat"


def test_text_to_layers_needs_a_model():
    session = h.new_session()
    with pytest.raises(LaminaError, match="--t2i"):
        h.text_to_layers(session, Backend(BackendConfig(device="cpu")), "a cat on a sofa", "the cat", limits=LIMITS)
    with pytest.raises(LaminaError, match="type a prompt"):
        h.text_to_layers(session, Backend(BackendConfig(device="cpu")), " ", "the cat", limits=LIMITS)


# ----------------------------------------------------------------------------- the layer panel
def test_layer_ops_change_a_copy_and_undo_restores_each_step(session_with_image):
    session = session_with_image
    first = session.image
    h.toggle_visible(session, 2, LIMITS)
    assert session.image.layers[1].visible is False and first.layers[1].visible is True
    h.rename(session, 1, "  crimson ", LIMITS)
    h.set_opacity(session, 1, 0.25, LIMITS)
    h.set_offset(session, 1, -3, 7, LIMITS)
    layer = session.image.layers[0]
    assert (layer.name, layer.opacity, layer.offset) == ("crimson", 0.25, (-3, 7))
    assert first.layers[0].name == "red" and first.layers[0].planes is layer.planes  # pixels shared, not copied
    for _ in range(4):
        h.undo(session)
    assert session.image is first
    with pytest.raises(LaminaError, match="nothing to undo"):
        h.undo(h.new_session())


def test_layer_ops_refuse_bad_values(session_with_image):
    session = session_with_image
    with pytest.raises(LayerError, match="empty"):
        h.rename(session, 1, "   ", LIMITS)
    with pytest.raises(LayerError, match=r"\[0, 1\]"):
        h.set_opacity(session, 1, 1.5, LIMITS)
    with pytest.raises(LayerError, match="no layer 9"):
        h.toggle_visible(session, 9, LIMITS)
    with pytest.raises(LayerError, match="choose a layer"):
        h.toggle_visible(session, None, LIMITS)
    with pytest.raises(LayerError, match="background cannot be moved"):
        h.set_offset(session, 0, 1, 1, LIMITS)
    with pytest.raises(LayerError, match="background cannot be deleted"):
        h.delete_layer(session, 0, LIMITS)
    with pytest.raises(LayerError, match="too far"):
        h.set_offset(session, 1, 10_000, 0, LIMITS)
    assert h.layer_index(session, "2") == 2
    assert len(session.history) == 1  # refused edits left no undo steps


def test_reorder_and_delete(session_with_image):
    session = session_with_image
    assert h.move_layer(session, 1, +1, LIMITS) == 2
    assert [layer.name for layer in session.image.layers] == ["blue", "red"]
    assert h.move_layer(session, 2, +1, LIMITS) == 2  # already on top: nothing changes
    assert h.move_layer(session, 2, -5, LIMITS) == 1
    assert [layer.name for layer in session.image.layers] == ["red", "blue"]
    h.delete_layer(session, 1, LIMITS)
    assert [layer.name for layer in session.image.layers] == ["blue"]


def test_composite_and_tiles_follow_the_edits(session_with_image):
    session = session_with_image
    shown = h.composite_view(session, LIMITS)
    assert shown.shape == (40, 60, 3) and tuple(shown[12, 12]) == (0, 0, 255)  # blue on top where they overlap
    h.toggle_visible(session, 2, LIMITS)
    assert tuple(h.composite_view(session, LIMITS)[12, 12]) == (255, 0, 0)  # now the red shows
    h.toggle_visible(session, 0, LIMITS)
    corner = h.composite_view(session, LIMITS)[0, 0]
    assert tuple(corner) in {(217, 217, 217), (153, 153, 153)}  # hidden background: the checkerboard
    tiles = h.layer_tiles(session, LIMITS)
    assert [caption for _, caption in tiles] == ["2: blue (hidden)", "1: red", "0: background (hidden)"]
    assert all(tile.shape == (21, 32, 3) for tile, _ in tiles)  # 40x60 fitted into 32 px
    assert h.layer_choices(session)[0] == ("2: blue (hidden)", 2)
    table = h.layer_table(session)
    assert "| 1 | red | yes | 1.00 | 5, 5 | 10x10 |" in table and "| 0 | background | no |" in table
    assert h.layer_fields(session, 1) == {"name": "red", "visible": True, "opacity": 1.0, "left": 5, "top": 5}


def test_history_is_bounded(session_with_image):
    session = session_with_image
    for _ in range(12):
        h.toggle_visible(session, 1, LIMITS)
    assert len(session.history) == LIMITS.history


# ----------------------------------------------------------------------------- downloads
@pytest.mark.parametrize("fmt", ["psd", "ora", "png-stack"])
def test_export_layered_formats_round_trip(session_with_image, tmp_path, fmt):
    session = session_with_image
    h.toggle_visible(session, 2, LIMITS)
    h.set_opacity(session, 1, 0.5, LIMITS)
    session.name = "scene"
    path = h.export(session, fmt, tmp_path)
    assert path.name == "scene" + h.EXPORT_FORMATS[fmt][1] and path.is_file()
    if fmt == "png-stack":
        with zipfile.ZipFile(path) as archive:
            assert "scene/layers.json" in archive.namelist()
            archive.extractall(tmp_path / "unzipped")
        path = tmp_path / "unzipped" / "scene"
    back = load(path)
    assert [layer.name for layer in back.layers] == ["red", "blue"]
    assert [layer.visible for layer in back.layers] == [True, False]
    assert back.layers[0].opacity == pytest.approx(0.5, abs=1 / 255)
    assert np.abs(back.composite() - session.image.composite()).max() < 2 / 255


def test_export_flattened_png_and_refusals(session_with_image, tmp_path):
    path = h.export(session_with_image, "png", tmp_path)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (40, 60, 4) and tuple(pixels[12, 12]) == (0, 0, 255, 255)
    second = h.export(session_with_image, "png", tmp_path)
    assert second != path and path.is_file()  # every download gets its own file
    with pytest.raises(LaminaError, match="unknown download format"):
        h.export(session_with_image, "gif", tmp_path)
    with pytest.raises(LaminaError, match="no layered image yet"):
        h.export(h.new_session(), "psd", tmp_path)


def test_old_downloads_are_pruned(session_with_image, tmp_path):
    import os

    old = h.export(session_with_image, "png", tmp_path)
    new = h.export(session_with_image, "png", tmp_path)
    os.utime(old.parent, (1, 1))  # as if made long ago
    assert h.prune_exports(tmp_path, max_age_s=60) == 1
    assert not old.exists() and new.exists()


def test_sessions_are_independent():
    a, b = h.new_session(), h.new_session()
    assert a.id != b.id and a.history is not b.history and a.photo_pick is not b.photo_pick
    h.use_photo(a, np.zeros((8, 8, 3), np.float32), "a", LIMITS)
    assert b.photo is None


# ----------------------------------------------------------------------------- backend and command
def test_device_resolution():
    assert _resolve_device("cpu") == "cpu"
    assert _resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(LaminaError, match="tpu"):
        _resolve_device("tpu")


def test_studio_command_is_listed_and_explains_a_missing_gradio(monkeypatch):
    runner = CliRunner()
    assert "studio" in runner.invoke(main, ["--help"]).output
    result = runner.invoke(main, ["studio", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "127.0.0.1" in result.output
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if gradio were not installed
    result = runner.invoke(main, ["studio"])
    assert result.exit_code == 1 and "pip install 'lamina[studio]'" in result.output
    result = runner.invoke(main, ["studio", "--grounding-model", "detector"])
    assert result.exit_code == 1


# ----------------------------------------------------------------------------- the HTTP API (gradio_client)
@pytest.fixture(scope="module")
def served():
    pytest.importorskip("gradio")
    from lamina.studio.app import build_app

    app = build_app(Backend(BackendConfig(device="cpu")), h.StudioLimits(max_pixels=1_000_000))
    app.queue()
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                           show_error=True)
    yield url
    app.close()


def test_http_api_keeps_each_client_in_its_own_session(served, tmp_path):
    from gradio_client import Client, handle_file

    scene = generate_scene(1)
    paths = [save_png(tmp_path / "a.png", scene.composite), save_png(tmp_path / "b.png", 1 - scene.composite)]
    clients = [Client(served, verbose=False) for _ in paths]
    box = ",".join(str(v) for v in scene.box)
    for client, path in zip(clients, paths, strict=True):
        client.predict(handle_file(str(path)), api_name="/load_photo")
        client.predict(box, api_name="/set_boxes")
    for client in clients:
        client.predict("classical", "", 1, api_name="/decompose")
    flat = [np.asarray(Image.open(c.predict("png", api_name="/export")[0]), np.float32)[..., :3] / 255
            for c in clients]
    assert np.abs(flat[0] - scene.composite).mean() < 0.01  # each got back its own photo's layers
    assert np.abs(flat[1] - (1 - scene.composite)).mean() < 0.01
    result = clients[0].predict(1, api_name="/toggle_layer")
    assert "| 1 | object_1 | no |" in result[2]
    psd = clients[0].predict("psd", api_name="/export")[0]
    assert [layer.visible for layer in load(psd).layers] == [False]


def test_http_api_bad_upload_is_a_message_and_the_app_keeps_working(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(AppError, match=r"fake\.png: not an image file"):
        client.predict(handle_file(str(fake)), api_name="/load_photo")
    with pytest.raises(AppError, match="huge.png: refused as a decompression bomb"):
        client.predict(handle_file(str(png_header(tmp_path / "huge.png", 20_000, 20_000))), api_name="/load_photo")
    good = save_png(tmp_path / "good.png", generate_scene(2).composite)
    view, _, message = client.predict(handle_file(str(good)), api_name="/load_photo")
    assert "256x256" in message and Path(view).is_file()


def test_http_api_one_call_decomposition(served, tmp_path):
    from gradio_client import Client, handle_file

    scene = generate_scene(1)
    path = save_png(tmp_path / "one.png", scene.composite)
    out = Client(served, verbose=False).predict(handle_file(str(path)), ",".join(map(str, scene.box)), "classical",
                                                "ora", api_name="/decompose_file")
    image = load(out)
    assert Path(out).suffix == ".ora" and len(image.layers) == 1
    assert json.dumps(image.metadata)  # the method's metadata survives
