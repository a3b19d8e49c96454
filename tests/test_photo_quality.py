"""Issue 21: the ghost metrics, the local-feature perceptual error, the harmonic and oriented fills."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.errors import LaminaError, LayerError
from lamina.layeringdiff.classical import (
    ClassicalConfig,
    harmonic_fill,
    inpaint_background,
    oriented_fill,
    structure_tensor,
)
from lamina.metrics.background import LocalFeatureDistance, ghost_opacity, ghost_structure


def _scene(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A textured background and an opaque red disc layer ``[H, W, 4]``."""
    rng = np.random.default_rng(0)
    background = np.clip(0.4 + 0.1 * rng.standard_normal((size, size, 3)), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    layer = np.zeros((size, size, 4), np.float32)
    layer[..., 0] = 1.0
    layer[..., 3] = (np.hypot(yy - size / 2, xx - size / 2) < size / 5).astype(np.float32)
    return background, layer


@pytest.mark.parametrize("opacity", [0.0, 0.3, 1.0])
def test_ghost_opacity_measures_the_object_left_in_the_background(opacity: float) -> None:
    background, layer = _scene()
    a = layer[..., 3:] * opacity
    predicted = a * layer[..., :3] + (1 - a) * background  # a ghost of the object at `opacity`
    ghost = ghost_opacity(predicted, background, layer)
    assert ghost == pytest.approx(opacity * (layer[..., 3] > 0).sum() / _counted(background, layer), abs=0.06)


def _counted(background: np.ndarray, layer: np.ndarray) -> int:
    from scipy import ndimage

    footprint = ndimage.binary_dilation(layer[..., 3] > 0.01, iterations=2)
    return int(footprint.sum())


def test_ghost_opacity_ignores_errors_unrelated_to_the_object() -> None:
    background, layer = _scene()
    rng = np.random.default_rng(1)
    noisy = np.clip(background + 0.1 * rng.standard_normal(background.shape), 0, 1)
    assert abs(ghost_opacity(noisy, background, layer)) < 0.02
    assert ghost_opacity(background, background, np.zeros_like(layer)) != ghost_opacity(background, background, layer)
    with pytest.raises(LayerError):
        ghost_opacity(background, background, layer[..., :3])


def _textured_scene(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A textured background and a striped, soft-edged disc layer ``[H, W, 4]``: both have structure."""
    rng = np.random.default_rng(2)
    background = np.clip(0.5 + 0.15 * rng.standard_normal((size, size, 3)), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    layer = np.zeros((size, size, 4), np.float32)
    layer[..., 0] = 0.5 + 0.5 * np.sin(xx / 2.0)
    layer[..., 1] = 0.2
    layer[..., 2] = 0.5 + 0.5 * np.cos(yy / 3.0)
    layer[..., 3] = np.clip(size / 4 - np.hypot(yy - size / 2, xx - size / 2), 0, 1)
    return background, layer


@pytest.mark.parametrize("opacity", [0.0, 0.3, 1.0])
def test_ghost_structure_is_the_opacity_of_the_object_left(opacity: float) -> None:
    background, layer = _textured_scene()
    a = layer[..., 3:]
    composite = a * layer[..., :3] + (1 - a) * background
    predicted = opacity * composite + (1 - opacity) * background  # the object left at `opacity`
    assert ghost_structure(predicted, background, layer) == pytest.approx(opacity, abs=0.05)


def test_ghost_structure_ignores_fills_that_know_nothing_of_the_object() -> None:
    from scipy import ndimage

    background, layer = _textured_scene()
    rng = np.random.default_rng(3)
    hole = ndimage.binary_dilation(layer[..., 3] > 0, iterations=2)
    smooth = background.copy()
    smooth[hole] = background[hole].mean(axis=0)  # a flat fill: the texture is lost, nothing of the object
    noisy = np.clip(background + 0.1 * rng.standard_normal(background.shape), 0, 1).astype(np.float32)
    assert abs(ghost_structure(smooth, background, layer)) < 0.05
    assert abs(ghost_structure(noisy, background, layer)) < 0.05
    # No layer: nan; a wrong shape is named.
    assert np.isnan(ghost_structure(background, background, np.zeros_like(layer)))
    with pytest.raises(LayerError, match="ghost_structure"):
        ghost_structure(background, background, layer[..., :3])


def test_ghost_structure_by_hand() -> None:
    """One opaque pixel: the high-pass of a point is the point minus its blur, so the ratio is exact."""
    background = np.full((9, 9, 3), 0.5, np.float32)
    layer = np.zeros((9, 9, 4), np.float32)
    layer[4, 4] = (1.0, 0.0, 0.5, 1.0)
    predicted = background.copy()
    predicted[4, 4] = (0.75, 0.25, 0.5)  # halfway between the background and the object
    # m = 0.5 (the background is flat), so the object's picture is hp(a (F - m)) = hp(point of (0.5, -0.5, 0));
    # the error is the point of (0.25, -0.25, 0) = half of it, before and after the (linear) high-pass.
    assert ghost_structure(predicted, background, layer, radius=2, sigma=1.0) == pytest.approx(0.5, abs=1e-9)


def test_local_feature_distance() -> None:
    background, layer = _scene()
    metric = LocalFeatureDistance()
    mask = layer[..., 3] > 0
    assert metric(background, background, mask) == pytest.approx(0.0, abs=1e-6)
    smooth = np.full_like(background, background.mean())
    assert metric(smooth, background, mask) > 0.1  # a smear of a texture is far from it
    assert np.isnan(metric(smooth, background, np.zeros_like(mask)))
    with pytest.raises(LayerError):
        metric(background, background, mask[:10])


def test_harmonic_fill_reproduces_a_linear_ramp_and_keeps_known_pixels() -> None:
    size = 32
    ramp = np.repeat(np.linspace(0.1, 0.9, size, dtype=np.float32)[None, :, None], size, axis=0)
    image = np.repeat(ramp, 3, axis=2)
    hole = np.zeros((size, size), bool)
    hole[8:24, 6:20] = True
    damaged = np.where(hole[..., None], 0.0, image).astype(np.float32)
    out = harmonic_fill(damaged, hole)
    np.testing.assert_allclose(out, image, atol=1e-5)  # linear functions are harmonic
    assert np.array_equal(out[~hole], damaged[~hole])
    via = inpaint_background(damaged, hole, "harmonic")
    np.testing.assert_allclose(via, image, atol=1e-4)
    # A ramp's isophotes are its columns, each constant: the oriented fill carries them across (to within
    # the longer edges that leave the image near its border).
    oriented = oriented_fill(damaged, hole)
    np.testing.assert_allclose(oriented, image, atol=1e-3)
    assert np.array_equal(oriented[~hole], damaged[~hole])


def _stripes(angle_deg: float, size: int = 96, period: float = 24.0) -> np.ndarray:
    """Sinusoidal stripes ``[size, size, 3]`` in ``[0.1, 0.9]`` running at ``angle_deg`` from the x axis."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.deg2rad(angle_deg)
    across = -np.sin(t) * xx + np.cos(t) * yy
    return np.repeat((0.5 + 0.4 * np.sin(2 * np.pi * across / period))[..., None], 3, axis=2).astype(np.float32)


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 100.0])
def test_oriented_fill_carries_stripes_through_a_hole(angle: float) -> None:
    image = _stripes(angle)
    hole = np.zeros(image.shape[:2], bool)
    hole[28:68, 30:70] = True  # wider than a stripe's period: the harmonic fill smears them to grey
    damaged = np.where(hole[..., None], 0.0, image).astype(np.float32)

    def hole_psnr(out: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((out - image)[hole] ** 2)))

    oriented, harmonic = oriented_fill(damaged, hole), harmonic_fill(damaged, hole)
    assert hole_psnr(oriented) > hole_psnr(harmonic) + 4.0, (hole_psnr(oriented), hole_psnr(harmonic))
    assert np.array_equal(oriented[~hole], damaged[~hole])
    # A graph Laplacian with positive weights: no value beyond those around the hole.
    assert image.min() - 1e-6 <= oriented[hole].min() and oriented[hole].max() <= image.max() + 1e-6


