"""LayeringDiff: foreground stage, classical and FBDD disassembly, the common interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamina import LaminaError, LayeredImage, LayerError
from lamina.layeringdiff import (
    ClassicalConfig,
    ClassicalDecomposer,
    Decomposer,
    ForegroundConfig,
    decompose_image,
    estimate_alpha,
    foreground_from_box,
    foreground_from_mask,
    project_recomposition,
    trimap_from_mask,
)
from lamina.layeringdiff.decompose import regions_from_args
from lamina.layeringdiff.disassembly import minimum_alpha, psnr
from lamina.layeringdiff.foreground import effects_region

torch.set_num_threads(1)


def scene(size: int = 32, centre: tuple[float, float] = (0.4, 0.5), radii: tuple[float, float] = (0.22, 0.16),
          colour: tuple[float, float, float] = (0.9, 0.25, 0.15), shadow: float = 0.0, seed: int = 0) -> dict:
    """A composite with exact layers: a soft-edged ellipse (and a black shadow under it) over a smooth background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.7 - 0.3 * xx * yy], axis=2)
    background += 0.01 * rng.standard_normal(background.shape)
    cy, cx = centre
    ry, rx = radii
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    alpha = np.clip((1.0 - distance) * size * min(radii) / 2.0 + 0.5, 0.0, 1.0)  # a 2 px soft edge
    fg = np.broadcast_to(np.asarray(colour, np.float32), background.shape) * (0.8 + 0.2 * yy[:, :, None])
    effects = np.zeros_like(alpha)
    if shadow:
        blob = ((yy - (cy + ry + 0.04)) / 0.06) ** 2 + ((xx - cx) / 0.22) ** 2
        effects = shadow * np.sqrt(np.clip(1.0 - blob, 0.0, 1.0))
    total = alpha + effects * (1.0 - alpha)
    rgb = alpha[:, :, None] * fg / np.maximum(total, 1e-6)[:, :, None]
    image = total[:, :, None] * rgb + (1.0 - total[:, :, None]) * background
    f32 = {"image": image, "background": background, "fg": fg, "alpha": alpha, "effects": effects, "total": total}
    return {k: np.clip(v, 0.0, 1.0).astype(np.float32) for k, v in f32.items()}


def object_box(alpha: np.ndarray, pad: int = 2) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > 0.05)
    h, w = alpha.shape
    return (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0),
            min(int(xs.max()) + pad + 1, w), min(int(ys.max()) + pad + 1, h))


# ------------------------------------------------------------ foreground stage
def test_trimap_from_mask() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:15, 4:16] = True
    trimap = trimap_from_mask(mask, erode=2, dilate=3)
    assert set(np.unique(trimap)) == {0.0, 0.5, 1.0}
    assert mask[trimap == 1.0].all() and not mask[trimap == 0.0].any()
    assert (trimap[8:12, 7:13] == 1.0).all() and trimap[5, 10] == 0.5 and trimap[1, 1] == 0.0
    # A one-pixel line cannot be eroded by 2 px: its pixels stay sure foreground.
    line = np.zeros((9, 9), bool)
    line[4, 1:8] = True
    assert (trimap_from_mask(line, erode=2, dilate=1) == 1.0).any()


def test_alpha_from_mask_and_from_box() -> None:
    s = scene(32)
    est = foreground_from_mask(s["image"], s["alpha"] > 0.5, ForegroundConfig(erode=1, dilate=2))
    assert est.alpha.shape == (32, 32) and est.alpha.dtype == np.float32
    assert est.trimap.shape == (32, 32) and est.mask.dtype == bool
    assert np.abs(est.alpha - s["alpha"]).mean() < 0.01

    box = object_box(s["alpha"])
    est = foreground_from_box(s["image"], box, ForegroundConfig(erode=1, dilate=2))
    x0, y0, x1, y1 = box
    outside = np.ones((32, 32), bool)
    outside[y0:y1, x0:x1] = False
    assert (est.alpha[outside] == 0).all()
    gt = s["alpha"] > 0.5
    iou = (est.mask & gt).sum() / (est.mask | gt).sum()
    assert iou > 0.75  # GrabCut keeps part of the soft edge: the matting fixes it
    assert np.abs(est.alpha - s["alpha"]).mean() < 0.03


def test_matting_methods_and_downscaled_matting() -> None:
    s = scene(32)
    trimap = trimap_from_mask(s["alpha"] > 0.5, 1, 2)
    for method in ("cf", "sm"):
        alpha = estimate_alpha(s["image"], trimap, method)
        assert np.abs(alpha - s["alpha"]).mean() < 0.02, method
    small = estimate_alpha(s["image"], trimap, "cf", max_side=12)  # matting at a lower resolution
    assert (small[trimap == 1.0] == 1).all() and (small[trimap == 0.0] == 0).all()
    assert np.abs(small - s["alpha"]).mean() < 0.05


