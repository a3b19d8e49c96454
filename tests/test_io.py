"""Layered formats (PSD, ORA, PNG stack): round trips, dispatch, safety, and independent readers."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage

import lamina.io.ora
import lamina.io.pngstack
import lamina.io.psd
from lamina import Layer, LayeredImage
from lamina.errors import InputFileError, LaminaError, LayerError, OutputExistsError
from lamina.io import (
    checkerboard,
    contact_sheet,
    file_format,
    layered_format,
    load,
    read_rgba,
    save,
    save_contact_sheet,
)
from lamina.io.common import layer_file_name
from lamina.io.preview import GAP, LABEL_HEIGHT, SEPARATOR_GREY

FORMATS = ["image.psd", "image.ora", "stack"]


def make_image(names: tuple[str, str] = ("fg/ü 1", "top")) -> LayeredImage:
    """Opaque background, a hidden half-opaque layer hanging off the canvas, a full-canvas top layer."""
    rng = np.random.default_rng(0)
    background = Layer(rng.random((30, 40, 3), dtype=np.float32), name="background", metadata={"kind": "bg"})
    middle = Layer(rng.random((10, 12, 4), dtype=np.float32), name=names[0], offset=(-3, 5), opacity=0.5,
                   visible=False, metadata={"caption": "a cat", "box": [1, 2, 3, 4]})
    top = Layer(rng.random((30, 40, 4), dtype=np.float32), name=names[1], offset=(0, 0), opacity=0.75)
    return LayeredImage(background, [middle, top], metadata={"method": "test", "seed": 3, "prompt": "ünïcode"})


def contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", FORMATS)
def test_round_trip(tmp_path, name):
    image = make_image()
    path = save(image, tmp_path / name)
    assert path == tmp_path / name and contents(tmp_path) == [name]
    back = load(path)
    assert back.size == image.size and back.metadata == image.metadata
    opacity_tolerance = 0.5 / 255 if name.endswith(".psd") else 0.0
    for want, got in zip(image.all_layers, back.all_layers, strict=True):
        for attribute in ("name", "offset", "visible", "metadata"):
            assert getattr(got, attribute) == getattr(want, attribute)
        assert got.opacity == pytest.approx(want.opacity, abs=opacity_tolerance)
        assert got.pixels.shape == want.pixels.shape
        assert np.abs(got.pixels - want.pixels).max() <= 0.5 / 255 + 1e-6
    assert np.abs(back.composite() - image.composite()).max() <= 2 / 255


@pytest.mark.parametrize("name", FORMATS)
def test_transparent_background_round_trip(tmp_path, name):
    image = LayeredImage(np.zeros((6, 5, 4), np.float32), [Layer(np.ones((2, 2, 4)), name="dot", offset=(1, 1))])
    back = load(save(image, tmp_path / name))
    assert back.background.alpha.max() == 0 and back.layers[0].offset == (1, 1)


def test_psd_written_by_an_editor(tmp_path):
    """Bottom layer smaller than the canvas, repeated names, a group, no lamina metadata."""
    psd = PSDImage.new("RGBA", (20, 10))
    small = Image.new("RGBA", (4, 3), (255, 0, 0, 255))
    psd.create_pixel_layer(small, name="Layer 1", left=5, top=2)
    group = psd.create_group(name="Group")
    group.visible = False
    group.create_pixel_layer(small, name="Layer 1", left=0, top=0)
    psd.save(tmp_path / "editor.psd")
    image = load(tmp_path / "editor.psd")
    assert [layer.name for layer in image.all_layers] == ["Layer 1", "Layer 1 (2)"]
    assert image.background.pixels.shape == (10, 20, 4) and image.background.offset == (0, 0)
    np.testing.assert_array_equal(image.background.pixels[2, 5], [1, 0, 0, 1])
    assert image.background.pixels[0, 0, 3] == 0 and image.background.alpha.sum() == 12
    assert not image.layers[0].visible  # inside a hidden group


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_psd_alpha_kept_as_mask_is_read_back(tmp_path, mode):
    """In RGB/CMYK documents psd-tools stores alpha as a layer mask; reading applies it."""
    psd = PSDImage.new(mode, (8, 6))
    pixels = np.zeros((4, 5, 4), np.uint8)
    pixels[1, 2] = [0, 255, 0, 128]
    psd.create_pixel_layer(Image.fromarray(pixels, "RGBA"), name="masked", left=3, top=2)
    psd.save(tmp_path / "x.psd")
    alpha = load(tmp_path / "x.psd").background.alpha
    assert alpha[3, 5] == pytest.approx(128 / 255) and alpha.sum() == pytest.approx(128 / 255)


def test_psd_without_layers_gives_its_merged_image(tmp_path):
    PSDImage.frompil(Image.new("RGB", (7, 5), (0, 255, 0))).save(tmp_path / "flat.psd")
    image = load(tmp_path / "flat.psd")
    assert len(image) == 0 and image.background.name == "background"
    np.testing.assert_array_equal(image.background.pixels[2, 3], [0, 1, 0, 1])


# --------------------------------------------------------------- format choice
def test_layered_format(tmp_path):
    (tmp_path / "folder.v2").mkdir()
    assert layered_format("a/b.PSD") == "psd" and layered_format("x.ora") == "ora"
    assert layered_format(tmp_path / "out") == "png-stack" and layered_format(tmp_path / "folder.v2") == "png-stack"
    with pytest.raises(LaminaError, match=r"unknown layered format '\.png'"):
        layered_format("x.png")
    with pytest.raises(LaminaError, match=r"x\.xcf: unknown format"):
        save(make_image(), tmp_path / "x.xcf")
    assert contents(tmp_path) == ["folder.v2"]
    assert file_format("x.TIFF") == "image" and file_format("a.jpg") == "image" and file_format("a.psd") == "psd"


def test_load_missing_path(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load(tmp_path / "missing.ora")


# ------------------------------------------------------------------- overwrite
@pytest.mark.parametrize("name", FORMATS)
def test_overwrite_refused_then_allowed(tmp_path, name):
    path = save(make_image(), tmp_path / name)
    other = make_image(names=("other", "newtop"))
    with pytest.raises(OutputExistsError, match=name):
        save(other, path)
    assert load(path).layers[1].name == "top"
    save(other, path, overwrite=True)
    assert load(path).layers[1].name == "newtop" and contents(tmp_path) == [name]
    if name == "stack":  # the old folder is replaced, not merged into
        assert not any("top" in f and "newtop" not in f for f in contents(path))


# ------------------------------------------------------------------- atomicity
def _fail(*args, **kwargs):
    raise RuntimeError("simulated crash mid-write")


@pytest.mark.parametrize(("name", "module", "attribute"), [
    ("image.psd", lamina.io.psd, "_write"),
    ("image.ora", lamina.io.ora, "encode_png"),
    ("stack", lamina.io.pngstack, "encode_png"),
])
def test_failure_mid_write_leaves_no_output(tmp_path, monkeypatch, name, module, attribute):
    original = getattr(module, attribute)
    calls = []

    def crash_after_a_partial_write(*args, **kwargs):
        calls.append(1)
        if module is lamina.io.psd:
            Path(args[1]).write_bytes(b"8BPS half a file")
            _fail()
        if len(calls) == 2:  # the first layer PNG has reached the disk
            _fail()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attribute, crash_after_a_partial_write)
    with pytest.raises(RuntimeError, match="simulated"):
        save(make_image(), tmp_path / name)
    assert contents(tmp_path) == []
    (tmp_path / "keep").mkdir()
    monkeypatch.setattr(module, attribute, original)
    old = save(make_image(), tmp_path / "keep" / name)
    monkeypatch.setattr(module, attribute, _fail)
    with pytest.raises(RuntimeError, match="simulated"):
        save(make_image(names=("x", "y")), old, overwrite=True)
    assert contents(tmp_path / "keep") == [name] and load(old).layers[1].name == "top"


def test_nan_layer_refused_before_writing(tmp_path):
    image = make_image()
    image.layers[0].planes[0, 0, 0] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        save(image, tmp_path / "x.ora")
    with pytest.raises(LayerError, match="LayeredImage"):
        save(np.zeros((4, 4, 3)), tmp_path / "y.ora")
    assert contents(tmp_path) == []


# ------------------------------------------------------------- bad layered input
def test_bad_layered_inputs(tmp_path):
    (tmp_path / "junk.psd").write_bytes(b"8BPS not really")
    (tmp_path / "junk.ora").write_text("not a zip")
    (tmp_path / "empty").mkdir()
    for path, problem in [("junk.psd", "not a readable PSD"), ("junk.ora", "not a valid zip"),
                          ("empty", "no layers.json")]:
        with pytest.raises(InputFileError, match=problem) as info:
            load(tmp_path / path)
        assert str(tmp_path / path) in str(info.value)


def test_ora_with_missing_layer_png(tmp_path):
    path = save(make_image(), tmp_path / "x.ora")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "broken.ora", "w") as dst:
        for info in src.infolist():
            if not info.filename.startswith("data/01"):
                dst.writestr(info, src.read(info))
    with pytest.raises(InputFileError, match=r"member 'data/01_fg_u_1\.png' is missing"):
        load(tmp_path / "broken.ora")


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda r: r["layers"][1].update(file="../escape.png"), "plain file name"),
    (lambda r: r["layers"][1].update(opacity=2), "opacity"),
    (lambda r: r.update(layers="nope"), "no 'layers' list"),
])
def test_png_stack_with_bad_layers_json(tmp_path, edit, problem):
    path = save(make_image(), tmp_path / "stack")
    record = json.loads((path / "layers.json").read_text())
    edit(record)
    (path / "layers.json").write_text(json.dumps(record))
    with pytest.raises(InputFileError, match=problem):
        load(path)


# ---------------------------------------------------------- independent readers
def _identify() -> str:
    """ImageMagick's identify; skipped locally when missing, a failure in CI."""
    exe = shutil.which("identify")
    if exe and b"ImageMagick" in subprocess.run([exe, "-version"], capture_output=True, check=False).stdout:
        return exe
    if os.environ.get("CI"):
        pytest.fail("ImageMagick (identify) is required in CI: apt-get install imagemagick")
    pytest.skip("ImageMagick is not installed")