def test_structure_tensor_reaches_into_the_hole_from_the_known_pixels() -> None:
    image = _stripes(0.0)  # horizontal stripes: gradients vertical
    hole = np.zeros(image.shape[:2], bool)
    hole[28:68, 30:70] = True
    damaged = np.where(hole[..., None], 1.0, image).astype(np.float32)  # the hole's content must not count
    tensor = structure_tensor(damaged, hole)
    inside = tensor[hole]
    assert np.all(inside[:, 2] > 20 * inside[:, 0])  # Jyy >> Jxx everywhere in the hole
    assert np.all(np.abs(inside[:, 1]) < 0.05 * inside[:, 2])


def test_inpaint_methods_are_checked() -> None:
    assert ClassicalConfig().inpaint == "oriented"
    with pytest.raises(LaminaError, match="unknown inpainting method"):
        inpaint_background(np.zeros((8, 8, 3), np.float32), np.eye(8, dtype=bool), "lama")


def test_shadow_model_relights_the_texture_under_a_shadow() -> None:
    from lamina.layeringdiff.classical import ClassicalDecomposer

    size = 64
    rng = np.random.default_rng(3)
    background = np.clip(0.6 + 0.15 * rng.standard_normal((size, size, 3)), 0, 1).astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    alpha[10:30, 20:40] = 1.0
    shadow = np.zeros_like(alpha)
    shadow[30:44, 18:42] = 0.5  # a black shadow under the object, touching it
    image = (1 - shadow[..., None]) * background
    image = np.where(alpha[..., None] > 0, np.float32(0.1), image).astype(np.float32)
    region = np.zeros((size, size), bool)
    region[30:50, 10:50] = True
    part = ClassicalDecomposer().decompose(image, alpha, region)
    inner = (slice(32, 42), slice(22, 38))  # away from the shadow's edge (the model smooths over a few px)
    assert part.effects_alpha[inner].mean() == pytest.approx(0.5, abs=0.1)
    err_new = np.abs(part.background[inner] - background[inner]).mean()
    assert err_new < 0.06
    old = ClassicalDecomposer(ClassicalConfig(effects_model="difference")).decompose(image, alpha, region)
    assert err_new < np.abs(old.background[inner] - background[inner]).mean()  # the texture is kept, not filled
    np.testing.assert_allclose(part.composite(), image, atol=1e-4)  # still exact
    with pytest.raises(LaminaError, match="effects model"):
        ClassicalConfig(effects_model="magic")