def test_foreground_errors() -> None:
    s = scene(32)
    with pytest.raises(LayerError, match="outside the 32x32 image"):
        foreground_from_box(s["image"], (20, 10, 40, 30))
    with pytest.raises(LaminaError, match="covers the whole"):
        foreground_from_box(s["image"], (0, 0, 32, 32))
    with pytest.raises(LayerError, match="mask is 16x16 but the image is 32x32"):
        foreground_from_mask(s["image"], np.ones((16, 16), bool))
    with pytest.raises(LaminaError, match="mask is empty"):
        foreground_from_mask(s["image"], np.zeros((32, 32), np.float32))
    with pytest.raises(LaminaError, match="covers the whole image"):
        foreground_from_mask(s["image"], np.ones((32, 32), np.uint8) * 255)
    with pytest.raises(LaminaError, match="matting method"):
        ForegroundConfig(matting="knn")
    with pytest.raises(LaminaError, match="inpainting method"):
        ClassicalConfig(inpaint="lama")


def test_effects_region_surrounds_the_object_and_reaches_below() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:15, 10:20] = True
    region = effects_region(mask, below=1.0, around=0.2)  # 2 px around, 10 rows below
    assert not (region & mask).any()
    assert region[3, 15] and not region[2, 15]  # 2 px above
    assert region[10, 8] and not region[10, 7]  # 2 px beside
    assert region[16 + 10, 15] and not region[16 + 12, 15]  # down to 10 rows under the grown object
    assert not region[30:, :].any()


