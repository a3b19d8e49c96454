"""FurryGAN: config defaults, networks, loss terms (hand-computed values), training objective."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import pytest
import torch
from torch.utils.data import TensorDataset

from lamina import InputFileError, LayeredImage
from lamina.compositing import blend
from lamina.furrygan.config import (
    PRESETS,
    ConfigError,
    FurryGANConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    get_preset,
)
from lamina.furrygan.inference import resolve_checkpoint
from lamina.furrygan.losses import (
    FurryGANLoss,
    background_participation_loss,
    binarization_loss,
    coarse_area_loss,
    coarse_mask_loss,
    d_logistic_loss,
    fine_area_loss,
    g_nonsaturating_loss,
    mask_consistency_loss,
    mask_prediction_loss,
    r1_penalty,
)
from lamina.furrygan.networks import (
    Blur,
    FurryGANDiscriminator,
    FurryGANGenerator,
    ModulatedConv2d,
    minibatch_stddev,
)
from lamina.furrygan.train import STATE_NAME, TrainingDivergedError, training_loop

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**overrides) -> FurryGANConfig:
    return get_preset("tiny-32").with_overrides({"train.batch_size": 2, **overrides})


# ============================================================================ config
def test_defaults_equal_official_code():
    # Values written literally from shared/reference/furrygan.md (the official FurryGAN code):
    # 1.1 generator, 1.2 discriminator, 1.3 training loop, 1.4 losses, 1.5 argparse defaults.
    cfg = FurryGANConfig()
    m, lo, tr = cfg.model, cfg.loss, cfg.train
    # 1.1: latent 512 split 3:1 -> z_fg 384, z_bg 128 (front part); n_mlp = 2 hard-coded, lr_mul 0.01.
    assert (m.resolution, m.latent_dim, m.ch_ratio) == (256, 512, 3)
    assert (m.z_fg_dim, m.z_bg_dim) == (384, 128)
    assert (m.mapping_layers, m.mapping_lr_mul) == (2, 0.01)
    # 1.1: channel_multiplier 2 -> fg 384 (4-64 px), 192 (128 px), 96 (256 px); bg 128/64/32; 14 styles.
    assert [m.fg_channels(r) for r in (4, 64, 128, 256)] == [384, 384, 192, 96]
    assert [m.bg_channels(r) for r in (4, 64, 128, 256)] == [128, 128, 64, 32]
    assert m.num_ws == 14
    # 1.1: mask heads StyledConv(96 -> 32, k=1), min-max with margin 0.
    assert (m.mask_channels, m.mask_margin, m.fine_mask) == (32, 0.0, True)
    # 1.2: mask predictor ResBlock(512 -> 32, k=1) at 16x16, reflection padding, [1,3,3,1] blur.
    assert (m.mask_predictor, m.mask_predictor_channels, m.reflection_pad) == (True, 32, True)
    assert m.blur_kernel == (1, 3, 3, 1) and (m.mbstd_group, m.mbstd_channels) == (4, 1)
    # 1.3: dual fake input with fg_ratio 1; R1 = 1 every 16; consistency and bg participation every 2,
    # weight 1; mask prediction 0.5 + 0.5; bg participation target not detached.
    assert (lo.dual_fake_input, lo.fg_ratio) == (True, 1.0)
    assert (lo.r1_gamma, lo.r1_interval, lo.pred_weight) == (1.0, 16, 1.0)
    assert (lo.consistency, lo.consistency_weight, lo.consistency_interval) == (True, 1.0, 2)
    assert (lo.bg_participation, lo.bg_participation_weight, lo.bg_participation_interval) == (True, 1.0, 2)
    assert lo.bg_participation_detach_target is False
    # 1.4/1.5: min_mask 0.35, max_mask_fine 0.01, coef_binary 5 -> 0.5 over 5000, coef_area 5,
    # coef_m_fine 5, fade_in 5000.
    assert (lo.min_mask, lo.max_mask_fine) == (0.35, 0.01)
    assert (lo.binary_weight_start, lo.binary_weight_end, lo.binary_decay_steps) == (5.0, 0.5, 5000)
    assert (lo.area_weight, lo.fine_weight, lo.fine_fade_in_steps) == (5.0, 5.0, 5000)
    # 1.5: iter 300001, batch 16, lr 0.002, betas (0, 0.99), g_reg_every 4 (still scales G's Adam), psi 0.5,
    # image_every 500, save_every 10000, horizontal flips.
    assert (tr.total_steps, tr.batch_size, tr.lr, tr.betas, tr.g_reg_interval) == (300_001, 16, 0.002, (0.0, 0.99), 4)
    assert (tr.preview_psi, tr.preview_every, tr.checkpoint_every, tr.hflip) == (0.5, 500, 10_000, True)
    assert tr.keep_snapshots  # 1.6: every checkpoint is kept (ckpts/NNNNNN.pt)
    assert tr.precision == "fp32"  # no mixed precision in the official code
    g, d = cfg.optimizer_kwargs("G"), cfg.optimizer_kwargs("D")
    assert g["lr"] == pytest.approx(0.0016) and g["betas"] == pytest.approx((0.0, 0.99**0.8))
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    # 1.3: accumulate(g_ema, G, 0.5 ** (32 / 10000)) every iteration at batch 16, no ramp-up.
    assert tr.ema_rampup is None
    assert tr.lr_rampdown_steps == 0  # constant learning rate
    assert tr.ema_beta(16) == pytest.approx(0.5 ** (32 / 10000))
    assert PRESETS["paper-256"] == cfg


def test_schedules():
    lo = LossConfig()
    # gamma(t) = t / 5000 then 1 (Eq. 3); binarization weight 5 -> 0.5 linearly over 5000 steps.
    assert [lo.fine_gamma(t) for t in (0, 2500, 5000, 9000)] == [0.0, 0.5, 1.0, 1.0]
    assert [lo.binary_weight(t) for t in (0, 2500, 5000, 9000)] == pytest.approx([5.0, 2.75, 0.5, 0.5])
    assert [lo.r1_due(t) for t in (0, 1, 15, 16, 32)] == [True, False, False, True, True]
    assert [lo.consistency_due(t) for t in (0, 1, 2)] == [True, False, True]
    assert not lo.consistency_due(0, mask_predictor=False)
    assert [lo.bg_participation_due(t) for t in (0, 1, 2)] == [True, False, True]
    assert (lo.num_composites(16), lo.num_composites(2), lo.num_composites(3)) == (8, 1, 2)
    assert LossConfig(dual_fake_input=False).num_composites(16) == 16
    assert not LossConfig(consistency=False).consistency_due(0)
    # lr ramp-down (lamina's, off by default): constant, then linear to 0 over the last 4 of 10 steps.
    assert TrainConfig().lr_scale(299_999) == 1.0
    ramp = TrainConfig(total_steps=10, lr_rampdown_steps=4)
    assert [ramp.lr_scale(t) for t in (0, 6, 7, 9)] == pytest.approx([1.0, 1.0, 0.75, 0.25])
    with pytest.raises(ConfigError, match="lr_rampdown_steps"):
        TrainConfig(total_steps=10, lr_rampdown_steps=11)


def test_config_json_round_trip(tmp_path):
    for name, cfg in PRESETS.items():
        path = tmp_path / f"{name}.json"
        cfg.save_json(path)
        assert FurryGANConfig.load_json(path) == cfg
    assert FurryGANConfig.from_dict({"model": {"resolution": 64}}).model == ModelConfig(resolution=64)
    cfg = tiny(**{"model.blur_kernel": [1, 2, 1], "loss.fine_fade_in_steps": 0})
    assert cfg.model.blur_kernel == (1, 2, 1) and cfg.train.batch_size == 2


@pytest.mark.parametrize("data, match", [
    ({"model": {"resolution": 48}}, "power of two"),
    ({"model": {"resolution": 16}}, "power of two"),
    ({"model": {"modconv": "fast"}}, "modconv"),
    ({"model": {"resolutoin": 64}}, "unknown key"),
    ({"optim": {}}, "unknown config section"),
    ({"train": {"batch_size": "16"}}, "integer"),
    ({"train": {"batch_size": 1}}, "batch_size"),
    ({"train": {"batch": 1}}, "batch_size"),  # the name of earlier versions is read as batch_size
    ({"train": {"precision": "fp16"}}, "train.precision must be one of fp32, tf32, bf16"),
    ({"loss": {"consistency": 1}}, "true or false"),
])
def test_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        FurryGANConfig.from_dict(data)


def test_preset_errors():
    with pytest.raises(ConfigError, match="tiny-32"):
        get_preset("tiny-64")
    assert get_preset("tiny").model == get_preset("tiny-32").model  # the built-in model's preset
    with pytest.raises(ConfigError, match="unknown config key"):
        tiny(**{"train.bacth": 4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().batch_size = 4


# ============================================================================ networks
def test_official_parameter_counts():
    # furrygan.md section 5: the official model at 32 px (latent 512, channel multiplier 2, mask
    # predictor on) has a 12.3M-parameter generator and a 21.8M-parameter discriminator.
    m = ModelConfig(resolution=32)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert round(count(FurryGANGenerator(m)) / 1e6, 1) == 12.3
    assert round(count(FurryGANDiscriminator(m)) / 1e6, 1) == 21.8


def test_generator_output_shapes_and_ranges():
    cfg = tiny().model
    G = FurryGANGenerator(cfg)
    z = torch.randn(2, G.z_dim, requires_grad=True)
    out = G(z, fine_gamma=0.5)
    assert len(out) == 2 and G.z_dim == 96 and G.num_ws == cfg.num_ws == 8
    for name in ("fg", "bg", "composite"):
        t = getattr(out, name)
        assert t.shape == (2, 3, 32, 32) and t.min() >= -1 and t.max() <= 1
    for name in ("alpha_coarse", "alpha_fine", "alpha"):
        t = getattr(out, name)
        assert t.shape == (2, 1, 32, 32) and t.min() >= 0 and t.max() <= 1
    # Per-sample min-max: each coarse and fine mask spans exactly [0, 1].
    for m in (out.alpha_coarse, out.alpha_fine):
        lo, hi = m.flatten(1).aminmax(dim=1)
        assert torch.allclose(lo, torch.zeros(2)) and torch.allclose(hi, torch.ones(2))
    assert torch.equal(out.alpha, (out.alpha_coarse + 0.5 * out.alpha_fine).clamp(0, 1))  # Eq. 3
    assert torch.allclose(out.composite, blend(out.fg, out.alpha, out.bg))  # Eq. 1
    assert out.w.shape == (2, 8, 96) and out.w_bg.shape == (2, 8, 32)
    (out.composite.mean() + out.alpha.mean()).backward()
    assert z.grad is not None and all(p.grad is not None for p in G.synthesis_bg.parameters())


def test_background_latent_is_front_part_of_z():
    G = FurryGANGenerator(tiny().model)
    z = torch.randn(2, G.z_dim)
    z_back = z.clone()
    z_back[:, G.z_bg_dim:] = torch.randn(2, G.z_dim - G.z_bg_dim)
    a, b = G(z, noise_mode="const"), G(z_back, noise_mode="const")
    assert torch.equal(a.bg, b.bg) and not torch.allclose(a.fg, b.fg)
    z_front = z.clone()
    z_front[:, : G.z_bg_dim] += 1.0
    assert not torch.allclose(G(z_front, noise_mode="const").bg, a.bg)


def test_modconv_formulations_agree():
    base = tiny().model
    G1 = FurryGANGenerator(dataclasses.replace(base, modconv="grouped"))
    G2 = FurryGANGenerator(dataclasses.replace(base, modconv="activations"))
    G2.load_state_dict(G1.state_dict())
    z = torch.randn(3, G1.z_dim)
    outs = []
    for G in (G1, G2):
        out = G(z, noise_mode="const")
        (out.composite.square().mean() + out.alpha.mean()).backward()
        outs.append((out, [p.grad.clone() for p in G.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = outs
    for name in ("fg", "bg", "alpha_coarse", "alpha_fine", "composite"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name
    assert len(ga) == len(gb) and all(torch.allclose(x, y, atol=1e-4, rtol=1e-3) for x, y in zip(ga, gb, strict=True))


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_matches_reference(upsample):
    # Reference: Eq. 1-3 of StyleGAN2 written out with an explicit per-sample loop.
    conv = ModulatedConv2d(4, 5, 3, 6, upsample=upsample, modconv="activations")
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 6)
    y = conv(x, w)
    assert y.shape == (2, 5, 16 if upsample else 8, 16 if upsample else 8)
    s = conv.affine(w)
    for i in range(2):
        weight = conv.weight * conv.weight_gain * s[i].view(1, -1, 1, 1)
        weight = weight * torch.rsqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:
            ref = conv.blur(torch.nn.functional.conv_transpose2d(x[i : i + 1], weight.transpose(0, 1), stride=2))
        else:
            ref = torch.nn.functional.conv2d(x[i : i + 1], weight, padding=1)
        assert torch.allclose(y[i : i + 1], ref, atol=1e-5)


def test_blur_preserves_constants():
    x = torch.full((1, 2, 6, 6), 0.7)
    assert torch.allclose(Blur((1, 3, 3, 1), pad=(0, 0))(x), torch.full((1, 2, 3, 3), 0.7))
    assert torch.allclose(Blur((1, 3, 3, 1), pad=(1, 1), gain=4.0).kernel.sum(), torch.tensor(4.0))


def test_truncation_uses_stored_w_avg():
    G = FurryGANGenerator(tiny().model)
    assert {"w_avg_fg", "w_avg_bg"} <= set(G.state_dict())
    before = G.w_avg_fg.clone()
    with torch.no_grad():
        G.mapping_fg.layers[0].bias.add_(1.0)
    G.update_w_avg(n=256)
    assert not torch.allclose(before, G.w_avg_fg)
    ws_fg, ws_bg = G.mapping(torch.randn(3, G.z_dim), truncation_psi=0.0)
    assert torch.allclose(ws_fg, G.w_avg_fg.expand_as(ws_fg)) and torch.allclose(ws_bg, G.w_avg_bg.expand_as(ws_bg))
    with pytest.raises(ValueError, match=r"z must be \[N, 96\]"):
        G(torch.randn(2, 128))


def test_generator_other_resolution_and_no_fine_mask():
    cfg = dataclasses.replace(tiny().model, resolution=64, fine_mask=False)
    G = FurryGANGenerator(cfg)
    assert G.mask_fine is None and G.num_ws == 10
    out = G(torch.randn(2, G.z_dim), fine_gamma=1.0)
    assert out.fg.shape == (2, 3, 64, 64)
    assert torch.equal(out.alpha, out.alpha_coarse) and not out.alpha_fine.any()


def test_to_layered():
    G = FurryGANGenerator(tiny().model)
    with torch.no_grad():
        out = G(torch.randn(2, G.z_dim))
    layered = out.to_layered(1)
    assert isinstance(layered, LayeredImage) and layered.size == (32, 32) and len(layered) == 1
    assert layered.metadata["method"] == "furrygan"
    expected = ((out.composite[1] + 1) / 2).permute(1, 2, 0).numpy()
    assert abs(layered.composite()[..., :3] - expected).max() < 1e-5
    assert abs(layered.layers[0].alpha - out.alpha[1, 0].numpy()).max() == 0


def test_discriminator_and_mask_predictor():
    cfg = tiny().model
    D = FurryGANDiscriminator(cfg)
    x = torch.rand(3, 3, 32, 32) * 2 - 1  # 3 samples: minibatch-stddev group of 3
    out = D(x)
    assert out.logits.shape == (3,) and out.mask.shape == (3, 1, 16, 16)
    assert out.mask.min() == 0 and torch.allclose(out.mask.flatten(1).amax(1), torch.ones(3))
    assert torch.allclose(D.predict_mask(x), out.mask)
    D64 = FurryGANDiscriminator(dataclasses.replace(cfg, resolution=64, mask_predictor=False))
    out = D64(torch.zeros(2, 3, 64, 64))
    assert out.logits.shape == (2,) and out.mask is None
    with pytest.raises(RuntimeError, match="no mask predictor"):
        D64.predict_mask(torch.zeros(2, 3, 64, 64))


def test_minibatch_stddev():
    x = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 2, 2)
    y = minibatch_stddev(x, group=4, channels=1)  # 6 samples -> groups of 3: {0, 2, 4} and {1, 3, 5}
    assert y.shape == (6, 3, 2, 2)
    assert torch.allclose(y[:, 2], torch.full((6, 2, 2), math.sqrt(8 / 3 + 1e-8)))  # std of {0, 2, 4}


# ============================================================================ loss terms
def test_adversarial_losses():
    ln3 = math.log(3.0)
    # softplus(-0) = ln 2, softplus(-ln 3) = ln(1 + 1/3) = ln(4/3); mean = ln(8/3) / 2, for reals and fakes.
    real, fake = torch.tensor([0.0, ln3]), torch.tensor([0.0, -ln3])
    assert d_logistic_loss(real, fake).item() == pytest.approx(math.log(8 / 3))  # 0.980829
    assert g_nonsaturating_loss(torch.tensor([0.0, ln3])).item() == pytest.approx(math.log(8 / 3) / 2)  # 0.490415


def test_r1_penalty():
    # D(x_n) = c_n * sum(x_n^2) / 2 with c = (1, 3) at x = 1: the gradient c_n x_n is c_n at each of
    # the 4 pixels, ||grad||^2 = 4 * 1 = 4 and 4 * 9 = 36; mean over samples = 20.
    x = torch.ones(2, 1, 2, 2, requires_grad=True)
    logits = (x.square() * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)).sum(dim=(1, 2, 3)) / 2
    penalty = r1_penalty(x, logits)
    assert penalty.item() == pytest.approx(20.0) and penalty.requires_grad


def test_mask_prediction_loss():
    # Eq. 4. Bilinear 4x4 -> 2x2 (align_corners=False) samples at source 0.5 and 2.5: the mean of
    # each 2x2 block. Blocks: [[1,1],[1,1]] -> 1, zeros -> 0, zeros -> 0, [[0,0],[1,1]] -> 0.5.
    alpha = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]).view(1, 1, 4, 4)
    pred = torch.tensor([[0.5, 0.0], [0.0, 0.5]]).view(1, 1, 2, 2)
    # Squared errors (0.5^2, 0, 0, 0) -> mean 0.0625.
    assert mask_prediction_loss(alpha, pred).item() == pytest.approx(0.0625)


def test_mask_consistency_loss_stops_gradient():
    # Eq. 5: (1 - 0.5)^2 and (0 - 0.5)^2 on 2 of 4 pixels -> 0.125; d/d(comp) = 2 (comp - fg) / 4.
    pred_fg = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2).requires_grad_()
    pred_comp = torch.tensor([[0.5, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2).requires_grad_()
    loss = mask_consistency_loss(pred_fg, pred_comp)
    assert loss.item() == pytest.approx(0.125)
    loss.backward()
    assert pred_fg.grad is None
    assert torch.allclose(pred_comp.grad.view(-1), torch.tensor([-0.25, 0.25, 0.0, 0.0]))


def test_coarse_mask_losses():
    m = torch.tensor([[0.0, 0.2, 0.2, 0.0], [0.5, 0.9, 0.1, 0.5]]).view(2, 1, 2, 2)
    # Eq. 6: min(m, 1 - m) = (0, .2, .2, 0) and (.5, .1, .1, .5): means 0.1 and 0.3 -> 0.2.
    assert binarization_loss(m).item() == pytest.approx(0.2)
    # Eq. 7, per sample: relu(0.35 - 0.1) = 0.25 and relu(0.35 - 0.5) = 0 -> mean 0.125.
    assert coarse_area_loss(m, 0.35).item() == pytest.approx(0.125)
    # Eq. 8 with the official weights: 5 * 0.2 + 5 * 0.125 = 1.625; after the decay 0.5 * 0.2 + 0.625 = 0.725.
    assert coarse_mask_loss(m, 0.35, 5.0, 5.0).item() == pytest.approx(1.625)
    assert coarse_mask_loss(m, 0.35, 0.5, 5.0).item() == pytest.approx(0.725)


def test_fine_area_loss():
    # Eq. 9 (official): residual = clip(m - m_coarse, 0, 1). Sample 0: (0.1, 0.4, 0, 0) (the last is
    # clipped from -0.3), mean 0.125 -> relu(0.99 - (1 - 0.125)) = 0.115. Sample 1: residual 0 ->
    # relu(0.99 - 1) = 0. Mean over the batch: 0.0575.
    alpha = torch.tensor([[0.5, 1.0, 0.3, 0.2], [0.3, 0.3, 0.3, 0.3]]).view(2, 1, 2, 2)
    coarse = torch.tensor([[0.4, 0.6, 0.3, 0.5], [0.3, 0.3, 0.3, 0.3]]).view(2, 1, 2, 2)
    assert fine_area_loss(alpha, coarse, 0.01).item() == pytest.approx(0.0575)


@pytest.mark.parametrize("detach_target", [False, True])
def test_background_participation_loss(detach_target):
    # Eq. 10 on two pixels: fg = (1, 1), bg = (-1, 0), m = (0.5, 1): comp = (0, 1), (comp - bg)^2 = (1, 1)
    # -> 1. d/dm = 2 (comp - bg)(fg - bg) / 2 = (2, 1); d/dbg through the undetached target = -(comp - bg) = -1.
    fg = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2).requires_grad_()
    bg = torch.tensor([-1.0, 0.0]).view(1, 1, 1, 2).requires_grad_()
    alpha = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2).requires_grad_()
    loss = background_participation_loss(fg, bg, alpha, detach_target=detach_target)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.allclose(alpha.grad.view(-1), torch.tensor([2.0, 1.0])) and fg.grad is None
    assert bg.grad is None if detach_target else torch.allclose(bg.grad.view(-1), torch.tensor([-1.0, -1.0]))


# ============================================================================ training objective
def _grads(net):
    return [p for p in net.parameters() if p.grad is not None]


def test_loss_phases_touch_only_their_network():
    cfg = tiny()
    G, D = FurryGANGenerator(cfg.model), FurryGANDiscriminator(cfg.model)
    loss = FurryGANLoss(G, D, cfg)
    real, z = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, G.z_dim)
    step = cfg.loss.fine_fade_in_steps  # gamma = 1, and every periodic term is due
    stats = loss.accumulate_gradients("G", real, z, step)
    assert set(stats) == {"G/adv", "G/coarse", "G/fine", "G/consistency", "G/bg_participation", "G/total"}
    assert all(torch.isfinite(v) for v in stats.values()) and not _grads(D)
    assert len(_grads(G)) == len(list(G.parameters()))
    assert all(p.requires_grad for p in D.parameters())
    G.zero_grad(set_to_none=True)
    stats = loss.accumulate_gradients("D", real, z, step + 1)
    assert set(stats) == {"D/adv", "D/pred", "D/total"} and not _grads(G) and _grads(D)
    stats = loss.accumulate_gradients("Dreg", real, z, step)
    assert set(stats) == {"Dreg/r1", "Dreg/total"} and stats["Dreg/r1"] > 0 and not _grads(G)
    # Odd step: the every-other-iteration terms are skipped.
    assert set(loss.accumulate_gradients("G", real, z, step + 1)) == {"G/adv", "G/coarse", "G/fine", "G/total"}


def test_dual_fake_input_split():
    cfg = tiny(**{"train.batch_size": 4})
    G, D = FurryGANGenerator(cfg.model), FurryGANDiscriminator(cfg.model)
    fake = FurryGANLoss(G, D, cfg).generate(torch.randn(4, G.z_dim), step=0)
    assert len(fake.composites) == 2 and fake.fg_only.fg.shape[0] == 2
    assert fake.images.shape == (4, 3, 32, 32) and fake.alpha_coarse.shape == (4, 1, 32, 32)
    assert torch.equal(fake.composites.alpha, fake.composites.alpha_coarse)  # gamma(0) = 0
    cfg = tiny(**{"train.batch_size": 4, "loss.dual_fake_input": False})
    fake = FurryGANLoss(G, D, cfg).generate(torch.randn(4, G.z_dim), step=0)
    assert len(fake.composites) == 4 and fake.fg_only.fg.shape[0] == 0


@pytest.mark.parametrize("override, absent", [
    ({"model.fine_mask": False}, {"G/fine"}),
    ({"loss.consistency": False}, {"G/consistency"}),
    ({"loss.bg_participation": False}, {"G/bg_participation"}),
    ({"model.mask_predictor": False}, {"G/consistency", "D/pred"}),
])
def test_ablation_switches(override, absent):
    cfg = tiny(**override)
    G, D = FurryGANGenerator(cfg.model), FurryGANDiscriminator(cfg.model)
    loss = FurryGANLoss(G, D, cfg)
    real, z = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, G.z_dim)
    keys = set(loss.accumulate_gradients("G", real, z, 0)) | set(loss.accumulate_gradients("D", real, z, 0))
    assert not keys & absent and {"G/adv", "G/coarse", "D/adv"} <= keys


# ============================================================================ export and training
def test_save_pretrained_round_trip(tmp_path):
    cfg = tiny()
    G = FurryGANGenerator(cfg.model).eval()
    G.update_w_avg(n=64, seed=3)
    G.save_pretrained(tmp_path / "export", cfg)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["config.json", "model.safetensors"]
    G2 = FurryGANGenerator.from_pretrained(tmp_path / "export")
    assert G2.cfg == cfg.model and torch.equal(G2.w_avg_fg, G.w_avg_fg)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        a, b = G(z, truncation_psi=0.7, noise_mode="const"), G2(z, truncation_psi=0.7, noise_mode="const")
    for name in ("fg", "bg", "alpha", "composite"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    with pytest.raises(InputFileError, match="missing config.json"):
        FurryGANGenerator.from_pretrained(tmp_path)


def _train(tmp_path, name, stop_after_s=None, **overrides):
    settings = {"train.total_steps": 3, "train.checkpoint_every": 2, "train.preview_every": 2, "train.log_every": 1,
                "loss.r1_interval": 2, **overrides}
    data = TensorDataset(torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    return training_loop(tiny(**settings), data, tmp_path / name, show_progress=False, stop_after_s=stop_after_s)


def test_time_limit_saves_and_resumes(tmp_path):
    # A limit already passed stops after the first step, saving it (off the checkpoint_every grid).
    first = _train(tmp_path, "run", stop_after_s=0.0)
    assert (first.step, first.timed_out) == (1, True)
    assert torch.load(tmp_path / "run" / STATE_NAME, weights_only=True)["step"] == 1
    assert (tmp_path / "run" / "snapshots" / "step-0000001" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 1
    rest = _train(tmp_path, "run")  # the same command again: resumes and finishes
    assert (rest.step, rest.timed_out) == (3, False)


def test_bf16_training_step(tmp_path):
    # bfloat16 autocast (train.precision) on the CPU: finite losses, float32 weights and exports.
    result = _train(tmp_path, "bf16", **{"train.precision": "bf16", "train.total_steps": 2})
    _train(tmp_path, "fp32", **{"train.total_steps": 2})
    logs = {name: [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("bf16", "fp32")}
    assert all(math.isfinite(v) for record in logs["bf16"] for k, v in record.items() if "/" in k)
    # The first step's losses: the same to bfloat16's precision, but not identical (autocast was on).
    first = {name: log[0]["D/adv"] for name, log in logs.items()}
    assert first["bf16"] != first["fp32"] and first["bf16"] == pytest.approx(first["fp32"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in result.networks["G"].parameters())
    exported = FurryGANGenerator.from_pretrained(tmp_path / "bf16" / "export")
    assert all(p.dtype == torch.float32 for p in exported.parameters())


def test_training_resumes_exactly(tmp_path):
    straight = _train(tmp_path, "straight")
    assert (straight.step, straight.nimg) == (3, 6)
    assert _train(tmp_path, "resumed", **{"train.total_steps": 2}).step == 2
    resumed = _train(tmp_path, "resumed")  # the same command with more steps: resumes at step 2
    assert (resumed.step, resumed.nimg) == (3, 6)
    a = torch.load(tmp_path / "straight" / STATE_NAME, weights_only=True)
    b = torch.load(tmp_path / "resumed" / STATE_NAME, weights_only=True)
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    run = tmp_path / "resumed"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and "Dreg/r1" in log[0] and "G/consistency" in log[2]
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step-0000002.png", "step-0000003.png"]
    assert FurryGANConfig.load_json(run / "training-config.json").train.total_steps == 3
    G = FurryGANGenerator.from_pretrained(run / "export")
    assert all(torch.equal(G.state_dict()[k], b["G_ema"][k]) for k in b["G_ema"])
    # Every save's export is kept (official: every checkpoint), the last one equal to export/.
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step-0000002", "step-0000003"]
    last = FurryGANGenerator.from_pretrained(resolve_checkpoint(run / "snapshots" / "step-0000003"))
    assert all(torch.equal(last.state_dict()[k], b["G_ema"][k]) for k in b["G_ema"])
    assert not (_train(tmp_path, "latest-only", **{"train.keep_snapshots": False}).run_dir / "snapshots").exists()
    assert _train(tmp_path, "resumed").step == 3  # nothing left to do
    with pytest.raises(ConfigError, match=r"different configuration: loss.min_mask \(0.35 -> 0.5\)"):
        _train(tmp_path, "resumed", **{"loss.min_mask": 0.5})


def test_lr_rampdown_extends_a_run(tmp_path):
    # A run extended from its step-2 checkpoint with a 2-step ramp-down is the run started with it.
    ramp = {"train.total_steps": 4, "train.lr_rampdown_steps": 2}
    _train(tmp_path, "straight", **ramp)
    _train(tmp_path, "extended", **{"train.total_steps": 2})
    _train(tmp_path, "extended", **ramp)
    a = torch.load(tmp_path / "straight" / STATE_NAME, weights_only=True)
    b = torch.load(tmp_path / "extended" / STATE_NAME, weights_only=True)
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    base = tiny(**ramp).optimizer_kwargs("G")["lr"]
    assert b["opt_G"]["param_groups"][0]["lr"] == pytest.approx(base * 0.5)  # step 3 of 4: (4 - 3) / 2
    log = [json.loads(line) for line in (tmp_path / "extended" / "log.jsonl").read_text().splitlines()]
    assert [r["lr_scale"] for r in log] == [1.0, 1.0, 1.0, 0.5]


def test_divergence_stops_and_keeps_checkpoint(tmp_path):
    _train(tmp_path, "run", **{"train.total_steps": 2})
    with pytest.raises(TrainingDivergedError, match=r"step 3: loss .* exceeds max_loss=1e-09.*\(step 2\) is kept"):
        _train(tmp_path, "run", **{"train.total_steps": 4, "train.max_loss": 1e-9})
    assert torch.load(tmp_path / "run" / STATE_NAME, weights_only=True)["step"] == 2
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["diverged"] is True


def _as_old_layout(run):
    """Turn a run folder into the layout and key names of earlier lamina versions."""
    old = {"batch_size": "batch", "checkpoint_every": "save_every", "preview_every": "image_every",
           "preview_psi": "sample_psi"}
    cfg = json.loads((run / "training-config.json").read_text())
    cfg["train"] = {old.get(k, k): v for k, v in cfg["train"].items()}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "training-config.json").unlink()
    state = torch.load(run / STATE_NAME, weights_only=True)
    state["config"] = cfg
    torch.save(state, run / STATE_NAME)
    (run / "export").rename(run / "pretrained")
    (run / "previews").rename(run / "samples")


def test_old_run_folder_is_migrated_and_resumes(tmp_path, capsys):
    _train(tmp_path, "straight")
    _train(tmp_path, "old", **{"train.total_steps": 2})
    _as_old_layout(tmp_path / "old")
    assert resolve_checkpoint(tmp_path / "old") == tmp_path / "old" / "pretrained"  # still loadable as it is
    assert _train(tmp_path, "old").step == 3
    assert "migrated the run folder" in capsys.readouterr().out
    run = tmp_path / "old"
    assert sorted(p.name for p in run.iterdir()) == ["export", "log.jsonl", "losses.png", "previews", "snapshots",
                                                      "training-config.json", "training-state.pt"]
    a = torch.load(tmp_path / "straight" / STATE_NAME, weights_only=True)
    b = torch.load(run / STATE_NAME, weights_only=True)
    assert all(torch.equal(a["G_ema"][k], b["G_ema"][k]) for k in a["G_ema"])
    assert json.loads((run / "training-config.json").read_text())["train"]["batch_size"] == 2


def test_killed_save_leftovers_and_stale_export(tmp_path):
    # A kill during a save leaves a temporary; a kill between state and export leaves an older export.
    _train(tmp_path, "run", **{"train.total_steps": 2})
    run = tmp_path / "run"
    (run / ".training-state.pt.x1y2.lamina-tmp").mkdir()
    (run / ".training-state.pt.x1y2.lamina-tmp" / "training-state.pt").write_bytes(b"partial")
    shutil.rmtree(run / "export")
    assert _train(tmp_path, "run", **{"train.total_steps": 2}).step == 2  # finished: only the export is re-made
    assert not list(run.glob(".*lamina-tmp"))
    state = torch.load(run / STATE_NAME, weights_only=True)
    G = FurryGANGenerator.from_pretrained(run / "export")
    assert all(torch.equal(G.state_dict()[k], state["G_ema"][k]) for k in state["G_ema"])
    # An export older than the state (the state saved, then the kill): re-made on the next start.
    stamp = (run / STATE_NAME).stat().st_mtime_ns
    for f in (run / "export").iterdir():
        os.utime(f, ns=(stamp - 10**9, stamp - 10**9))
    _train(tmp_path, "run", **{"train.total_steps": 2})
    assert min(f.stat().st_mtime_ns for f in (run / "export").iterdir()) > stamp