def test_shadow_model_leaves_a_dark_thing_next_to_the_object() -> None:
    """A near-black patch beside the object is part of the background, not a shadow to relight."""
    from lamina.layeringdiff.classical import ClassicalDecomposer

    size = 64
    rng = np.random.default_rng(4)
    background = np.clip(0.7 + 0.05 * rng.standard_normal((size, size, 3)), 0, 1).astype(np.float32)
    background[30:44, 18:42] = 0.03  # a black thing (a helmet, a gap in a fence) touching the object
    alpha = np.zeros((size, size), np.float32)
    alpha[10:30, 20:40] = 1.0
    image = np.where(alpha[..., None] > 0, np.float32(0.4), background).astype(np.float32)
    region = np.zeros((size, size), bool)
    region[30:50, 10:50] = True
    part = ClassicalDecomposer().decompose(image, alpha, region)
    dark = (slice(32, 44), slice(18, 42))  # beyond the object's hole margin
    assert part.effects_alpha[dark].max() == 0.0  # 1 - 0.03 / 0.7 > shadow_max: no shadow
    np.testing.assert_array_equal(part.background[dark], image[dark])  # the background keeps it
    off = ClassicalDecomposer(ClassicalConfig(shadow_max=1.0)).decompose(image, alpha, region)
    assert off.effects_alpha[dark].mean() > 0.5  # without the limit it became a black layer over a smear
    assert np.abs(off.background[dark] - background[dark]).mean() > 0.3
    with pytest.raises(LaminaError, match="shadow_max"):
        ClassicalConfig(shadow_max=0.0)