# ------------------------------------------------------------ disassembly
def test_projection_meets_the_recomposition_constraint() -> None:
    rng = torch.Generator().manual_seed(0)
    image, f0, b0 = (torch.rand(1, 3, 8, 8, generator=rng) for _ in range(3))
    alpha = torch.rand(1, 1, 8, 8, generator=rng)
    alpha[..., 0, :] = 1.0
    alpha[..., 1, :] = 0.0
    f, b = project_recomposition(image, alpha, f0, b0)
    torch.testing.assert_close(alpha * f + (1 - alpha) * b, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(f[..., 0, :], image[..., 0, :])  # opaque: F is the image, B untouched
    torch.testing.assert_close(b[..., 0, :], b0[..., 0, :])
    torch.testing.assert_close(b[..., 1, :], image[..., 1, :])  # transparent: B is the image
    assert f.min() >= 0 and f.max() <= 1 and b.min() >= 0 and b.max() <= 1
    # Estimates that already recompose the image are kept; gradients flow.
    f0 = image.clone().requires_grad_(True)
    f, b = project_recomposition(image, alpha, f0, image)
    torch.testing.assert_close(f, image)
    torch.testing.assert_close(b, image)
    (f.sum() + b.sum()).backward()
    assert torch.isfinite(f0.grad).all()


def test_minimum_alpha_recovers_a_black_shadow() -> None:
    background = np.full((4, 4, 3), 0.6, np.float32)
    target = background * (1 - 0.4)  # 40 % black over it
    alpha, colour = minimum_alpha(target, background)
    np.testing.assert_allclose(alpha, 0.4, atol=1e-6)
    np.testing.assert_allclose(colour, 0.0, atol=1e-6)


def test_classical_recomposes_the_input_and_completes_the_background() -> None:
    s = scene(32)
    decomposer = ClassicalDecomposer()
    assert isinstance(decomposer, Decomposer)
    result = decomposer.decompose(s["image"], s["alpha"])
    assert result.foreground.shape == (32, 32, 4) and result.background.shape == (32, 32, 3)
    assert psnr(result.composite(), s["image"]) > 30
    hidden = s["alpha"] > 0.5
    assert psnr(result.background[hidden], s["background"][hidden]) > 25  # a smooth background, inpainted
    visible = s["alpha"] > 0.05
    assert np.abs(result.foreground[visible, :3] - s["fg"][visible]).mean() < 0.03
    layered = result.to_layered(metadata={"method": "classical"})
    assert isinstance(layered, LayeredImage) and len(layered.layers) == 1
    assert psnr(layered.composite()[:, :, :3], s["image"]) > 30


def test_inpainting_at_a_lower_resolution() -> None:
    from lamina.layeringdiff.classical import inpaint_background

    s = scene(32)
    hole = s["alpha"] > 0.01
    full = inpaint_background(s["image"], hole, "ns", radius=3)
    small = inpaint_background(s["image"], hole, "telea", radius=3, max_side=12)
    np.testing.assert_array_equal(small[~hole], s["image"][~hole])
    assert psnr(full[hole], s["background"][hole]) > 25 and psnr(small[hole], s["background"][hole]) > 25


def test_shadow_goes_to_the_foreground_layer() -> None:
    s = scene(48, centre=(0.35, 0.5), shadow=0.5)
    estimate = foreground_from_mask(s["image"], s["alpha"] > 0.5)
    assert estimate.effects_region is not None
    with_effects = ClassicalDecomposer().decompose(s["image"], estimate.alpha, estimate.effects_region)
    without = ClassicalDecomposer().decompose(s["image"], estimate.alpha)
    shadow = (s["effects"] > 0.1) & (s["alpha"] < 0.01)
    assert abs(with_effects.effects_alpha[shadow].mean() - s["effects"][shadow].mean()) < 0.08
    assert psnr(with_effects.background[shadow], s["background"][shadow]) > \
        psnr(without.background[shadow], s["background"][shadow]) + 6
    assert psnr(with_effects.composite(), s["image"]) > 30


def test_decompose_image_with_a_box() -> None:
    s = scene(32)
    box = object_box(s["alpha"])
    layered = decompose_image(s["image"], box=",".join(map(str, box)), method="classical")
    assert [layer.name for layer in layered.all_layers] == ["background", "object_1"]
    assert layered.metadata["method"] == "classical" and layered.metadata["recomposition_psnr"] > 30
    assert layered.layers[0].metadata["box"] == list(box)
    assert psnr(layered.composite()[:, :, :3], s["image"]) > 30
    # uint8 photos and a mask read from an RGB file work too.
    mask_file = np.repeat(((s["alpha"] > 0.5) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    layered = decompose_image((s["image"] * 255).astype(np.uint8), mask=mask_file, method="classical")
    assert layered.metadata["regions"] == ["mask"] and "box" not in layered.layers[0].metadata


def test_two_layers_peeled_front_to_back() -> None:
    back = scene(32, centre=(0.3, 0.3), radii=(0.15, 0.15), colour=(0.1, 0.2, 0.9))
    front = scene(32, centre=(0.65, 0.65), radii=(0.17, 0.17), colour=(0.9, 0.8, 0.1))
    a = front["alpha"][:, :, None]
    image = a * front["fg"] + (1 - a) * back["image"]
    boxes = [object_box(front["alpha"]), object_box(back["alpha"])]  # front-most first
    layered = decompose_image(image, box=boxes, layers=2, method="classical")
    assert [layer.name for layer in layered.all_layers] == ["background", "object_2", "object_1"]
    assert psnr(layered.composite()[:, :, :3], image) > 30
    background_psnr = psnr(layered.background.rgb, back["background"])
    assert background_psnr > 25, background_psnr
    with pytest.raises(LaminaError, match="need 3 boxes"):
        decompose_image(image, box=boxes, layers=3, method="classical")


def test_region_arguments() -> None:
    assert regions_from_args(box=(1, 2, 3, 4)) == [("box", (1, 2, 3, 4))]
    assert regions_from_args(box="1,2,3,4") == [("box", (1, 2, 3, 4))]
    assert len(regions_from_args(box=[(1, 2, 3, 4), (0, 0, 2, 2)])) == 2
    assert len(regions_from_args(mask=np.ones((4, 4)))) == 1
    with pytest.raises(LaminaError, match="exactly one"):
        regions_from_args()
    with pytest.raises(LaminaError, match="exactly one"):
        regions_from_args(box=(1, 2, 3, 4), mask=np.ones((4, 4)))
    with pytest.raises(LaminaError, match="unknown decomposition method"):
        decompose_image(np.zeros((8, 8, 3)), box=(1, 1, 4, 4), method="magic")
    assert regions_from_args(prompt="the cat") == [("prompt", "the cat")]
    with pytest.raises(LaminaError, match="need 2 prompts"):
        regions_from_args(prompt=["a", "b", "c"], layers=2)


# ---------------------------------------------------------------------- FBDD
def tiny_pipeline():
    from lamina.layeringdiff import FBDDPipeline, make_scheduler, make_unet

    torch.manual_seed(0)
    pipe = FBDDPipeline(make_unet("tiny", sample_size=16), make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fbdd_save_load_round_trip(tmp_path) -> None:
    from lamina.layeringdiff.fbdd import FBDDPipeline

    s = scene(32)
    pipe = tiny_pipeline()
    first = pipe(s["image"], s["alpha"], num_inference_steps=3, generator=torch.Generator().manual_seed(1))
    assert first.foreground.shape == (1, 32, 32, 3) and first.background.shape == (1, 32, 32, 3)
    a = s["alpha"][:, :, None]
    assert psnr(a * first.foreground[0] + (1 - a) * first.background[0], s["image"]) > 40  # the projection
    pipe.save_pretrained(tmp_path / "fbdd")
    loaded = FBDDPipeline.from_pretrained(tmp_path / "fbdd")
    loaded.set_progress_bar_config(disable=True)
    again = loaded(s["image"], s["alpha"], num_inference_steps=3, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(again.foreground, first.foreground, atol=1e-5)
    np.testing.assert_allclose(again.background, first.background, atol=1e-5)

    layered = decompose_image(s["image"], mask=s["alpha"] > 0.5, method="layeringdiff", model=tmp_path / "fbdd")
    assert layered.metadata["method"] == "layeringdiff" and layered.metadata["recomposition_psnr"] > 30
    with pytest.raises(LaminaError, match="not a folder"):
        decompose_image(s["image"], box=(1, 1, 9, 9), method="layeringdiff", model=tmp_path / "missing")


def test_fbdd_loss_backpropagates() -> None:
    from lamina.layeringdiff.fbdd import fbdd_loss

    pipe = tiny_pipeline()
    g = torch.Generator().manual_seed(0)
    image, fg, bg = (torch.rand(2, 3, 16, 16, generator=g) for _ in range(3))
    alpha = torch.rand(2, 1, 16, 16, generator=g)
    losses = fbdd_loss(pipe.unet, pipe.scheduler, image, alpha, fg, bg, generator=g, recomposition_weight=0.1)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["recomposition"] > 0
    grads = [p.grad for p in pipe.unet.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("kind", ["telea", "classical"])
def test_fbdd_residual_model_starts_at_the_classical_estimate(kind) -> None:
    from lamina.layeringdiff.classical import estimate_foreground
    from lamina.layeringdiff.fbdd import FBDDPipeline, compute_prefill, fbdd_loss, make_scheduler, make_unet
    from lamina.layeringdiff.train import resolve_config

    s = scene(32)
    torch.manual_seed(0)
    pipe = FBDDPipeline(make_unet("tiny", sample_size=16, effects=True, prefill=kind),
                        make_scheduler(prediction_type="sample"), prefill=kind)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(s["image"], s["alpha"], num_inference_steps=1, projection=False)
    image = torch.from_numpy(s["image"]).permute(2, 0, 1)[None]
    alpha = torch.from_numpy(s["alpha"])[None, None]
    prefill = compute_prefill(kind, image, alpha)
    assert prefill.shape == (1, {"telea": 3, "classical": 6}[kind], 32, 32)
    expected_f = estimate_foreground(s["image"], s["alpha"]) if kind == "classical" else s["image"]
    np.testing.assert_allclose(out.foreground[0], expected_f, atol=1e-6)  # zero residuals: the classical result
    np.testing.assert_allclose(out.background[0], prefill[0, :3].permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.abs(out.effects).max() == 0
    small = torch.nn.functional.interpolate(torch.cat([image, alpha, prefill], 1), size=(16, 16), mode="area")
    losses = fbdd_loss(pipe.unet, pipe.scheduler, small[:, :3], small[:, 3:4], small[:, :3], small[:, :3],
                       prefill=small[:, 4:])
    assert torch.isfinite(losses["loss"])
    with pytest.raises(LaminaError, match="prefill"):
        make_unet("tiny", prefill="inpaint")
    with pytest.raises(LaminaError, match="unknown FBDD prefill 'inpaint'"):
        resolve_config("tiny", prefill="inpaint")
    with pytest.raises(LaminaError, match="unknown FBDD prefill 'inpaint'"):
        compute_prefill("inpaint", image, alpha)
    with pytest.raises(LaminaError, match="channels"):
        fbdd_loss(pipe.unet, pipe.scheduler, small[:, :3], small[:, 3:4], small[:, :3], small[:, :3],
                  prefill=small[:, 4:6])


def test_fbdd_foreground_residual_switch(tmp_path) -> None:
    from lamina.layeringdiff.classical import estimate_foreground
    from lamina.layeringdiff.fbdd import FBDDDecomposer, FBDDPipeline, make_scheduler, make_unet

    s = scene(32)
    torch.manual_seed(0)
    unet = make_unet("tiny", sample_size=16, effects=True, prefill="classical")
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # non-zero residuals
    pipe = FBDDPipeline(unet, make_scheduler(prediction_type="sample"), prefill="classical",
                        foreground_residual=False)
    pipe.set_progress_bar_config(disable=True)
    kept = pipe(s["image"], s["alpha"], num_inference_steps=1, projection=False,
                generator=torch.Generator().manual_seed(0))
    added = pipe(s["image"], s["alpha"], num_inference_steps=1, projection=False, foreground_residual=True,
                 generator=torch.Generator().manual_seed(0))
    closed_form = estimate_foreground(s["image"], s["alpha"])
    np.testing.assert_allclose(kept.foreground[0], closed_form, atol=1e-6)  # F = P_F
    assert np.abs(added.foreground[0] - closed_form).mean() > 1e-3  # F = P_F + residual
    np.testing.assert_array_equal(kept.background, added.background)  # B and E do not depend on it
    np.testing.assert_array_equal(kept.effects, added.effects)

    pipe.save_pretrained(tmp_path / "fbdd")
    loaded = FBDDPipeline.from_pretrained(tmp_path / "fbdd")
    assert loaded.config.foreground_residual is False
    by_config = FBDDDecomposer(loaded).decompose(s["image"], s["alpha"])
    by_option = FBDDDecomposer(loaded, foreground_residual=True).decompose(s["image"], s["alpha"])
    assert not np.allclose(by_config.foreground, by_option.foreground)
    with pytest.raises(LaminaError, match="pixel-space FBDDPipeline"):
        FBDDDecomposer(object(), foreground_residual=False)
    from lamina.layeringdiff.train import make_pipeline, resolve_config

    for preset, expected in (("builtin", False), ("small", True)):  # what a training run exports
        assert make_pipeline(resolve_config(preset), unet).config.foreground_residual is expected


def test_fbdd_mirror_average_is_mirror_equivariant(monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.layeringdiff import fbdd
    from lamina.layeringdiff.fbdd import FBDDDecomposer, FBDDPipeline, make_scheduler, make_unet

    # The harmonic fill is exactly mirror-symmetric; the oriented fill's nearest-pixel ties are not.
    monkeypatch.setattr(fbdd, "PREFILL_FILL", "harmonic")
    s = scene(32, centre=(0.45, 0.35))
    torch.manual_seed(0)
    # The "telea" prefill (its fill only; pymatting's foreground estimate is not mirror-symmetric).
    unet = make_unet("tiny", sample_size=16, effects=True, prefill="telea")
    torch.nn.init.normal_(unet.conv_out.weight, std=0.01)  # small non-zero residuals: no layer clipped to [0, 1]
    with torch.no_grad():  # the sample ignores the noise, so each call is a function of its input alone
        unet.conv_in.weight[:, :7] = 0.0
    pipe = FBDDPipeline(unet, make_scheduler(prediction_type="sample"), prefill="telea")
    pipe.set_progress_bar_config(disable=True)
    image, alpha = s["image"], s["alpha"]
    flipped_image, flipped_alpha = image[:, ::-1].copy(), alpha[:, ::-1].copy()

    def background(img: np.ndarray, a: np.ndarray, mirror: bool) -> np.ndarray:
        return pipe(img, a, num_inference_steps=1, projection=False, mirror=mirror,
                    generator=torch.Generator().manual_seed(0)).background[0]

    plain, mirrored = background(image, alpha, False), background(image, alpha, True)
    assert np.abs(plain - background(flipped_image, flipped_alpha, False)[:, ::-1]).max() > 1e-3  # not symmetric
    np.testing.assert_allclose(mirrored, background(flipped_image, flipped_alpha, True)[:, ::-1], atol=1e-5)
    # the mean of the sample and of its mirror image's sample, mirrored back
    expected = (plain + background(flipped_image, flipped_alpha, False)[:, ::-1]) / 2.0
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)
    on = FBDDDecomposer(pipe).decompose(image, alpha)
    off = FBDDDecomposer(pipe, mirror=False).decompose(image, alpha)
    assert not np.allclose(on.background, off.background)
    np.testing.assert_allclose(on.composite(), image, atol=1e-5)


def test_fine_tuning_a_telea_model_with_the_classical_prefill_widens_its_input(tmp_path) -> None:
    from lamina.layeringdiff.fbdd import FBDDPipeline, make_scheduler, make_unet
    from lamina.layeringdiff.train import _load_init

    torch.manual_seed(0)
    source = make_unet("tiny", sample_size=16, effects=True, prefill="telea")
    torch.nn.init.normal_(source.conv_out.weight)  # not the zero start, so the outputs say something
    FBDDPipeline(source, make_scheduler(), prefill="telea").save_pretrained(tmp_path / "telea")
    target = make_unet("tiny", sample_size=16, effects=True, prefill="classical")
    _load_init(target, str(tmp_path / "telea"))
    x = torch.randn(2, 7 + 4 + 3, 16, 16)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = source(x, t).sample
        got = target(torch.cat([x, torch.randn(2, 3, 16, 16)], 1), t).sample  # P_F has no effect yet
    torch.testing.assert_close(got, expected)
    with pytest.raises(LaminaError, match="does not match"):
        _load_init(make_unet("tiny", sample_size=16, effects=False, prefill="classical"), str(tmp_path / "telea"))


# ------------------------------------------------------------------------- HFA
def test_hfa_loss_golden_numbers() -> None:
    from lamina.layeringdiff.hfa import hfa_loss

    zeros = torch.zeros(1, 3, 1, 2)
    background_hat = torch.tensor([[[[0.5, 0.0]], [[0.5, 0.0]], [[0.5, 0.0]]]])  # errors 0.5 (hidden) and 0
    foreground_hat = torch.tensor([[[[0.2, 0.9]], [[0.2, 0.9]], [[0.2, 0.9]]]])
    alpha = torch.tensor([[[[1.0, 0.5]]]])
    hidden = torch.tensor([[[[1.0, 0.0]]]])
    losses = hfa_loss(foreground_hat, background_hat, zeros, zeros, alpha, hidden, foreground_weight=2.0)
    # background: only the hidden pixel counts: 0.5^2 = 0.25 in each channel
    assert losses["background"].item() == pytest.approx(0.25)
    # foreground: 3 * (1 * 0.2 + 0.5 * 0.9) = 1.95 over 3 * 1.5 = 4.5
    assert losses["foreground"].item() == pytest.approx(1.95 / 4.5)
    assert losses["loss"].item() == pytest.approx(0.25 + 2 * 1.95 / 4.5)
    nothing = hfa_loss(foreground_hat, background_hat, zeros, zeros, torch.zeros_like(alpha), torch.zeros_like(hidden))
    assert nothing["loss"].item() == 0.0  # no object: nothing to learn, and no division by zero


def test_hfa_starts_as_the_identity_and_round_trips_in_the_pipeline(tmp_path) -> None:
    from lamina.layeringdiff.fbdd import FBDDDecomposer, FBDDPipeline, load_pipeline, make_scheduler, make_unet
    from lamina.layeringdiff.hfa import HFANet, refine

    g = torch.Generator().manual_seed(0)
    image, fg, bg = (torch.rand(2, 3, 12, 10, generator=g) for _ in range(3))
    alpha, effects = torch.rand(2, 1, 12, 10, generator=g), torch.rand(2, 1, 12, 10, generator=g)
    torch.manual_seed(0)
    hfa = HFANet(channels=8, dilations=(1, 2))
    out = hfa(image, alpha, effects, fg, bg)
    assert torch.equal(out.foreground, fg) and torch.equal(out.background, bg)  # zero last convolution
    torch.nn.init.normal_(hfa.conv_out.weight, std=0.05)
    out = hfa(image, alpha, None, fg, bg)
    assert out.foreground.shape == (2, 3, 12, 10) and 0 <= out.background.min() and out.background.max() <= 1
    out.background.mean().backward()
    assert hfa.conv_in.weight.grad is not None and torch.isfinite(hfa.conv_in.weight.grad).all()
    with pytest.raises(LaminaError, match="dilations"):
        HFANet(dilations=())
    # refine() runs it on the object's box grown by the receptive field: the same result where it matters.
    assert hfa.radius == 2 + 2 + 3
    image, fg, bg = (torch.rand(1, 3, 40, 36, generator=g) for _ in range(3))
    alpha, effects = torch.zeros(1, 1, 40, 36), torch.zeros(1, 1, 40, 36)
    alpha[..., 10:20, 12:18], effects[..., 20:24, 10:22] = 0.8, 0.4
    whole = hfa(image, alpha, effects, fg, bg)
    foreground, background = refine(hfa, image, alpha, effects, fg, bg)
    effects[..., 30:, :] = 0.005  # below REGION_FLOOR: does not widen the box
    whole = hfa(image, alpha, effects, fg, bg)
    foreground, background = refine(hfa, image, alpha, effects, fg, bg)
    hidden = ((alpha > 0) | (effects > 0.01)).expand(-1, 3, -1, -1)
    assert torch.equal(whole.background[hidden], background[hidden])
    assert torch.equal(whole.foreground[hidden], foreground[hidden])
    for far in (slice(0, 2), slice(32, None)):  # rows beyond the box (10:24) grown by the radius: untouched
        assert torch.equal(background[..., far, :], bg[..., far, :])
    assert refine(hfa, image, torch.zeros_like(alpha), None, fg, bg)[1] is bg  # no object: nothing to do

    s = scene(32)
    unet = make_unet("tiny", sample_size=16, effects=True, prefill="classical")
    pipe = FBDDPipeline(unet, make_scheduler(prediction_type="sample"), prefill="classical", hfa=hfa)
    pipe.set_progress_bar_config(disable=True)

    def run(p, **options):
        return p(s["image"], s["alpha"], num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                 **options)

    with_hfa, without = run(pipe), run(pipe, hfa=False)
    assert np.abs(with_hfa.background - without.background).max() > 1e-3
    a = s["alpha"][:, :, None] + with_hfa.effects[0][:, :, None] * (1 - s["alpha"][:, :, None])
    assert psnr(a * with_hfa.foreground[0] + (1 - a) * with_hfa.background[0], s["image"]) > 40  # still projected
    pipe.save_pretrained(tmp_path / "with")
    loaded = load_pipeline(tmp_path / "with")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.hfa, HFANet) and list(loaded.hfa.config.dilations) == [1, 2]
    np.testing.assert_allclose(run(loaded).background, with_hfa.background, atol=1e-6)
    plain = FBDDPipeline(unet, make_scheduler(prediction_type="sample"), prefill="classical")
    plain.save_pretrained(tmp_path / "without")  # a model without HFA (as saved before HFA existed) loads as one
    assert load_pipeline(tmp_path / "without").hfa is None
    on = FBDDDecomposer(loaded).decompose(s["image"], s["alpha"])
    off = FBDDDecomposer(loaded, hfa=False).decompose(s["image"], s["alpha"])
    assert not np.allclose(on.background, off.background)
    # Beyond its trained scale (here 32 px output over a 16 px UNet: 2x) the pipeline skips the HFA.
    loaded.hfa.register_to_config(max_scale=1.5)
    np.testing.assert_array_equal(run(loaded).background, without.background)
    loaded.hfa.register_to_config(max_scale=2.0)
    np.testing.assert_allclose(run(loaded).background, with_hfa.background, atol=1e-6)


# --------------------------------------------------------- self-similar completion
def checker_scene(size: int = 64, period: float = 8.0, hole: tuple[slice, slice] = (slice(22, 42), slice(20, 44))):
    """A checker over a gradient, hidden under an opaque rectangle; the hidden part given blurred, as a UNet would."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = np.sign(np.sin(np.pi * (xx + 0.5) / (period / 2))) * np.sign(np.sin(np.pi * (yy + 0.5) / (period / 2)))
    truth = np.stack([0.4 + 0.2 * wave + 0.2 * xx / size, 0.5 + 0.15 * wave, 0.5 - 0.1 * wave + 0.1 * yy / size], 2)
    alpha = np.zeros((size, size), np.float32)
    alpha[hole] = 1.0
    image = np.where(alpha[:, :, None] > 0, np.float32(0.9), truth).astype(np.float32)
    blurred = np.where(alpha[:, :, None] > 0, ndimage.gaussian_filter(truth, (6, 6, 0)), truth).astype(np.float32)
    return image, truth.astype(np.float32), blurred, alpha


def test_offset_mismatch_by_hand_and_against_a_direct_sum() -> None:
    from lamina.layeringdiff.selfsim import offset_mismatch

    # By hand: h = [1, -1, 1, -1] (one row, one channel), all visible. Offset 2 (and 0) repeats it
    # exactly; offset 1 pairs 3 opposite values: error 3 * 2^2 = 12, power (3 + 3) / 2 = 3, r = 4.
    h = np.array([1.0, -1.0, 1.0, -1.0], np.float32).reshape(1, 4, 1)
    r = offset_mismatch(h, np.ones((1, 4), bool), min_overlap_px=1)
    assert r.shape == (1, 7)
    np.testing.assert_allclose(r[0], [4.0, 0.0, 4.0, 0.0, 4.0, 0.0, 4.0], atol=1e-9)
    assert np.isinf(offset_mismatch(h, np.ones((1, 4), bool), min_overlap_px=2)[0, 0])  # 1 pixel pair only

    rng = np.random.default_rng(0)
    visible = rng.random((7, 9)) > 0.3
    h = rng.standard_normal((7, 9, 3)) * visible[:, :, None]
    r = offset_mismatch(h, visible, min_overlap_px=6)
    for dy in range(-6, 7):
        for dx in range(-8, 9):
            pairs = [(y, x) for y in range(7) for x in range(9)
                     if 0 <= y + dy < 7 and 0 <= x + dx < 9 and visible[y, x] and visible[y + dy, x + dx]]
            a = np.array([h[y, x] for y, x in pairs]).reshape(-1, 3)
            b = np.array([h[y + dy, x + dx] for y, x in pairs]).reshape(-1, 3)
            if len(pairs) < 6:
                assert np.isinf(r[6 + dy, 8 + dx])
            else:
                expected = ((a - b) ** 2).sum() / (0.5 * ((a ** 2).sum() + (b ** 2).sum()))
                assert r[6 + dy, 8 + dx] == pytest.approx(expected, rel=1e-6)


def test_self_similar_completion_continues_a_pattern_and_leaves_the_rest() -> None:
    from lamina.layeringdiff.selfsim import SelfSimilarConfig, complete_high_frequencies

    image, truth, blurred, alpha = checker_scene()
    out, used = complete_high_frequencies(image, blurred, alpha)
    hidden = alpha >= 1.0
    assert used > 0 and out.dtype == np.float32 and out.shape == truth.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out[~hidden], blurred[~hidden])  # only hidden pixels change
    before, after = psnr(blurred[hidden], truth[hidden]), psnr(out[hidden], truth[hidden])
    assert after > before + 6.0, (before, after)
    # A window above max_side is completed at max_side and the change upsampled: less exact, still a gain.
    image2, truth2, blurred2, alpha2 = checker_scene(128, period=16.0, hole=(slice(44, 84), slice(40, 88)))
    out2, used2 = complete_high_frequencies(image2, blurred2, alpha2, SelfSimilarConfig(max_side=64))
    hidden2 = alpha2 >= 1.0
    assert used2 > 0 and out2.shape == truth2.shape
    np.testing.assert_array_equal(out2[~hidden2], blurred2[~hidden2])
    assert psnr(out2[hidden2], truth2[hidden2]) > psnr(blurred2[hidden2], truth2[hidden2]) + 3.0

    # No repeating pattern (white noise): nothing is copied, the input comes back as it is.
    rng = np.random.default_rng(1)
    noise = rng.random(truth.shape).astype(np.float32)
    image = np.where(alpha[:, :, None] > 0, np.float32(0.9), noise)
    same, used = complete_high_frequencies(image, blurred, alpha)
    assert used == 0 and same is blurred
    # Nothing hidden (a soft layer only), or a stricter mismatch bound: unchanged.
    assert complete_high_frequencies(image, blurred, alpha * 0.5)[1] == 0
    image = checker_scene()[0]
    assert complete_high_frequencies(image, blurred, alpha, SelfSimilarConfig(max_mismatch=0.0))[1] == 0
    for bad in ({"sigma": 0.0}, {"min_offset": 0.5, "max_offset": 0.25}, {"top_k": 0}, {"opaque": 0.01},
                {"max_side": 4}):
        with pytest.raises(LaminaError, match="invalid SelfSimilarConfig"):
            SelfSimilarConfig(**bad)


def test_fbdd_decomposer_self_similar_completion() -> None:
    from lamina.layeringdiff.fbdd import FBDDDecomposer, FBDDPipeline, make_scheduler, make_unet

    image, truth, _, alpha = checker_scene(32, period=6.0, hole=(slice(10, 22), slice(9, 21)))
    torch.manual_seed(0)
    unet = make_unet("tiny", sample_size=16, effects=True, prefill="classical")
    pipe = FBDDPipeline(unet, make_scheduler(prediction_type="sample"), prefill="classical")
    pipe.set_progress_bar_config(disable=True)
    on = FBDDDecomposer(pipe).decompose(image, alpha)
    off = FBDDDecomposer(pipe, self_similar=None).decompose(image, alpha)
    hidden = on.foreground[:, :, 3] >= 0.98
    assert hidden.any()
    np.testing.assert_array_equal(on.background[~hidden], off.background[~hidden])
    assert psnr(on.background[hidden], truth[hidden]) > psnr(off.background[hidden], truth[hidden]) + 3.0
    assert psnr(on.composite(), image) > 60  # the layers still recompose the image


def test_decompose_command_self_similar_switch(tmp_path) -> None:
    from click.testing import CliRunner

    from lamina.io import load, write_png
    from lamina.layeringdiff.cli import decompose

    image, truth, _, alpha = checker_scene()
    write_png(image, tmp_path / "checker.png")
    hidden = alpha > 0
    scores = {}
    for flag in ("--self-similar", "--no-self-similar"):
        out = tmp_path / f"{flag}.ora"
        result = CliRunner().invoke(decompose, [str(tmp_path / "checker.png"), "--box", "18,18,46,46", flag,
                                                "--out", str(out)])
        assert result.exit_code == 0, result.output
        scores[flag] = psnr(load(out).background.pixels[:, :, :3][hidden], truth[hidden])
    assert scores["--self-similar"] > scores["--no-self-similar"] + 3.0, scores


def test_selfsim_correlation_is_scipy_fftconvolve_bit_for_bit():
    from scipy import signal

    from lamina.layeringdiff.selfsim import _correlate

    rng = np.random.default_rng(0)
    for h, w in [(17, 23), (64, 64), (101, 77)]:
        a, b = rng.random((h, w)), rng.random((h, w))
        got = _correlate(a, b)
        assert got.shape == (2 * h - 1, 2 * w - 1)
        assert np.array_equal(got, signal.fftconvolve(b, a[::-1, ::-1], mode="full"))
    a = np.zeros((5, 6))
    a[2, 3] = 1.0
    assert np.isclose(_correlate(a, a)[4, 5], 1.0) and np.isclose(_correlate(a, a).sum(), 1.0)