def test_psd_layers_seen_by_imagemagick(tmp_path):
    image = make_image(names=("middle layer", "top"))
    path = save(image, tmp_path / "x.psd")
    out = subprocess.run([_identify(), "-format", r"%l|%w|%h|%X|%Y\n", str(path)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split("|")[1:3] == ["40", "30"]  # the merged image comes first
    assert out[1:] == ["background|40|30|+0|+0", "middle layer|12|10|-3|+5", "top|40|30|+0|+0"]


def test_psd_layers_seen_by_pillow(tmp_path):
    path = save(make_image(names=("middle layer", "top")), tmp_path / "x.psd")
    with Image.open(path) as psd:
        assert psd.size == (40, 30) and psd.mode == "RGBA"
        assert [(name, bbox) for name, _, bbox, _ in psd.layers] == [
            ("background", (0, 0, 40, 30)), ("middle layer", (-3, 5, 9, 15)), ("top", (0, 0, 40, 30))]


def test_ora_follows_the_spec(tmp_path):
    image = LayeredImage(np.ones((300, 520, 3), np.float32),
                         [Layer(np.ones((4, 4, 4)), name="a & <b>", offset=(7, 9), opacity=0.25, visible=False),
                          Layer(np.zeros((300, 520, 4)), name="top")])
    path = save(image, tmp_path / "x.ora")
    assert path.read_bytes()[30:54] == b"mimetypeimage/openraster"  # the magic number at offset 30 of the spec
    with zipfile.ZipFile(path) as archive:
        first = archive.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED and not first.extra
        assert archive.read("mimetype") == b"image/openraster"
        root = ET.fromstring(archive.read("stack.xml"))
        assert (root.tag, root.get("version"), root.get("w"), root.get("h")) == ("image", "0.0.3", "520", "300")
        stack = root.find("stack")
        layers = stack.findall("layer")
        assert [el.get("name") for el in layers] == ["top", "a & <b>", "background"]  # top first
        hidden = layers[1].attrib
        assert (hidden["x"], hidden["y"], float(hidden["opacity"]), hidden["visibility"]) == ("7", "9", 0.25, "hidden")
        assert layers[0].get("visibility") == "visible"
        names = set(archive.namelist())
        for el in layers:
            src = el.get("src")
            assert src.startswith("data/") and not src.startswith("/") and src in names
        assert {"mergedimage.png", "Thumbnails/thumbnail.png"} <= names
        with Image.open(archive.open("Thumbnails/thumbnail.png")) as thumb:
            assert max(thumb.size) <= 256 and thumb.size == (256, 148)
        with Image.open(archive.open("mergedimage.png")) as merged:
            assert merged.size == (520, 300)
            np.testing.assert_array_equal(np.asarray(merged), image.composite_uint8())


def test_png_stack_layout(tmp_path):
    image = make_image()
    path = save(image, tmp_path / "stack")
    record = json.loads((path / "layers.json").read_text(encoding="utf-8"))
    assert (record["width"], record["height"], record["metadata"]) == (40, 30, image.metadata)
    assert [entry["name"] for entry in record["layers"]] == ["background", "fg/ü 1", "top"]
    files = [entry["file"] for entry in record["layers"]]
    assert files == ["00_background.png", "01_fg_u_1.png", "02_top.png"]
    assert contents(path) == sorted([*files, "composite.png", "layers.json"])
    np.testing.assert_array_equal(np.asarray(Image.open(path / "composite.png")), image.composite_uint8())
    assert read_rgba(path / files[1]).shape == (10, 12, 4)


@pytest.mark.parametrize(("index", "name", "expected"), [
    (3, "../../etc/passwd", "03_etc_passwd.png"),
    (0, "Ünïcödé ñame", "00_Unicode_name.png"),
    (1, "猫", "01_layer.png"),
    (12, "a" * 100, f"12_{'a' * 40}.png"),
])
def test_layer_file_names_are_safe(index, name, expected):
    assert layer_file_name(index, name) == expected


# -------------------------------------------------------------------- previews
def test_checkerboard():
    board = checkerboard(5, 6, cell=2)
    assert board.shape == (5, 6, 3) and board.dtype == np.float32
    assert board[0, 0, 0] != board[0, 2, 0] and board[0, 0, 0] == board[2, 2, 0] == board[1, 1, 0]


def test_contact_sheet_layout(tmp_path):
    images = [make_image(), LayeredImage(np.zeros((8, 8, 3), np.float32))]
    sheet = contact_sheet(images, tile=32)
    columns = 3 + 1  # three layers and the composite in the widest row
    assert sheet.dtype == np.uint8
    assert sheet.shape == (GAP + 2 * (32 + LABEL_HEIGHT + GAP), GAP + columns * (32 + GAP), 3)
    assert (sheet[:GAP] == SEPARATOR_GREY).all() and (sheet[:, :GAP] == SEPARATOR_GREY).all()
    label = sheet[GAP + 32:GAP + 32 + LABEL_HEIGHT, GAP:GAP + 32]
    assert label.min() < 100 and label.max() == 255  # dark text on white
    assert contact_sheet(images[0]).shape[1] == GAP + columns * (128 + GAP)  # default tile: at least 128
    path = save_contact_sheet(images, tmp_path / "sheet.png", tile=32)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), sheet)
    with pytest.raises(OutputExistsError):
        save_contact_sheet(images, path)


