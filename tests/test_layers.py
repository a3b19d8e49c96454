"""The layered-image type and the over operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lamina import Layer, LayeredImage, LayerError, composite_stack, over, premultiply, unpremultiply
from lamina.layers import parse_box


def rgba(h: int, w: int, color: tuple[float, float, float, float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.float32), (h, w, 4)).copy()


def random_rgba(rng: np.random.Generator, h: int, w: int, opaque: bool = False) -> np.ndarray:
    out = rng.random((h, w, 4), dtype=np.float32)
    if opaque:
        out[..., 3] = 1.0
    return out


# ---------------------------------------------------------------- over operator
def test_over_by_hand() -> None:
    # src (1, 0, 0, a=0.5) over dst (0, 0, 1, a=0.5):
    # a_o = 0.5 + 0.5 * 0.5 = 0.75; C_o = (1 * 0.5 + (0, 0, 1) * 0.5 * 0.5) / 0.75 = (2/3, 0, 1/3).
    src = torch.tensor([1.0, 0.0, 0.0, 0.5]).view(4, 1, 1)
    dst = torch.tensor([0.0, 0.0, 1.0, 0.5]).view(4, 1, 1)
    out = over(src, dst).flatten()
    torch.testing.assert_close(out, torch.tensor([2 / 3, 0.0, 1 / 3, 0.75]))


def test_over_identities() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(random_rgba(rng, 5, 6)).permute(2, 0, 1)
    clear = torch.zeros_like(x)
    opaque = x.clone()
    opaque[3] = 1.0
    torch.testing.assert_close(over(x, clear), x)  # over transparency is the identity
    torch.testing.assert_close(over(clear, x), x)
    torch.testing.assert_close(over(opaque, x), opaque)  # an opaque source hides the destination


def test_premultiply_roundtrip_and_transparent_colour() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(random_rgba(rng, 4, 4)).permute(2, 0, 1)
    x[3, 0, 0] = 0.0
    back = unpremultiply(premultiply(x))
    assert back[:3, 0, 0].abs().sum() == 0  # colour under alpha 0 is defined as 0
    torch.testing.assert_close(back[:, 1:, :], x[:, 1:, :])


def test_over_is_differentiable() -> None:
    src = torch.rand(2, 4, 3, 3, requires_grad=True)
    dst = torch.rand(2, 4, 3, 3)
    over(src, dst).sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()


def test_composite_stack_matches_pairwise_over_and_channel_last() -> None:
    rng = np.random.default_rng(2)
    layers = torch.from_numpy(np.stack([random_rgba(rng, 3, 4) for _ in range(3)]))  # [L, H, W, 4]
    expected = over(layers[2], over(layers[1], layers[0], dim=-1), dim=-1)
    torch.testing.assert_close(composite_stack(layers, dim=-1), expected)


# ------------------------------------------------------------- LayeredImage
def test_composite_by_hand_with_offset_and_opacity() -> None:
    bg = rgba(4, 5, (1.0, 0.0, 0.0, 1.0))
    fg = rgba(2, 2, (0.0, 1.0, 0.0, 0.5))
    image = LayeredImage(bg, [Layer(fg, name="green", offset=(3, 3), opacity=0.5)])
    out = image.composite()
    assert out.shape == (4, 5, 4) and out.dtype == np.float32
    # effective alpha 0.25: (1 - 0.25) * red + 0.25 * green; only the in-canvas 1x2 part lands.
    np.testing.assert_allclose(out[3, 3], [0.75, 0.25, 0.0, 1.0])
    np.testing.assert_allclose(out[3, 4], [0.75, 0.25, 0.0, 1.0])
    np.testing.assert_allclose(out[2, 3], [1.0, 0.0, 0.0, 1.0])


def test_composite_transparent_background_uses_general_over() -> None:
    rng = np.random.default_rng(3)
    bg, a, b = (random_rgba(rng, 6, 7) for _ in range(3))
    image = LayeredImage(bg, [Layer(a, name="a"), Layer(b, name="b")])
    stack = torch.from_numpy(np.stack([bg, a, b]))
    np.testing.assert_allclose(image.composite(), composite_stack(stack, dim=-1).numpy(), atol=1e-6)


def test_opaque_fast_path_equals_general_path() -> None:
    rng = np.random.default_rng(4)
    bg = random_rgba(rng, 8, 9, opaque=True)
    layers = [Layer(random_rgba(rng, 5, 4), name=f"l{i}", offset=(i - 1, 2 * i - 2), opacity=0.7) for i in range(4)]
    fast = LayeredImage(bg, layers).composite()
    bg[0, 0, 3] = 1 - 1e-6  # one alpha below 1 forces the general premultiplied path
    general = LayeredImage(bg, layers).composite()
    np.testing.assert_allclose(fast, general, atol=1e-5)


def test_composite_matches_pillow_within_one_lsb() -> None:
    rng = np.random.default_rng(5)
    bg = (random_rgba(rng, 16, 16, opaque=True) * 255).round().astype(np.uint8)
    fg = (random_rgba(rng, 16, 16) * 255).round().astype(np.uint8)
    ours = LayeredImage(bg, [Layer(fg, name="fg")]).composite_uint8()
    ref = np.asarray(Image.alpha_composite(Image.fromarray(bg, "RGBA"), Image.fromarray(fg, "RGBA")))
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_subset_hidden_and_background_flags() -> None:
    bg = rgba(2, 2, (0.0, 0.0, 0.0, 1.0))
    red = Layer(rgba(2, 2, (1.0, 0.0, 0.0, 1.0)), name="red")
    blue = Layer(rgba(2, 2, (0.0, 0.0, 1.0, 1.0)), name="blue", visible=False)
    image = LayeredImage(bg, [red, blue])
    np.testing.assert_allclose(image.composite()[0, 0], [1, 0, 0, 1])  # blue is hidden
    np.testing.assert_allclose(image.composite(include_hidden=True)[0, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(image.composite(layers=["blue", 0], include_hidden=True)[0, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(image.composite(layers=[], background=False)[0, 0], [0, 0, 0, 0])


def test_merge_keeps_appearance_and_order() -> None:
    rng = np.random.default_rng(6)
    layers = [Layer(random_rgba(rng, 6, 6), name=n) for n in "abcd"]
    image = LayeredImage(random_rgba(rng, 6, 6, opaque=True), layers, metadata={"method": "test"})
    merged = image.merge(["b", "c"], name="bc")
    assert [layer.name for layer in merged.layers] == ["a", "bc", "d"]
    assert merged.layers[1].metadata["merged_from"] == ["b", "c"]
    np.testing.assert_allclose(merged.composite(), image.composite(), atol=1e-5)
    assert [layer.name for layer in image.layers] == ["a", "b", "c", "d"]  # original untouched


def test_numpy_and_tensor_roundtrip() -> None:
    rng = np.random.default_rng(7)
    image = LayeredImage(random_rgba(rng, 5, 7, opaque=True), [Layer(random_rgba(rng, 5, 7), name="fg")])
    t = image.to_tensor()
    assert t.shape == (2, 4, 5, 7) and t.dtype == torch.float32
    assert image.to_numpy().shape == (2, 5, 7, 4)
    back = LayeredImage.from_tensor(t, names=["background", "fg"])
    np.testing.assert_array_equal(back.layers[0].pixels, image.layers[0].pixels)
    back = LayeredImage.from_numpy(image.to_numpy())
    assert [layer.name for layer in back.all_layers] == ["background", "layer_1"]
    np.testing.assert_array_equal(back.composite(), image.composite())


def test_from_foreground_is_the_matting_equation() -> None:
    rng = np.random.default_rng(8)
    bg, fg = rng.random((2, 3, 4, 4), dtype=np.float32)
    alpha = rng.random((1, 4, 4), dtype=np.float32)
    image = LayeredImage.from_foreground(torch.from_numpy(bg), torch.from_numpy(fg), torch.from_numpy(alpha))
    expected = alpha * fg + (1 - alpha) * bg
    np.testing.assert_allclose(image.composite()[..., :3], expected.transpose(1, 2, 0), atol=1e-6)


def test_uint8_and_uint16_inputs_are_rescaled() -> None:
    layer = Layer(np.full((2, 2, 4), 255, np.uint8))
    assert layer.pixels.dtype == np.float32 and layer.pixels.max() == 1.0
    layer = Layer(np.full((2, 2, 3), 65535, np.uint16))
    assert layer.alpha.min() == 1.0 and layer.rgb.max() == 1.0


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.full((2, 2, 4), np.nan, np.float32), "NaN"),
        (np.full((2, 2, 4), 1.5, np.float32), "must lie in [0, 1]"),
        (np.zeros((2, 2), np.float32), "expected shape"),
        (np.zeros((2, 2, 5), np.float32), "expected shape"),
        (np.zeros((0, 2, 4), np.float32), "empty"),
        (np.zeros((2, 2, 4), np.int32), "unsupported dtype"),
        ("not an array", "expected a PIL image, NumPy array or torch tensor"),
    ],
)
def test_bad_pixels_are_named(pixels: object, message: str) -> None:
    with pytest.raises(LayerError, match="layer 'fg'") as info:
        Layer(pixels, name="fg")  # type: ignore[arg-type]
    assert message in str(info.value)


def test_bad_layer_attributes() -> None:
    px = np.zeros((2, 2, 4), np.float32)
    with pytest.raises(LayerError, match="opacity"):
        Layer(px, opacity=1.5)
    with pytest.raises(LayerError, match="offset"):
        Layer(px, offset=(1,))  # type: ignore[arg-type]
    with pytest.raises(LayerError, match="JSON"):
        Layer(px, metadata={"x": object()})
    with pytest.raises(LayerError, match="unique"):
        LayeredImage(px, [Layer(px, name="a"), Layer(px, name="a")])
    with pytest.raises(LayerError, match="offset"):
        LayeredImage(Layer(px, offset=(1, 0)))
    with pytest.raises(LayerError, match="no layer named"):
        LayeredImage(px, [Layer(px, name="a")]).composite(layers=["zzz"])
    with pytest.raises(LayerError, match="2x2"):
        LayeredImage.from_foreground(px[..., :3], np.zeros((3, 3, 4), np.float32))


def test_validate_catches_in_place_nan() -> None:
    image = LayeredImage(np.zeros((2, 2, 3), np.float32), [np.zeros((2, 2, 4), np.float32)])
    image.layers[0].pixels[0, 0, 0] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        image.validate()


def test_bbox() -> None:
    px = np.zeros((4, 4, 4), np.float32)
    px[1:3, 2, 3] = 0.5
    assert Layer(px, offset=(10, 20)).bbox() == (12, 21, 13, 23)
    assert Layer(np.zeros((2, 2, 4), np.float32)).bbox() is None


def test_crop_and_box_validation() -> None:
    rng = np.random.default_rng(9)
    image = LayeredImage(random_rgba(rng, 6, 8, opaque=True), [Layer(random_rgba(rng, 3, 3), name="a", offset=(2, 1))])
    cropped = image.crop((1, 1, 5, 4))
    assert cropped.size == (4, 3) and cropped.layers[0].offset == (1, 0)
    np.testing.assert_array_equal(cropped.composite(), image.composite()[1:4, 1:5])
    assert cropped.metadata["crop_box"] == [1, 1, 5, 4]
    with pytest.raises(LayerError, match="outside the 8x6 image"):
        image.crop((0, 0, 9, 6))
    with pytest.raises(LayerError, match="empty"):
        image.crop((3, 0, 3, 6))
    with pytest.raises(LayerError, match="four integers"):
        parse_box("1,2,3")
    assert parse_box(" 1, 2,3,4") == (1, 2, 3, 4)


# ------------------------------------------------------------------ blend modes
@pytest.mark.parametrize(
    ("mode", "expected"),
    [  # backdrop Cb = 0.5 (ab = 0.8), source Cs = 0.4 (as = 0.5), by hand from the W3C formulas
        # normal:   C'_s = 0.4;                                co = 0.5*0.4 + 0.5*0.8*0.5 = 0.40
        ("normal", 0.40),
        # multiply: C'_s = 0.2*0.4 + 0.8*(0.5*0.4) = 0.24;     co = 0.5*0.24 + 0.20 = 0.32
        ("multiply", 0.32),
        # screen:   C'_s = 0.2*0.4 + 0.8*(0.5+0.4-0.2) = 0.64; co = 0.5*0.64 + 0.20 = 0.52
        ("screen", 0.52),
    ],
)
def test_blend_modes_golden(mode: str, expected: float) -> None:
    backdrop = np.full((2, 3, 4), [0.5, 0.5, 0.5, 0.8], np.float32)
    source = np.full((2, 3, 4), [0.4, 0.4, 0.4, 0.5], np.float32)
    image = LayeredImage(Layer(backdrop, "background"), [Layer(source, "s", blend_mode=mode)])
    ao = 0.5 + 0.8 * 0.5
    out = image.composite()
    np.testing.assert_allclose(out[..., 3], ao, atol=1e-6)
    np.testing.assert_allclose(out[..., 0], expected / ao, atol=1e-6)  # straight colour = co / ao
    stacked = composite_stack(torch.from_numpy(np.stack([backdrop, source])), dim=-1, blend_modes=["normal", mode])
    np.testing.assert_allclose(stacked.numpy(), out, atol=1e-6)


@pytest.mark.parametrize("mode", ["multiply", "screen"])
def test_blend_modes_opaque_fast_path_matches_general(mode: str) -> None:
    rng = np.random.default_rng(1)
    background = rng.random((6, 7, 3), dtype=np.float32)
    layers = [Layer(rng.random((4, 5, 4), dtype=np.float32), "a", offset=(1, 2), opacity=0.6, blend_mode=mode),
              Layer(rng.random((6, 7, 4), dtype=np.float32), "b", blend_mode="screen")]
    image = LayeredImage(background, layers)
    opaque = image.composite()  # opaque background: the lerp fast path
    stack = [torch.from_numpy(image.canvas(k)) for k in (None, 0, 1)]
    general = composite_stack(stack, dim=-1, blend_modes=["normal", mode, "screen"]).numpy()
    np.testing.assert_allclose(opaque, general, atol=1e-6)
    # multiply with white and screen with black change nothing
    white = LayeredImage(background, [Layer(np.ones((6, 7, 4), np.float32), "w", blend_mode="multiply")])
    np.testing.assert_allclose(white.composite()[..., :3], background, atol=1e-6)


def test_blend_mode_refused_and_kept() -> None:
    with pytest.raises(LayerError, match="blend_mode must be one of normal, multiply, screen"):
        Layer(np.zeros((2, 2, 4), np.float32), "x", blend_mode="overlay")
    layer = Layer(np.zeros((2, 2, 4), np.float32), "x", blend_mode="screen")
    assert layer.copy().blend_mode == "screen" and "screen" in repr(layer)


# ------------------------------------------------------------------ inputs
def test_inputs_pil_numpy_torch_agree() -> None:
    rng = np.random.default_rng(2)
    rgba = (rng.random((5, 6, 4)) * 255).astype(np.uint8)
    want = rgba.astype(np.float32) / 255
    sources = [rgba, Image.fromarray(rgba, "RGBA"), torch.from_numpy(want).permute(2, 0, 1),
               torch.from_numpy(want).permute(2, 0, 1)[None], (rgba.astype(np.uint16) * 257)]
    for source in sources:
        np.testing.assert_allclose(Layer(source, "x").pixels, want, atol=1e-6)
    grey16 = Image.fromarray(np.full((3, 4), 65535 // 3, np.uint16))  # mode I;16
    assert np.allclose(Layer(grey16, "g").pixels[..., 0], (65535 // 3) / 65535)
    image = LayeredImage(Image.fromarray(rgba[..., :3], "RGB"))
    assert image.size == (6, 5) and image.background.alpha.min() == 1.0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (torch.zeros(2, 4, 3, 3), r"expected a tensor \[4, H, W\] or \[3, H, W\]"),
        (torch.zeros(5, 3, 3), r"got shape \(5, 3, 3\)"),
        (torch.full((3, 2, 2), 2.0), r"must lie in \[0, 1\]"),
        (torch.zeros(3, 2, 2, dtype=torch.int64), "unsupported tensor dtype"),
        (np.zeros((3, 8, 8), np.float32), r"expected shape \[H, W, 4\] or \[H, W, 3\] \(channel-last\)"),
        (np.zeros((2, 2, 3), np.int16), "unsupported dtype int16"),
        (Image.new("RGB", (0, 3)), "empty"),
    ],
)
def test_bad_inputs_named(source: object, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        LayeredImage(source)  # type: ignore[arg-type]


def test_offsets_must_fit_int32() -> None:
    with pytest.raises(LayerError, match="out of range"):
        Layer(np.zeros((2, 2, 4), np.float32), "x", offset=(10**20, 0))
    with pytest.raises(LayerError, match="out of range"):
        Layer(np.zeros((2, 2, 4), np.float32), "x", offset=(2**31 - 2, 0))
    with pytest.raises(LayerError, match="metadata must be a dict"):
        LayeredImage(np.zeros((2, 2, 3), np.float32), metadata=[1, 2])  # type: ignore[arg-type]
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(LayerError, match="nested too deeply"):
        Layer(np.zeros((2, 2, 4), np.float32), "x", metadata={"a": nested})


def test_to_pil_and_bit_depth() -> None:
    image = LayeredImage(np.full((3, 4, 3), 0.5, np.float32), [Layer(np.ones((1, 1, 4), np.float32), "dot")])
    pil = image.to_pil()
    assert pil.mode == "RGBA" and pil.size == (4, 3) and pil.getpixel((0, 0)) == (255, 255, 255, 255)
    assert pil.getpixel((1, 1)) == (128, 128, 128, 255)
    assert image.layers[0].to_pil().size == (1, 1) and image.bit_depth == 8
    with pytest.raises(LayerError, match="bit_depth must be 8 or 16"):
        LayeredImage(np.zeros((2, 2, 3), np.float32), bit_depth=12)


# ---------------------------------------------------------------- compact storage
@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint8, 4), (np.uint16, 4)])
def test_compact_layers_keep_their_integers_and_read_as_the_float_layer(dtype, channels) -> None:
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    array = rng.integers(0, top + 1, (7, 9, channels), dtype=dtype)
    array[0, 0, :] = top  # both ends of the range
    array[0, 1, :] = 0
    compact = Layer(array, name="c", offset=(2, -1), opacity=0.6)
    reference = Layer(array * np.float32(1.0 / top), name="c", offset=(2, -1), opacity=0.6)  # as before: k * (1 / max)
    assert compact.is_compact and compact.stored.dtype == dtype and compact.stored.shape == (4, 7, 9)
    assert compact.stored.nbytes == 4 * 7 * 9 * np.dtype(dtype).itemsize  # 4 or 8 bytes a pixel, not 16
    assert (compact.width, compact.height) == (9, 7)
    # Reading converts only what is read, to exactly what a float input gives.
    np.testing.assert_array_equal(compact.read(slice(2, 5), slice(1, 8)), reference.planes[:, 2:5, 1:8])
    np.testing.assert_array_equal(compact.quantised(8), reference.quantised(8))
    np.testing.assert_array_equal(compact.quantised(16), reference.quantised(16))
    bits = 8 if dtype == np.uint8 else 16
    np.testing.assert_array_equal(compact.quantised(bits)[..., :channels], array)  # its own integers back
    assert compact.opaque() == (channels == 3) and compact.bbox() == reference.bbox()
    assert compact.is_compact  # none of that converted it
    # Composites over compact layers are those of the float layers, bit for bit, whole or in bands.
    bg = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    a = LayeredImage(bg, [compact])
    b = LayeredImage(bg * np.float32(1.0 / 255), [reference])
    assert a.background.is_compact and not b.background.is_compact
    np.testing.assert_array_equal(a.composite(), b.composite())
    np.testing.assert_array_equal(a.composite_uint8(), b.composite_uint8())
    bands = list(a.iter_composite(rows=5))
    assert [r0 for r0, _ in bands] == [0, 5, 10]
    np.testing.assert_array_equal(np.concatenate([band for _, band in bands]), a.composite())
    assert a.crop((1, 2, 10, 11)).background.is_compact
    # Asking for the float pixels converts the layer for good: planes are then a writable view.
    planes = compact.planes
    assert not compact.is_compact and planes.dtype == np.float32
    np.testing.assert_array_equal(planes, reference.planes)
    compact.pixels[0, 0, 0] = 0.25
    assert compact.planes[0, 0, 0] == np.float32(0.25)


def test_compact_layer_validation_and_bad_bits() -> None:
    layer = Layer(np.zeros((2, 3, 4), np.uint8), name="z")
    with pytest.raises(LayerError, match="bits must be 8 or 16"):
        layer.quantised(12)
    image = LayeredImage(np.zeros((2, 3, 3), np.uint8), [layer])
    image.validate()
    layer.planes = np.zeros((4, 2, 3), np.int32)  # not a stored type
    with pytest.raises(LayerError, match="float32 \\(or uint8/uint16\\)"):
        image.validate()
    with pytest.raises(LayerError, match="at least one row"):
        next(LayeredImage(np.zeros((2, 3, 3), np.uint8)).iter_composite(rows=0))


def test_layer_from_planes_keeps_the_array_itself():
    compact = np.random.default_rng(0).integers(0, 65536, (4, 5, 7)).astype(np.uint16)
    layer = Layer.from_planes(compact, "obj", offset=(3, -2), opacity=0.5, visible=False, metadata={"k": 1},
                              blend_mode="multiply")
    assert layer.stored is compact and layer.is_compact and (layer.width, layer.height) == (7, 5)
    assert (layer.offset, layer.opacity, layer.visible, layer.metadata, layer.blend_mode) == \
        ((3, -2), 0.5, False, {"k": 1}, "multiply")
    np.testing.assert_array_equal(layer.quantised(16), compact.transpose(1, 2, 0))
    view = np.zeros((4, 8, 8), np.float32)[:, 2:6]  # a view stays a view
    assert Layer.from_planes(view).stored is view
    with pytest.raises(LayerError, match=r"float32, uint8 or uint16 \[4, h, w\], got float64 \(4, 2, 2\)"):
        Layer.from_planes(np.zeros((4, 2, 2)))
    with pytest.raises(LayerError, match=r"got float32 \(3, 2, 2\)"):
        Layer.from_planes(np.zeros((3, 2, 2), np.float32))
    with pytest.raises(LayerError, match="offset .* out of range"):  # checked against the planes' own size
        Layer.from_planes(np.zeros((4, 2, 10), np.float32), offset=(2**31 - 5, 0))
