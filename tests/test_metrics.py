"""Metrics, checked against values worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lamina import LaminaError, Layer, LayeredImage, LayerError
from lamina.metrics import (
    WEIGHTS_ENV,
    FIDInceptionV3,
    InceptionV3Features,
    RandomConvFeatures,
    alpha_weighted_l1,
    background_psnr_occluded,
    connectivity_error,
    evaluate_layers,
    fid_kid,
    fid_kid_from_features,
    gradient_error,
    mask_metrics,
    match_layers,
    mse,
    psnr,
    recomposition_psnr,
    sad,
    soft_iou,
)
from lamina.metrics.fid import iter_image_batches
from lamina.metrics.matting import connectivity_phi, gaussian_gradient_kernels

approx = pytest.approx


# ------------------------------------------------------------------------ masks
# pred > 0.5 (strict: 0.5 itself is background) gives   gt:
#   1 1 1                                                1 0 0
#   0 1 0                                                1 1 0
# TP = (0,0),(1,1) = 2; FP = (0,1),(0,2) = 2; FN = (1,0) = 1; TN = (1,2) = 1.
PRED = np.array([[0.9, 0.6, 0.7], [0.2, 1.0, 0.5]], np.float32)
GT = np.array([[1, 0, 0], [1, 1, 0]], np.float32)
BY_HAND = {
    "iou_fg": 2 / 5,  # TP / (TP + FP + FN)
    "iou_bg": 1 / 4,  # TN / (TN + FP + FN)
    "miou": (2 / 5 + 1 / 4) / 2,
    "precision": 2 / 4,  # TP / (TP + FP)
    "recall": 2 / 3,  # TP / (TP + FN)
    "f1": 4 / 7,  # 2 TP / (2 TP + FP + FN)
    "accuracy": 3 / 6,  # (TP + TN) / 6
}


def test_mask_metrics_by_hand() -> None:
    assert mask_metrics(PRED, GT) == approx(BY_HAND)
    assert mask_metrics(torch.from_numpy(PRED)[None, None], torch.from_numpy(GT)[None, None]) == approx(BY_HAND)
    # uint8 is rescaled: 0.5 -> 127 -> 0.498 stays background, a bool gt is 0/1.
    assert mask_metrics(np.floor(PRED * 255).astype(np.uint8), GT > 0.5) == approx(BY_HAND)


def test_mask_metrics_reductions_and_empty_masks() -> None:
    empty = np.zeros((2, 3), np.float32)
    assert mask_metrics(empty, empty) == approx(dict.fromkeys(BY_HAND, 1.0))  # empty union: perfect
    pred, gt = np.stack([PRED, empty]), np.stack([GT, empty])
    # dataset: counts add up, TP 2, FP 2, FN 1, TN 1 + 6 = 7 over 12 pixels.
    assert mask_metrics(pred, gt, reduction="dataset") == approx({
        "iou_fg": 2 / 5, "iou_bg": 7 / 10, "miou": (2 / 5 + 7 / 10) / 2, "precision": 1 / 2,
        "recall": 2 / 3, "f1": 4 / 7, "accuracy": 9 / 12})
    # image: mean of the first image's scores and 1.0.
    assert mask_metrics(pred, gt, reduction="image") == approx({k: (v + 1.0) / 2 for k, v in BY_HAND.items()})
    # Nothing predicted, all foreground in truth: TP = FP = TN = 0, FN = 6; every score is 0.
    assert mask_metrics(empty, np.ones((2, 3))) == approx(dict.fromkeys(BY_HAND, 0.0))


def test_mask_metrics_thresholds_and_errors() -> None:
    soft_gt = np.array([[0.95, 0.8, 0.8], [0.2, 0.95, 0.1]], np.float32)
    # threshold 0.85 on both: pred 1 0 0 / 0 1 0 and gt 1 0 0 / 0 1 0 -> perfect.
    assert mask_metrics(PRED, soft_gt, threshold=0.85, gt_threshold=None)["iou_fg"] == 1.0
    # gt at its default 0.5 instead: gt 1 1 1 / 0 1 0 -> TP 2, FN 2, IoU 2/4.
    assert mask_metrics(PRED, soft_gt, threshold=0.85)["iou_fg"] == approx(0.5)
    with pytest.raises(LayerError, match=r"\(2, 3\).*\(3, 2\)"):
        mask_metrics(PRED, GT.T)
    with pytest.raises(LayerError, match="reduction"):
        mask_metrics(PRED, GT, reduction="mean")  # type: ignore[arg-type]
    with pytest.raises(LayerError, match="range"):
        mask_metrics(PRED * 2, GT)


# ---------------------------------------------------------------------- matting
def test_sad_and_mse_by_hand() -> None:
    pred = np.array([[0.2, 0.5], [1.0, 0.0]], np.float32)
    gt = np.array([[0.0, 0.5], [0.5, 0.25]], np.float32)
    # |pred - gt| = 0.2, 0, 0.5, 0.25: sum 0.95; squares 0.04, 0, 0.25, 0.0625: mean 0.088125.
    assert sad(pred, gt, scale=1.0) == approx(0.95)
    assert sad(pred, gt) == approx(0.95e-3)  # the customary SAD / 1000
    assert mse(pred, gt) == approx(0.088125)
    # Trimap unknown (128) at (0,0) and (1,1): SAD 0.2 + 0.25, MSE (0.04 + 0.0625) / 2.
    trimap = np.array([[128, 0], [255, 128]], np.uint8)
    assert sad(pred, gt, trimap, scale=1.0) == approx(0.45)
    assert mse(pred, gt, trimap) == approx(0.05125)
    assert sad(pred, gt, trimap == 128, scale=1.0) == approx(0.45)  # a bool region mask
    assert math.isnan(mse(pred, gt, np.zeros((2, 2), bool)))
    # A batch gives the mean over images: (0.95 + 0) / 2.
    assert sad(np.stack([pred, gt]), np.stack([gt, gt]), scale=1.0) == approx(0.475)


def test_gradient_error() -> None:
    hx, hy = gaussian_gradient_kernels(1.4)
    # Half size ceil(1.4 sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = ceil(3.62) = 4; unit L2 norm.
    assert hx.shape == (9, 9) and np.square(hx).sum() == approx(1.0) and np.array_equal(hy, hx.T)
    rng = np.random.default_rng(0)
    gt = rng.random((12, 10), dtype=np.float32) * 0.7
    assert gradient_error(gt, gt) == 0.0
    # A constant offset has no gradient (each kernel row sums to 0, borders replicate).
    assert gradient_error(gt + 0.3, gt) == approx(0.0, abs=1e-12)
    # A single pixel of value v on zeros: the gradient images are v hx and v hy (shifted), so
    # sum |grad|^2 = v^2 (|hx|^2 + |hy|^2) = 2 v^2, and gt has no gradient.
    impulse = np.zeros((11, 11), np.float32)
    impulse[5, 5] = 1.0
    assert gradient_error(impulse, np.zeros_like(impulse), scale=1.0) == approx(2.0)
    assert gradient_error(impulse * 0.5, np.zeros_like(impulse), scale=1.0) == approx(0.5)
    assert gradient_error(impulse, np.zeros_like(impulse)) == approx(2e-3)


def test_connectivity_error_by_hand() -> None:
    # 1x4, thresholds 0.1..1. pred&gt >= t for t <= 0.5 is 1 1 0 1: components {0,1} and {3};
    # the largest is {0,1}, so pixels 2 and 3 lose connectivity at t = 0.1: l = 0. Pixels 0, 1
    # stay connected up to t = 1: l = 1. d = alpha - l, phi = 1 - d [d >= 0.15]:
    # pred d = 0 0 0 0.5 -> phi 1 1 1 0.5; gt d = 0 0 0 1 -> phi 1 1 1 0. Error 0.5.
    pred, gt = np.array([[1, 1, 0, 0.5]]), np.array([[1, 1, 0, 1.0]])
    assert connectivity_error(pred, gt, scale=1.0) == approx(0.5)
    assert connectivity_error(pred, gt) == approx(0.5e-3)  # the customary / 1000
    # pred 1 0.5 0 0 vs gt all 1: pixels 2, 3 lose at t = 0.1 (l = 0), pixel 1 at t = 0.6
    # (l = 0.5), pixel 0 never (l = 1). pred d = 0 0 0 0 -> phi all 1; gt d = 0 0.5 1 1 ->
    # phi 1 0.5 0 0. Error 0.5 + 1 + 1 = 2.5.
    phi_p, phi_g = connectivity_phi(np.array([[1, 0.5, 0, 0]], np.float32), np.ones((1, 4), np.float32))
    assert phi_p == approx(np.ones((1, 4))) and phi_g == approx(np.array([[1, 0.5, 0, 0]]))
    assert connectivity_error(np.array([[1, 0.5, 0, 0]]), np.ones((1, 4)), scale=1.0) == approx(2.5)
    assert connectivity_error(gt, gt) == 0.0


def test_connectivity_uses_4_neighbours() -> None:
    # (1,2) touches the pair (0,0)-(0,1) only diagonally, so with 4-connectivity it is its own
    # component and loses at t = 0.1: l = 0. pred d = 0.9 -> phi 0.1; gt d = 1 -> phi 0.
    # (With 8-connectivity l would be 0.9 and both phis 1: error 0.)
    gt = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    pred = gt.copy()
    pred[1, 2] = 0.9
    assert connectivity_error(pred, gt, scale=1.0) == approx(0.1, rel=1e-5)
    # Restricted by a trimap whose unknown area excludes (1,2), there is no error.
    trimap = np.full((3, 3), 0.5, np.float32)
    trimap[1, 2] = 1.0
    assert connectivity_error(pred, gt, trimap) == 0.0


# ----------------------------------------------------------------------- layers
def test_psnr_by_hand() -> None:
    a = np.zeros((2, 2, 3), np.float32)
    assert psnr(a, a + 0.1) == approx(20.0)  # MSE 0.01 -> 10 log10(100)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[0, 0] = 0.1
    b[1, 1] = 0.5
    # All pixels: MSE (0.01 + 0.25) / 4 = 0.065.
    assert psnr(a, b) == approx(10 * math.log10(1 / 0.065))
    assert psnr(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1)) == approx(psnr(a, b))
    mask = np.zeros((2, 2), bool)
    mask[0, 0] = True
    assert psnr(a, b, mask) == approx(20.0)
    assert psnr(a, b, np.eye(2)) == approx(10 * math.log10(1 / 0.13))  # (0.01 + 0.25) / 2
    assert math.isnan(psnr(a, b, np.zeros((2, 2))))


def test_soft_iou_and_alpha_weighted_l1_by_hand() -> None:
    # min: 0.2 + 0.6 + 0 = 0.8; max: 0.4 + 0.8 + 1 = 2.2.
    assert soft_iou(np.array([[0.2, 0.8, 1.0]]), np.array([[0.4, 0.6, 0.0]])) == approx(0.8 / 2.2)
    assert soft_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    pred = np.array([[[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]], np.float32)
    gt = np.array([[[0.2, 0.5, 0.5], [0.0, 0.0, 0.0]]], np.float32)
    alpha = np.array([[1.0, 0.5]], np.float32)
    # Per-pixel mean |diff| 0.1 and 1.0, weighted by alpha 1 and 0.5: (0.1 + 0.5) / 1.5.
    assert alpha_weighted_l1(pred, gt, alpha) == approx(0.4)
    assert alpha_weighted_l1(torch.from_numpy(pred).permute(2, 0, 1), torch.from_numpy(gt).permute(2, 0, 1),
                             torch.from_numpy(alpha)) == approx(0.4)
    assert math.isnan(alpha_weighted_l1(pred, gt, np.zeros_like(alpha)))


def test_background_psnr_occluded_by_hand() -> None:
    gt = np.full((2, 2, 3), 0.5, np.float32)
    pred = gt.copy()
    pred[0, 0] += 0.1
    pred[1, 1] += 0.5
    occluder = np.array([[1.0, 1.0], [0.0, 0.3]], np.float32)
    # threshold 0.5: pixels (0,0), (0,1): MSE (0.01 + 0) / 2.
    assert background_psnr_occluded(pred, gt, occluder, threshold=0.5) == approx(10 * math.log10(200))
    # threshold 0: (1,1) too: MSE (0.01 + 0.25) / 3.
    assert background_psnr_occluded(pred, gt, occluder) == approx(10 * math.log10(3 / 0.26))
    assert math.isnan(background_psnr_occluded(pred, gt, np.zeros((2, 2))))


def scene(fg_rgb: tuple[float, float, float] = (0.7, 0.0, 0.0), bg_shift: float = 0.0,
          alpha_11: float = 1.0) -> LayeredImage:
    """4x4 canvas: opaque bg (0.2, 0.4, 0.6) and a 2x2 opaque object at (1, 1)."""
    bg = np.empty((4, 4, 3), np.float32)
    bg[:] = (0.2, 0.4, 0.6)
    bg[1:3, 1:3] += bg_shift  # only where the object hides it
    obj = np.ones((2, 2, 4), np.float32)
    obj[..., :3] = fg_rgb
    obj[1, 1, 3] = alpha_11
    return LayeredImage(bg, [Layer(obj, name="obj", offset=(1, 1))])


def test_recomposition_psnr() -> None:
    image = scene()
    assert recomposition_psnr(image, image.composite()) == math.inf
    assert recomposition_psnr(image, image) == math.inf  # a LayeredImage reference
    grey = LayeredImage(np.full((4, 4, 3), 0.5, np.float32))
    assert recomposition_psnr(grey, np.full((4, 4, 3), 0.6, np.float32)) == approx(20.0)  # MSE 0.01
    # Premultiplied comparison: white at alpha 0.5 is 0.5 premultiplied, as the grey composite.
    assert recomposition_psnr(grey, torch.tensor([1.0, 1.0, 1.0, 0.5]).view(4, 1, 1).expand(4, 4, 4)) == math.inf
    with pytest.raises(LayerError, match="4x4"):
        recomposition_psnr(image, np.zeros((3, 5, 3)))


def test_evaluate_layers_against_itself() -> None:
    image = scene()
    scores = evaluate_layers(image, image.copy())
    assert scores == approx({
        "alpha_sad": 0.0, "alpha_mse": 0.0, "alpha_gradient": 0.0, "alpha_connectivity": 0.0,
        "alpha_soft_iou": 1.0, "fg_l1": 0.0, "mask_iou_fg": 1.0, "mask_iou_bg": 1.0, "mask_miou": 1.0,
        "mask_precision": 1.0, "mask_recall": 1.0, "mask_f1": 1.0, "mask_accuracy": 1.0,
        "bg_psnr_occluded": math.inf, "recomposition_psnr": math.inf,
        "layer/obj/alpha_sad": 0.0, "layer/obj/alpha_soft_iou": 1.0, "layer/obj/fg_l1": 0.0,
    })


def test_evaluate_layers_colour_and_background_perturbation() -> None:
    # Object red 0.7 -> 0.4: per-pixel colour error 0.3 / 3 = 0.1 under alpha 1.
    # Background +0.1 in every channel, only behind the object: occluded PSNR 20 dB, and it is
    # invisible in the composite. Composite: R differs by 0.3 on 4 of 16 pixels x 3 channels,
    # MSE 4 * 0.09 / 48 = 0.0075.
    scores = evaluate_layers(scene(fg_rgb=(0.4, 0.0, 0.0), bg_shift=0.1), scene())
    assert scores["fg_l1"] == approx(0.1) and scores["layer/obj/fg_l1"] == approx(0.1)
    assert scores["bg_psnr_occluded"] == approx(20.0, rel=1e-5)
    assert scores["recomposition_psnr"] == approx(10 * math.log10(1 / 0.0075), rel=1e-5)
    assert scores["alpha_sad"] == 0.0 and scores["mask_miou"] == 1.0


def test_evaluate_layers_alpha_perturbation() -> None:
    # Object pixel (1,1) (canvas (2,2)) has alpha 0.5 instead of 1.
    scores = evaluate_layers(scene(alpha_11=0.5), scene())
    assert scores["alpha_sad"] == approx(0.5e-3)
    assert scores["alpha_mse"] == approx(0.25 / 16)
    assert scores["alpha_soft_iou"] == approx(3.5 / 4)
    # Thresholded at 0.5 (strict) that pixel is background: TP 3, FN 1, FP 0, TN 12.
    assert scores["mask_iou_fg"] == approx(3 / 4) and scores["mask_iou_bg"] == approx(12 / 13)
    assert scores["mask_precision"] == 1.0 and scores["mask_recall"] == approx(3 / 4)
    assert scores["mask_f1"] == approx(6 / 7) and scores["mask_accuracy"] == approx(15 / 16)
    # Connectivity: the pixel leaves the component at t = 0.6, l = 0.5; pred d = 0 -> phi 1,
    # gt d = 0.5 -> phi 0.5; all else agrees. Error 0.5 / 1000.
    assert scores["alpha_connectivity"] == approx(0.5e-3)
    assert scores["alpha_gradient"] > 0.0
    # Colour is unchanged (straight colour), so fg L1 is 0 and the background is untouched.
    assert scores["fg_l1"] == 0.0 and scores["bg_psnr_occluded"] == math.inf
    # Composite at that pixel: 0.5 fg + 0.5 bg against fg, off by 0.5 |(0.7, 0, 0) - (0.2, 0.4, 0.6)|
    # = (0.25, 0.2, 0.3): MSE (0.0625 + 0.04 + 0.09) / 48.
    assert scores["recomposition_psnr"] == approx(10 * math.log10(48 / 0.1925), rel=1e-5)


def test_match_layers_and_merging() -> None:
    bg = np.zeros((4, 4, 3), np.float32)
    full = np.ones((4, 4, 4), np.float32)
    left, right = full.copy(), full.copy()
    left[:, 2:, 3], right[:, :2, 3] = 0.0, 0.0
    gt = LayeredImage(bg, [Layer(full, name="obj")])
    split = LayeredImage(bg, [Layer(left, name="a"), Layer(right, name="b")])
    # No shared names: by order, the extra top layer merges into the pair.
    assert match_layers(split, gt) == [("obj", [0, 1], [0])]
    scores = evaluate_layers(split, gt)
    assert scores["layer/obj/alpha_soft_iou"] == 1.0 and scores["alpha_sad"] == 0.0
    # The other way round: the two gt layers merge into one group.
    assert match_layers(gt, split) == [("a+b", [0], [0, 1])]
    # By name when every gt name is a predicted name, whatever the order.
    swapped = LayeredImage(bg, [Layer(right, name="b"), Layer(left, name="a"), Layer(full, name="c")])
    assert match_layers(swapped, split) == [("a", [1], [0]), ("b", [0], [1])]
    assert match_layers(LayeredImage(bg), split) == []


def test_evaluate_layers_canvas_mismatch() -> None:
    with pytest.raises(LayerError, match=r"4x4.*5x3"):
        evaluate_layers(scene(), LayeredImage(np.zeros((3, 5, 3), np.float32)))


# ---------------------------------------------------------------------- FID/KID
def test_fid_kid_from_features_by_hand() -> None:
    real = torch.tensor([[0.0], [2.0]])
    fake = torch.tensor([[2.0], [6.0]])
    # FID in 1-D: (mu_r - mu_f)^2 + var_r + var_f - 2 sqrt(var_r var_f), unbiased variances:
    # mu 1 and 4, var 2 and 8: 9 + 2 + 8 - 2 * 4 = 11.
    # KID: k(x, y) = (x y / D + 1)^3 with D = 1; one subset of both samples each time:
    # k_rr off-diagonal k(0, 2) = 1 -> 2 / 2 = 1; k_ff: k(2, 6) = 13^3 = 2197 -> 2197;
    # k_rf: k(0,2) + k(0,6) + k(2,2) + k(2,6) = 1 + 1 + 125 + 2197 = 2324 -> 2 * 2324 / 4 = 1162.
    # MMD^2 = 1 + 2197 - 1162 = 1036, the same for every subset (std 0).
    scores = fid_kid_from_features(real, fake, kid_subsets=5)
    assert scores == approx({"fid": 11.0, "kid_mean": 1036.0, "kid_std": 0.0})
    with pytest.raises(LayerError, match="at least 2"):
        fid_kid_from_features(real[:1], fake)


def test_fid_kid_with_random_features() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(24, 3, 16, 16, generator=g)
    fake = torch.rand(24, 3, 16, 16, generator=g) * 0.5
    net = RandomConvFeatures(dim=16)
    same = fid_kid(real, real, net, kid_subset_size=12, kid_subsets=10)
    assert same["fid"] == approx(0.0, abs=1e-6)
    apart = fid_kid(real, fake, net, kid_subset_size=12, kid_subsets=10)
    assert apart["fid"] > 1.0 and apart["kid_mean"] > 3 * apart["kid_std"] > 0.0
    # Same images as uint8, as channel-last NumPy, or as a list of single images: same scores.
    as_uint8 = (real * 255 + 0.5).floor().to(torch.uint8)
    assert fid_kid(as_uint8, fake, net, kid_subset_size=12, kid_subsets=10) == approx(apart)
    as_list = list(real.permute(0, 2, 3, 1).numpy())
    assert fid_kid(as_list, fake, net, kid_subset_size=12, kid_subsets=10, batch_size=5) == approx(apart)


def test_image_batches_and_protocol() -> None:
    images = [torch.zeros(3, 8, 8), torch.zeros(2, 3, 8, 8), np.zeros((6, 6, 3), np.uint8),
              LayeredImage(np.zeros((6, 6, 3), np.float32))]
    assert [tuple(b.shape) for b in iter_image_batches(images, batch_size=2)] == [
        (2, 3, 8, 8), (1, 3, 8, 8), (2, 3, 6, 6)]
    with pytest.raises(LayerError, match="RGB"):
        list(iter_image_batches(torch.zeros(2, 4, 8, 8)))
    # The feature networks also plug straight into torchmetrics (num_features: no probe image).
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=RandomConvFeatures(dim=8))
    metric.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=True)
    metric.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=False)
    assert math.isfinite(float(metric.compute()))


def test_inception_loads_a_local_state_dict(tmp_path, monkeypatch) -> None:
    net = FIDInceptionV3()
    state = net.state_dict()
    assert "Conv2d_1a_3x3.conv.weight" in state and "Mixed_7c.branch_pool.bn.running_var" in state
    # pytorch-fid's file also holds the 1008-way classifier: it is ignored.
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, path)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    loaded = InceptionV3Features()  # path from the environment
    assert torch.equal(loaded.Mixed_6e.branch7x7dbl_5.conv.weight, net.Mixed_6e.branch7x7dbl_5.conv.weight)
    out = loaded(torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_inception_missing_or_wrong_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(LaminaError, match=rf"pt_inception-2015-12-05-6726825d\.pth.*{WEIGHTS_ENV}.*never downloads"):
        InceptionV3Features()
    missing = tmp_path / "nope.pth"
    with pytest.raises(LaminaError, match=rf"not found at {missing}.*never downloads"):
        fid_kid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), feature=missing)
    wrong = tmp_path / "wrong.pth"
    torch.save(RandomConvFeatures().state_dict(), wrong)
    with pytest.raises(LaminaError, match="not pytorch-fid's InceptionV3"):
        InceptionV3Features(wrong)