# ------------------------------------------------------ blend modes, 16-bit, the object API
def blended_image() -> LayeredImage:
    rng = np.random.default_rng(5)
    background = Layer(rng.random((12, 16, 3), dtype=np.float32), name="background")
    shadow = Layer(rng.random((6, 8, 4), dtype=np.float32), name="shadow", offset=(2, 3), blend_mode="multiply")
    glow = Layer(rng.random((12, 16, 4), dtype=np.float32), name="glow", opacity=0.5, blend_mode="screen")
    return LayeredImage(background, [shadow, glow])


@pytest.mark.parametrize("name", FORMATS)
def test_blend_modes_round_trip(tmp_path, name):
    image = blended_image()
    back = load(save(image, tmp_path / name))
    assert [layer.blend_mode for layer in back.all_layers] == ["normal", "multiply", "screen"]
    np.testing.assert_allclose(back.composite(), image.composite(), atol=2 / 255)


def test_blend_modes_seen_by_other_readers(tmp_path):
    image = blended_image()
    psd = PSDImage.open(save(image, tmp_path / "b.psd"))
    assert [layer.blend_mode for layer in psd] == [b"norm", b"mul ", b"scrn"]  # BlendMode is a bytes enum
    # psd-tools' own compositor agrees with ours (its merged preview, written on save)
    theirs = np.asarray(psd.composite(force=True).convert("RGBA"), np.float32) / 255
    np.testing.assert_allclose(theirs, image.composite(), atol=3 / 255)
    stored = np.asarray(psd.topil().convert("RGBA"), np.float32) / 255  # the merged image we wrote
    np.testing.assert_allclose(stored, image.composite(), atol=0.5 / 255 + 1e-6)
    with zipfile.ZipFile(save(image, tmp_path / "b.ora")) as archive:
        ops = [e.get("composite-op") for e in ET.fromstring(archive.read("stack.xml")).iter("layer")]
    assert ops == ["svg:screen", "svg:multiply", "svg:src-over"]  # top first
    record = json.loads((save(image, tmp_path / "stack") / "layers.json").read_text())
    assert [entry["blend_mode"] for entry in record["layers"]] == ["normal", "multiply", "screen"]


