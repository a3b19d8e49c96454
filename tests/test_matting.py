"""lamina's closed-form matting and multi-level foreground estimation, against exact layers and against pymatting."""

from __future__ import annotations

import numpy as np
import pytest

from lamina import LaminaError
from lamina.layeringdiff.foreground import trimap_from_mask
from lamina.layeringdiff.matting import closed_form_alpha, estimate_foreground_ml


def two_colour_scene(size: int = 40, seed: int = 0) -> dict:
    """``I = alpha F + (1 - alpha) B`` with constant ``F`` and ``B`` and a soft disc; a textured variant."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    alpha = np.clip((0.3 - np.hypot(yy - 0.5, xx - 0.45)) * size / 6 + 0.5, 0, 1)  # a 6 px soft edge
    fg, bg = np.array([0.9, 0.2, 0.1]), np.array([0.1, 0.35, 0.8])
    image = alpha[:, :, None] * fg + (1 - alpha[:, :, None]) * bg
    rng = np.random.default_rng(seed)
    texture = np.clip(bg + 0.15 * rng.standard_normal((size, size, 3)), 0, 1)
    textured = alpha[:, :, None] * fg + (1 - alpha[:, :, None]) * texture
    return {"alpha": alpha, "image": image, "textured": textured, "fg": fg, "bg": bg}


def test_closed_form_alpha_is_exact_on_a_two_colour_composite() -> None:
    # Two colours in every window: alpha is in the Laplacian's null space (Levin et al., Theorem 2),
    # so the solution is the true alpha, up to the covariance regulariser epsilon.
    s = two_colour_scene()
    trimap = np.full(s["alpha"].shape, 0.5)
    trimap[s["alpha"] >= 0.999], trimap[s["alpha"] <= 0.001] = 1.0, 0.0
    assert ((trimap > 0) & (trimap < 1)).sum() > 100
    alpha = closed_form_alpha(s["image"], trimap)
    assert alpha.shape == trimap.shape and alpha.dtype == np.float64
    np.testing.assert_allclose(alpha, s["alpha"], atol=1e-4)
    assert (alpha[trimap == 1.0] == 1).all() and (alpha[trimap == 0.0] == 0).all()


def test_closed_form_alpha_matches_pymatting() -> None:
    pymatting = pytest.importorskip("pymatting")
    s = two_colour_scene(48, seed=1)
    trimap = trimap_from_mask(s["alpha"] > 0.5, 3, 4).astype(np.float64)
    ours = closed_form_alpha(s["textured"], trimap)
    theirs = pymatting.estimate_alpha_cf(s["textured"], trimap)  # ichol-preconditioned CG, rtol 1e-7
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.abs(ours - s["alpha"]).mean() < 0.03


def test_closed_form_alpha_checks_its_input() -> None:
    image = np.zeros((8, 8, 3))
    with pytest.raises(LaminaError, match=r"\[H, W, 3\] image of the trimap's size 8x6"):
        closed_form_alpha(image, np.full((8, 6), 0.5))
    with pytest.raises(LaminaError, match="at least one sure"):
        closed_form_alpha(image, np.full((8, 8), 0.5))
    known = np.zeros((8, 8))
    np.testing.assert_array_equal(closed_form_alpha(image, known), known)  # nothing unknown: the trimap


def test_foreground_estimation_recovers_the_colours() -> None:
    s = two_colour_scene()
    fg, bg = estimate_foreground_ml(s["image"], s["alpha"])
    assert fg.shape == bg.shape == s["image"].shape and fg.dtype == np.float32
    soft = (s["alpha"] > 0.05) & (s["alpha"] < 0.95)
    assert soft.sum() > 100
    assert np.abs(fg[soft] - s["fg"]).max() < 1e-3  # the edge un-mixed: F, not the mix
    assert np.abs(bg[soft] - s["bg"]).max() < 1e-3
    recomposed = s["alpha"][:, :, None] * fg + (1 - s["alpha"][:, :, None]) * bg
    np.testing.assert_allclose(recomposed, s["image"], atol=1e-3)


def test_foreground_estimation_is_close_to_pymatting() -> None:
    # pymatting relaxes pixel by pixel in raster order (Gauss-Seidel); lamina sweeps all pixels at once (Jacobi).
    pymatting = pytest.importorskip("pymatting")
    s = two_colour_scene(64, seed=2)
    ours, _ = estimate_foreground_ml(s["textured"], s["alpha"])
    theirs = pymatting.estimate_foreground_ml(s["textured"], s["alpha"])
    covered = s["alpha"] > 0.01
    assert np.abs(ours - theirs)[covered].mean() < 4e-3
    with pytest.raises(LaminaError, match="alpha's size 64x64"):
        estimate_foreground_ml(s["textured"][:10], s["alpha"])