def test_unknown_editor_blend_mode_reads_as_normal(tmp_path):
    path = save(blended_image(), tmp_path / "b.ora")
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["stack.xml"] = members["stack.xml"].replace(b"svg:screen", b"svg:overlay")
    with zipfile.ZipFile(tmp_path / "c.ora", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    glow = load(tmp_path / "c.ora").layers[-1]
    assert glow.blend_mode == "normal" and glow.metadata["ora_composite_op"] == "svg:overlay"


def deep_image() -> LayeredImage:
    rng = np.random.default_rng(6)
    background = (rng.random((9, 11, 3)) * 65535).astype(np.uint16)
    layer = Layer((rng.random((5, 4, 4)) * 65535).astype(np.uint16), name="fg", offset=(3, 2))
    return LayeredImage(background, [layer], bit_depth=16)


@pytest.mark.parametrize("name", FORMATS)
def test_16bit_round_trip(tmp_path, name):
    image = deep_image()
    back = load(save(image, tmp_path / name))
    assert back.bit_depth == 16
    for ours, theirs in zip(image.all_layers, back.all_layers, strict=True):
        np.testing.assert_allclose(theirs.pixels, ours.pixels, atol=0.5 / 65535 + 1e-7)  # not just 8 bits
    back8 = load(save(image, tmp_path / f"8_{name}", bit_depth=8))
    assert back8.bit_depth == 8
    assert np.abs(back8.layers[0].pixels - image.layers[0].pixels).max() > 1 / 65535


def test_16bit_files_opened_by_other_readers(tmp_path):
    image = deep_image()
    psd = PSDImage.open(save(image, tmp_path / "d.psd"))
    assert psd.depth == 16 and [layer.name for layer in psd] == ["background", "fg"]
    np.testing.assert_allclose(psd[1].numpy()[..., :4], image.layers[0].pixels, atol=1 / 65535)
    stack = save(image, tmp_path / "stack")
    png = Image.open(next(stack.glob("01_*.png")))
    assert png.tile[0].args in ("RGBA;16B", ("RGBA;16B",)) or ";16" in str(png.tile[0].args)
    import cv2

    raw = cv2.imread(str(next(stack.glob("01_*.png"))), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (5, 4, 4)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_plain_16bit_image_keeps_precision(tmp_path, suffix):
    import cv2

    rng = np.random.default_rng(7)
    pixels = (rng.random((6, 5, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"p{suffix}"), pixels[:, :, ::-1])
    image = load(tmp_path / f"p{suffix}")
    assert image.bit_depth == 16 and len(image) == 0 and image.background.name == "background"
    np.testing.assert_array_equal(np.round(image.background.rgb * 65535).astype(np.uint16), pixels)
    flat = image.save(tmp_path / f"out{suffix}")
    again = load(flat)
    assert again.bit_depth == 16
    np.testing.assert_allclose(again.background.rgb, image.background.rgb, atol=0.5 / 65535 + 1e-7)


def test_object_api_save_load_to_pil(tmp_path):
    import lamina

    image = make_image()
    for name in ("a.psd", "a.ora", "stack", "flat.png", "flat.jpg"):
        assert image.save(tmp_path / name) == tmp_path / name
    back = lamina.load(tmp_path / "a.psd")
    assert isinstance(back, LayeredImage) and [layer.name for layer in back.layers] == ["fg/ü 1", "top"]
    assert LayeredImage.from_file(tmp_path / "stack").metadata == image.metadata
    flat = lamina.load(tmp_path / "flat.png")
    assert len(flat) == 0 and flat.size == image.size
    np.testing.assert_array_equal(flat.to_pil(), image.to_pil())
    jpg = lamina.load(tmp_path / "flat.jpg")
    assert jpg.size == image.size  # random noise: JPEG keeps only the mean colour well
    np.testing.assert_allclose(jpg.background.rgb.mean((0, 1)), image.composite()[..., :3].mean((0, 1)), atol=0.02)
    with pytest.raises(OutputExistsError):
        image.save(tmp_path / "flat.png")
    image.save(tmp_path / "flat.png", overwrite=True)
    with pytest.raises(InputFileError, match="not an image file"):
        lamina.load(tmp_path / "stack" / "layers.json")


def test_output_folder_that_cannot_be_created_is_refused_first(tmp_path):
    from lamina.io.atomic import check_writable

    (tmp_path / "file").write_text("x")
    with pytest.raises(LaminaError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub" / "out.psd", overwrite=False)
    with pytest.raises(LaminaError, match="is a file, not a folder"):
        save(make_image(), tmp_path / "file" / "out.psd")
    assert check_writable(tmp_path / "new" / "deeper" / "out.psd", overwrite=False).name == "out.psd"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(LaminaError, match="no write permission"):
            check_writable(locked / "out.psd", overwrite=False)


def test_memory_budget_setting(monkeypatch, tmp_path):
    from lamina.io.budget import DEFAULT_MEMORY_BUDGET, memory_budget, parse_size

    assert parse_size("2G") == 2 << 30 and parse_size("512m") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("1.5GiB") == 3 << 29
    monkeypatch.delenv("LAMINA_MEMORY_BUDGET", raising=False)
    assert memory_budget() == DEFAULT_MEMORY_BUDGET and memory_budget(123) == 123
    monkeypatch.setenv("LAMINA_MEMORY_BUDGET", "lots")
    with pytest.raises(LaminaError, match="LAMINA_MEMORY_BUDGET='lots' is not a positive size"):
        memory_budget()
    monkeypatch.setenv("LAMINA_MEMORY_BUDGET", "20K")  # a 40x30 image and its canvas need 38 KB
    path = save(make_image(), tmp_path / "x.psd")
    for target in (path, save(make_image(), tmp_path / "x.ora"), save(make_image(), tmp_path / "stack")):
        with pytest.raises(InputFileError, match=r"over the memory budget of 20\.0 KB; set LAMINA_MEMORY_BUDGET"):
            load(target)
    assert len(load(path, memory_budget=1 << 20).layers) == 2


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_psd_merged_image_matches_psd_tools_encoder(bit_depth):
    """Our banded merged-image planes are byte-identical to psd-tools' own encoder of our composite
    (colour matted over white where alpha > 0, as Photoshop stores it)."""
    from psd_tools.api.numpy_io import encode_image_data

    rng = np.random.default_rng(8)
    background = rng.random((300, 30, 4), dtype=np.float32)  # > MERGED_BAND_ROWS rows: several bands
    background[:, :10, 3] = 0.0
    background[:, 10:20, 3] = 0.4
    image = LayeredImage(Layer(background, "background"),
                         [Layer(rng.random((8, 9, 4), dtype=np.float32), "x", offset=(12, 3), blend_mode="screen")])
    psd = PSDImage.new("RGBA", image.size, depth=bit_depth)
    composite = image.composite()
    reference = b"".join(encode_image_data(psd, composite[:, :, :3], composite[:, :, 3:]))
    buffer = io.BytesIO(b"head")
    buffer.seek(4)
    lamina.io.psd.write_merged(buffer, image, bit_depth)  # written a band at a time, each plane's rows in place
    assert buffer.getvalue()[4:] == reference and buffer.tell() == len(buffer.getvalue())


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_files_of_compact_layers_are_byte_identical_to_the_float_layers(tmp_path, bit_depth):
    """Compact (uint8 / uint16) layers are encoded from their integers (PSD: a plane at a time): the same files."""
    rng = np.random.default_rng(5)
    bg = rng.integers(0, 256, (300, 21, 3), dtype=np.uint8)  # > MERGED_BAND_ROWS rows
    fg = rng.integers(0, 65536, (9, 7, 4), dtype=np.uint16)
    compact = LayeredImage(bg, [Layer(fg, "x", offset=(3, 250), opacity=0.5, blend_mode="multiply")])
    floats = LayeredImage(bg * np.float32(1 / 255), [Layer(fg * np.float32(1 / 65535), "x", offset=(3, 250),
                                                           opacity=0.5, blend_mode="multiply")])
    assert compact.background.is_compact and compact.layers[0].is_compact
    save(compact, tmp_path / "a.psd", bit_depth=bit_depth)
    save(floats, tmp_path / "b.psd", bit_depth=bit_depth)
    for suffix in (".ora", ""):  # OpenRaster and PNG stack too
        save(compact, tmp_path / f"a{suffix}", bit_depth=bit_depth)
        save(floats, tmp_path / f"b{suffix}", bit_depth=bit_depth)
    assert compact.background.is_compact and compact.layers[0].is_compact  # writing did not convert them
    assert (tmp_path / "a.psd").read_bytes() == (tmp_path / "b.psd").read_bytes()
    assert (tmp_path / "a.ora").read_bytes() == (tmp_path / "b.ora").read_bytes()
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    back = load(tmp_path / "a.psd")
    np.testing.assert_array_equal(back.background.quantised(bit_depth), compact.background.quantised(bit_depth))
    merged = np.asarray(PSDImage.open(tmp_path / "a.psd").topil().convert("RGBA")) if bit_depth == 8 else None
    if merged is not None:  # the merged preview is our composite
        np.testing.assert_array_equal(merged, compact.composite_uint8())


def test_sampled_image_is_exactly_those_pixels_and_big_sheets_use_it():
    from lamina.io.preview import _thumbnails, sampled

    rng = np.random.default_rng(6)
    image = LayeredImage(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8),
                         [Layer(rng.random((9, 11, 4), dtype=np.float32), "a", offset=(-3, 5), opacity=0.7),
                          Layer(rng.integers(0, 256, (6, 8, 4), dtype=np.uint8), "b", offset=(20, -2),
                                blend_mode="screen"),
                          Layer(rng.random((2, 2, 4), dtype=np.float32), "c", offset=(29, 21))])
    for step in (1, 2, 3, 4, 7):
        small = sampled(image, step)
        phase = step // 2
        np.testing.assert_array_equal(small.composite(), image.composite()[phase::step, phase::step])
        for key in (None, "a", "b", "c"):
            np.testing.assert_array_equal(small.canvas(key), image.canvas(key)[phase::step, phase::step])
    assert image.background.is_compact and sampled(image, 3).background.is_compact  # views, no copies
    # A canvas of at least 8 x the tile is sampled first: a 2100 px canvas, tile 128 -> every 2100 // 512 = 4th pixel.
    wide = LayeredImage(np.full((40, 2100, 3), 200, np.uint8),
                        [Layer(np.ones((10, 500, 4), np.float32), "white", offset=(1000, 15))])
    labels = [label for label, _ in _thumbnails(wide, 128)]
    thumbs = [thumb for _, thumb in _thumbnails(wide, 128)]
    assert labels == ["background", "white", "composite"] and all(t.shape == (2, 128, 4) for t in thumbs)
    assert (thumbs[0][..., :3] == 200).all() and thumbs[1][:, 62:91, 3].min() > 0 and thumbs[1][:, :60, 3].max() == 0
