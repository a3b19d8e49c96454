"""BFS model side: joint adapter on a stock FLUX transformer, official checkpoint layout, transparency VAE,
components and BFSPipeline. Tiny random components built here (offline), saved and loaded back through the
real loaders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from lamina.bfs import checkpoint as ckpt  # noqa: E402
from lamina.bfs import components as comp  # noqa: E402
from lamina.bfs.joint import BFSJointAdapter, BFSJointProcessor, image_rotary  # noqa: E402
from lamina.bfs.pipeline import (  # noqa: E402
    BFSPipeline,
    encode_prompts,
    latent_image_ids,
    load_pipeline,
    pack_latents,
    pack_mask,
    predict_velocity,
    prepare_fill_condition,
    unpack_latents,
    working_size,
)
from lamina.errors import LaminaError  # noqa: E402
from lamina.layers import LayeredImage  # noqa: E402

#: Smaller than the ``tiny`` preset, for speed (diffusers' own Flux Fill tests use sizes like these).
SMALL = dataclasses.replace(
    comp.get_preset("tiny-kl"), name="test", resolution=32, vae_block_out_channels=(8, 16, 16), vae_norm_num_groups=8,
    latent_channels=4, num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=16,
    joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8), text_hidden_size=32,
    text_intermediate_size=37, joint_rank=4, joint_alpha=4.0, inference_steps=2,
)
CAPTION = "a red star with a shadow"


@pytest.fixture(scope="module")
def parts():
    return comp.build_components(SMALL, seed=0)


def _inputs(parts, batch=1, seed=0, size=32):
    """Packed latents of both branches, condition, text and ids for one predict_velocity call."""
    g = torch.Generator().manual_seed(seed)
    factor = SMALL.vae_scale_factor
    grid = size // factor
    tokens = (grid // 2) ** 2
    background = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, size, size)
    mask[..., 8:24, 8:24] = 1
    condition = prepare_fill_condition(parts["vae"], background, mask)
    text = encode_prompts([CAPTION] * batch, parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"],
                          parts["text_encoder_2"], SMALL.max_sequence_length)
    lx = torch.randn(batch, tokens, 4 * SMALL.latent_channels, generator=g)
    ly = torch.randn(batch, tokens, 4 * SMALL.latent_channels, generator=g)
    return dict(latents_x=lx, latents_y=ly, condition=condition, prompt_embeds=text.prompt_embeds,
                pooled=text.pooled, text_ids=text.text_ids, img_ids=latent_image_ids(grid, grid))


def _randomise(adapter, seed=1, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def _stock(transformer, inputs, timestep=0.6, guidance=None):
    """The stock transformer on the [x; y] batch, called directly (no lamina code)."""
    hidden = torch.cat([torch.cat([inputs["latents_x"], inputs["condition"]], -1),
                        torch.cat([inputs["latents_y"], inputs["condition"]], -1)])
    b = hidden.shape[0]
    return transformer(hidden_states=hidden, encoder_hidden_states=inputs["prompt_embeds"].repeat(2, 1, 1),
                       pooled_projections=inputs["pooled"].repeat(2, 1), timestep=torch.full((b,), timestep),
                       img_ids=inputs["img_ids"], txt_ids=inputs["text_ids"],
                       guidance=None if guidance is None else torch.full((b,), guidance), return_dict=False)[0]


# ---------------------------------------------------------------------------- joint adapter


@pytest.mark.parametrize("guidance_embeds", [False, True])
def test_adapter_off_or_zero_post_reproduces_stock_exactly(parts, tmp_path, guidance_embeds):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(3)
    config = dataclasses.replace(SMALL, guidance_embeds=guidance_embeds)
    comp.build_transformer(config).save_pretrained(tmp_path / "tr")
    transformer = FluxTransformer2DModel.from_pretrained(tmp_path / "tr")
    guidance = 3.5 if guidance_embeds else None
    inputs = _inputs(parts)
    with torch.no_grad():
        stock = _stock(transformer, inputs, guidance=guidance)
        joint = comp.build_joint(config, transformer)
        joint.save_pretrained(tmp_path / "joint")
        joint = BFSJointAdapter.from_pretrained(tmp_path / "joint")
        ours = predict_velocity(transformer, joint, timestep=0.6, guidance=guidance, **inputs)
        assert joint.is_attached(transformer)
        assert torch.equal(torch.cat([ours.velocity_x, ours.velocity_y]), stock)  # zero post: bit for bit
        _randomise(joint)
        coupled = predict_velocity(transformer, joint, timestep=0.6, guidance=guidance, **inputs)
        assert not torch.allclose(coupled.velocity_x, ours.velocity_x, atol=1e-4)  # the joint path does act
        assert not torch.allclose(coupled.velocity_y, ours.velocity_y, atol=1e-4)
        off = predict_velocity(transformer, None, timestep=0.6, guidance=guidance, **inputs)  # bfs_joint=False
        assert torch.equal(torch.cat([off.velocity_x, off.velocity_y]), stock)
        joint.enabled = False
        assert torch.equal(_stock(transformer, inputs, guidance=guidance), stock)
        joint.enabled = True
        joint.detach(transformer)
        assert not any(isinstance(p, BFSJointProcessor) for p in transformer.attn_processors.values())
        assert torch.equal(_stock(transformer, inputs, guidance=guidance), stock)


def test_branch_routing_of_the_loras(parts):
    """xy (ours ``x``) acts on the composite rows' features wherever they appear: as queries (and through
    ``to_out``) for J_x, as keys/values for J_y; yx (``y``) likewise for the foreground rows."""
    transformer = parts["transformer"]
    joint = BFSJointAdapter.for_transformer(transformer, rank=4, lora_alpha=4.0, share_base=False)
    _randomise(joint)
    block = joint.blocks["d0"]
    attn = transformer.transformer_blocks[0].attn
    tokens = torch.randn(4, 16, SMALL.inner_dim)  # rows [x0, x1, y0, y1]
    with torch.no_grad():
        base = block.delta(attn, tokens, None, 1.0)
        changed = {}
        for branch, proj in [("x", "q"), ("x", "k"), ("x", "out"), ("y", "q"), ("y", "v"), ("y", "out")]:
            lora = block.lora[branch][proj]
            saved = lora.up.weight.clone()
            lora.up.weight.add_(0.5)
            moved = (block.delta(attn, tokens, None, 1.0) - base).abs().amax(dim=(1, 2)) > 1e-6
            lora.up.weight.copy_(saved)
            changed[branch, proj] = moved.tolist()
    composite_rows, foreground_rows = [True, True, False, False], [False, False, True, True]
    assert changed["x", "q"] == composite_rows and changed["x", "out"] == composite_rows
    assert changed["x", "k"] == foreground_rows  # x's keys serve the foreground's queries
    assert changed["y", "q"] == foreground_rows and changed["y", "out"] == foreground_rows
    assert changed["y", "v"] == composite_rows


def test_joint_delta_matches_restated_block_math(parts):
    """The dual-block delta equals a plain restatement: projections + branch LoRA, q/k RMS norm, RoPE, SDPA."""
    import torch.nn.functional as nnf
    from diffusers.models.embeddings import apply_rotary_emb

    transformer = parts["transformer"]
    joint = BFSJointAdapter.for_transformer(transformer, rank=4, lora_alpha=8.0, share_base=True)
    _randomise(joint)
    block = joint.blocks["d0"]
    attn = transformer.transformer_blocks[0].attn
    ids = latent_image_ids(8, 8)
    rope = transformer.pos_embed(ids)
    tokens = torch.randn(2, 16, SMALL.inner_dim)
    heads, dim = SMALL.num_attention_heads, SMALL.attention_head_dim

    def lin(layer, h, branch, name):
        lora = block.lora[branch][name]
        return nnf.linear(h, layer.weight, layer.bias) + 2.0 * (h @ lora.down.weight.T @ lora.up.weight.T)

    def attend(q_in, kv_in, qb, kb):
        q = lin(attn.to_q, q_in, qb, "q").view(1, 16, heads, dim)
        k = lin(attn.to_k, kv_in, kb, "k").view(1, 16, heads, dim)
        v = lin(attn.to_v, kv_in, kb, "v").view(1, 16, heads, dim)
        q = apply_rotary_emb(attn.norm_q(q), rope, sequence_dim=1).transpose(1, 2)
        k = apply_rotary_emb(attn.norm_k(k), rope, sequence_dim=1).transpose(1, 2)
        o = nnf.scaled_dot_product_attention(q, k, v.transpose(1, 2)).transpose(1, 2).reshape(1, 16, heads * dim)
        return lin(attn.to_out[0], o, qb, "out")

    with torch.no_grad():
        x, y = tokens[:1], tokens[1:]
        expected = 0.5 * nnf.linear(torch.cat([attend(x, y, "x", "y"), attend(y, x, "y", "x")]), block.post.weight)
        got = block.delta(attn, tokens, rope, 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_rotary_slice_is_the_image_only_embedding(parts):
    transformer = parts["transformer"]
    joint = BFSJointAdapter.for_transformer(transformer, rank=4, share_base=True)
    inputs = _inputs(parts)
    seen = {}
    processor = None

    class Spy(BFSJointProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     image_rotary_emb=None, **kwargs):
            seen["rope"], seen["tokens"] = image_rotary_emb, hidden_states.shape[1]
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb,
                                    **kwargs)

    joint.attach(transformer)
    attn = transformer.transformer_blocks[0].attn
    processor = attn.processor
    attn.set_processor(Spy(joint, "d0", processor.base))
    with torch.no_grad():
        predict_velocity(transformer, joint, timestep=0.5, **inputs)
    joint.detach(transformer)
    cos, sin = image_rotary(seen["rope"], seen["tokens"])
    ref_cos, ref_sin = transformer.pos_embed(inputs["img_ids"])
    assert seen["tokens"] == inputs["img_ids"].shape[0] and seen["rope"][0].shape[0] > seen["tokens"]
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


@pytest.mark.parametrize("share_base", [True, False])
def test_forward_backward_reaches_only_the_adapter_with_checkpointing(parts, share_base):
    transformer = parts["transformer"]
    joint = BFSJointAdapter.for_transformer(transformer, rank=4, share_base=share_base, single_tokens="image")
    _randomise(joint)
    transformer.requires_grad_(False)
    inputs = _inputs(parts, batch=2)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        plain = predict_velocity(transformer, joint, timestep=t, **inputs)
    transformer.enable_gradient_checkpointing()
    transformer.train()
    try:
        out = predict_velocity(transformer, joint, timestep=t, **inputs)
        (out.velocity_x.square().mean() + out.velocity_y.square().mean()).backward()
    finally:
        transformer.disable_gradient_checkpointing()
        transformer.eval()
        joint.detach(transformer)
    torch.testing.assert_close(out.velocity_x, plain.velocity_x, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in transformer.parameters())
    assert joint.blocks["d0"].post.weight.grad.abs().sum() > 0
    missing = [n for n, p in joint.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_adapter_rejects_a_transformer_of_another_shape(parts):
    other = comp.build_transformer(dataclasses.replace(SMALL, num_single_layers=2))
    joint = BFSJointAdapter.for_transformer(parts["transformer"], rank=4)
    with pytest.raises(LaminaError, match="shaped for"):
        joint.attach(other)


# ---------------------------------------------------------------------------- official checkpoint layout


def test_official_checkpoint_layout_loads_strictly(parts):
    transformer = parts["transformer"]
    source = BFSJointAdapter.for_transformer(transformer, rank=4, share_base=True)
    _randomise(source)
    official = ckpt.to_official_state_dict(source)
    for key in ("transformer_blocks.0.attn1n.to_q.lora_A.xy_lora.weight",
                "transformer_blocks.0.attn1n.to_out.0.lora_B.yx_lora.weight",
                "transformer_blocks.0.conv1n.weight", "single_transformer_blocks.0.attn1n.to_v.lora_A.yx_lora.weight",
                "single_transformer_blocks.0.conv1n.weight"):
        assert key in official
    assert not any("single_transformer_blocks.0.attn1n.to_out" in k for k in official)
    # the official release also stores the (frozen) attn1n base layers; equal to the base -> dropped
    attn = transformer.transformer_blocks[0].attn
    official["transformer_blocks.0.attn1n.to_q.base_layer.weight"] = attn.to_q.weight.detach().clone()
    official = {"transformer." + k: v for k, v in official.items()}

    target = BFSJointAdapter.for_transformer(transformer, rank=4, share_base=True)
    report = ckpt.load_bfs_checkpoint(target, official, transformer=transformer)
    assert report.dropped_equal_base == 1 and not report.copies
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

    with pytest.raises(LaminaError, match="unknown keys: transformer_blocks.0.attn1n.to_q.lora_A.zz_lora.weight"):
        ckpt.load_bfs_checkpoint(target, {**official, "transformer_blocks.0.attn1n.to_q.lora_A.zz_lora.weight":
                                          torch.zeros(4, SMALL.inner_dim)}, transformer=transformer)
    incomplete = dict(official)
    del incomplete["transformer.single_transformer_blocks.0.conv1n.weight"]
    with pytest.raises(LaminaError, match=r"1 adapter weights missing: blocks.s0.post.weight"):
        ckpt.load_bfs_checkpoint(target, incomplete, transformer=transformer)

    # different base-layer copies: the adapter switches to its own copies and loads them
    changed = dict(official)
    changed["transformer.transformer_blocks.0.attn1n.to_q.base_layer.weight"] = attn.to_q.weight.detach() + 1
    with pytest.raises(LaminaError, match="missing"):  # copies need every base layer, not just one
        ckpt.load_bfs_checkpoint(BFSJointAdapter.for_transformer(transformer, rank=4), changed, transformer)
    full = ckpt.to_official_state_dict(BFSJointAdapter.for_transformer(transformer, rank=4, share_base=False))
    full = {"transformer." + k: v for k, v in full.items() if "base_layer" in k or "norm_" in k}
    full["transformer.transformer_blocks.0.attn1n.to_q.base_layer.weight"] = attn.to_q.weight.detach() + 1
    copies = BFSJointAdapter.for_transformer(transformer, rank=4)
    report = ckpt.load_bfs_checkpoint(copies, {**changed, **full}, transformer)
    assert report.copies and not copies.config.share_base
    assert torch.equal(copies.blocks["d0"].proj["q"].weight, attn.to_q.weight + 1)


# ---------------------------------------------------------------------------- transparency VAE


def test_widened_vae_encodes_and_decodes_like_the_rgb_vae(parts):
    from lamina.bfs.transparency import decode_layer, encode_layer, layer_to_vae_input, widen_vae

    vae = parts["vae"]
    trans = widen_vae(vae)
    assert trans.config.in_channels == 4 and trans.config.out_channels == 4
    g = torch.Generator().manual_seed(0)
    rgba = torch.rand(1, 4, 32, 32, generator=g)
    from lamina.bfs.pipeline import decode_latents, encode_image

    with torch.no_grad():
        latents = encode_layer(trans, rgba)
        rgb_in = layer_to_vae_input(rgba)[:, :3]
        torch.testing.assert_close(latents, encode_image(vae, rgb_in), rtol=1e-4, atol=1e-5)
        layer = decode_layer(trans, latents)
        rgb = ((decode_latents(vae, latents) + 1) / 2).clamp(0, 1)
    assert layer.shape == (1, 4, 32, 32)
    torch.testing.assert_close(layer[:, :3], rgb, rtol=1e-4, atol=1e-5)
    assert torch.all(layer[:, 3] == 1.0)  # alpha starts opaque


def test_linear_patch_vae_round_trips_and_fits_principal_components(tmp_path):
    """The tiny preset's VAEs: pixel patches, exact with every component (RGB plus an opaque alpha channel; a layer
    with soft alpha back as straight colour wherever alpha > 0); fitted, the kept principal components reconstruct
    data that lies in their span exactly; saved and loaded as pipeline components."""
    from lamina.bfs.patch_vae import LinearPatchVAE
    from lamina.bfs.pipeline import decode_latents, encode_image, vae_scale_factor
    from lamina.bfs.transparency import NEUTRAL_GREY, decode_layer, encode_layer

    rgb_vae = LinearPatchVAE(image_channels=3, factor=4, scaling_factor=2.0, shift_factor=0.1)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 24, generator=g) * 2 - 1
    latents = encode_image(rgb_vae, image)
    assert latents.shape == (2, 64, 4, 6) and vae_scale_factor(rgb_vae) == 4
    # cell (0, 0), channel 0 is pixel (0, 0) of red; channels 48.. are the opaque alpha, +1 in [-1, 1]
    assert torch.allclose(latents[:, 0, 0, 0], (image[:, 0, 0, 0] - 0.1) * 2.0)
    assert torch.allclose(latents[:, 48:], torch.full_like(latents[:, 48:], (1 - 0.1) * 2.0))
    assert torch.equal(encode_image(rgb_vae, image, generator=g, sample=True), latents)  # a point mass
    torch.testing.assert_close(decode_latents(rgb_vae, latents), image)

    trans = LinearPatchVAE(image_channels=4, factor=4, unpremultiply_grey=NEUTRAL_GREY)
    rgba = torch.rand(2, 4, 16, 24, generator=g)
    rgba[:, 3, :4] = 0.0  # transparent rows: colour undefined, decoded as 0
    rgba[:, 3, 4:8] = 0.05  # a faint shadow
    layer = decode_layer(trans, encode_layer(trans, rgba))
    torch.testing.assert_close(layer[:, 3], rgba[:, 3], atol=1e-6, rtol=0)
    torch.testing.assert_close(layer[:, :3, 4:], rgba[:, :3, 4:], atol=2e-5, rtol=0)
    assert torch.all(layer[:, :3, :4] == 0)

    # Images made of 3 patch patterns (plus a mean): 3 principal components hold them exactly.
    patterns = torch.randn(3, 64, generator=g, dtype=torch.float64)
    weights = torch.randn(40, 3, generator=g, dtype=torch.float64)
    cells = (weights @ patterns + 0.2).float().reshape(10, 2, 2, 64).permute(0, 3, 1, 2)  # [10, 64, 2, 2]
    images = torch.nn.functional.pixel_shuffle(cells, 4)[:, :3]  # the 4th channel's patterns are dropped:
    fitted = LinearPatchVAE(image_channels=3, factor=4, components=4)  # ... the opaque alpha adds a direction
    fitted.fit(images)
    assert fitted.config.latent_channels == 4
    torch.testing.assert_close(fitted.basis.T @ fitted.basis, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.decode(fitted.encode(images).latent_dist.mode()).sample, images,
                               atol=1e-4, rtol=0)
    fitted.save_pretrained(tmp_path / "fitted")
    loaded = LinearPatchVAE.from_pretrained(tmp_path / "fitted")
    assert torch.equal(loaded.basis, fitted.basis) and torch.equal(loaded.center, fitted.center)
    with pytest.raises(LaminaError, match="image_channels"):
        LinearPatchVAE(image_channels=2)
    with pytest.raises(LaminaError, match="unpremultiply_grey"):
        LinearPatchVAE(image_channels=4)
    with pytest.raises(LaminaError, match="components must be 1 to 64"):
        LinearPatchVAE(components=65)
    with pytest.raises(LaminaError, match="sides multiples of 4"):
        rgb_vae.encode(torch.zeros(1, 3, 10, 12))


# ---------------------------------------------------------------------------- building blocks, components


def test_packing_and_mask_condition_follow_flux_fill():
    from diffusers import FluxFillPipeline

    latents = torch.randn(2, 4, 8, 6)
    packed = pack_latents(latents)
    assert torch.equal(packed, FluxFillPipeline._pack_latents(latents, 2, 4, 8, 6))
    assert torch.equal(unpack_latents(packed, 8, 6), latents)
    reference_ids = FluxFillPipeline._prepare_latent_image_ids(2, 4, 3, "cpu", torch.float32)
    assert torch.equal(latent_image_ids(8, 6), reference_ids)
    mask = (torch.rand(1, 1, 32, 24) > 0.5).float()
    s = 4
    ref = mask[:, 0].view(1, 8, s, 6, s).permute(0, 2, 4, 1, 3).reshape(1, s * s, 8, 6)
    assert torch.equal(pack_mask(mask, s), FluxFillPipeline._pack_latents(ref, 1, s * s, 8, 6))
    assert working_size(37, 53, 32, 8) == (32, 48)
    with pytest.raises(LaminaError, match="cannot be packed"):
        pack_latents(torch.zeros(1, 4, 5, 6))


def test_tiny_components_sizes_and_tokenizers():
    tiny = comp.get_preset("tiny")
    assert tiny.vae_kind == "patch" and tiny.latent_channels == 16
    assert tiny.fill_in_channels == 2 * 4 * 16 + 4 * 16 and tiny.packing_multiple == 8
    assert comp.get_preset("tiny-kl").fill_in_channels == 128 and comp.get_preset("tiny-kl").packing_multiple == 8
    clip, t5 = comp.build_clip_tokenizer(24), comp.build_t5_tokenizer(24)
    for word in comp.caption_vocabulary():
        assert len(clip.tokenize(word)) == 1, word
        assert len(t5.tokenize(word)) == 1, word
    transformer = comp.build_transformer(tiny)
    assert transformer.config.in_channels == tiny.fill_in_channels and transformer.config.out_channels == 64
    assert 1.5e6 < comp.count_parameters(transformer) < 3e6
    assert comp.count_parameters(comp.build_joint(tiny, transformer)) < 0.6e6
    with pytest.raises(LaminaError, match="loaded from"):
        comp.build_components("flux-fill")
    with pytest.raises(LaminaError, match="unknown BFS components preset"):
        comp.get_preset("huge")
    with pytest.raises(LaminaError, match="latent channels"):
        dataclasses.replace(tiny, latent_channels=65)
    with pytest.raises(LaminaError, match="vae_kind"):
        dataclasses.replace(tiny, vae_kind="vq")


# ---------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def pipe(parts):
    pipeline = BFSPipeline.from_components(parts, resolution=SMALL.resolution, inference_steps=2,
                                           max_sequence_length=SMALL.max_sequence_length)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_pipeline_save_load_round_trip(pipe, tmp_path):
    background = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    first = pipe(background, box=(8, 8, 30, 30), prompt=CAPTION, generator=torch.Generator().manual_seed(0))
    pipe.save_pretrained(tmp_path / "bfs")
    loaded = load_pipeline(tmp_path / "bfs")  # dispatches on model_index.json
    assert isinstance(loaded, BFSPipeline)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.joint, BFSJointAdapter) and loaded.joint.is_attached(loaded.transformer)
    assert loaded.config.resolution == SMALL.resolution
    again = loaded(background, box=(8, 8, 30, 30), prompt=CAPTION, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(again.layers[0].pixels, first.layers[0].pixels)


def _soft_alpha(pipe):
    """Make the (untrained) RGBA VAE's alpha vary, so that some pixels get alpha 0 and some not."""
    conv = pipe.trans_vae.decoder.conv_out
    with torch.no_grad():
        conv.weight[3] = torch.randn_like(conv.weight[3]) * 0.3
        conv.bias[3] = -0.6


def test_alpha_zero_leaves_background_bit_exact_at_odd_sizes(pipe):
    _soft_alpha(pipe)
    background = np.random.default_rng(1).random((37, 53, 3)).astype(np.float32)
    out = pipe(background, box=(5, 4, 40, 30), prompt=CAPTION, generator=torch.Generator().manual_seed(1),
               return_composite=True)
    layer = out.layers[0]
    assert layer.name == CAPTION and layer.pixels.shape == (37, 53, 4)
    assert out.metadata["working_size"][0] % pipe.packing_multiple == 0
    assert out.layers[1].name == "bfs composite" and not out.layers[1].visible
    assert np.array_equal(out.background.pixels[..., :3], background)
    alpha = layer.pixels[..., 3]
    assert (alpha == 0).any() and (alpha > 0).any()
    from lamina.bfs.pipeline import ALPHA_FLOOR

    assert alpha[alpha > 0].min() >= ALPHA_FLOOR  # decoder noise below the floor is snapped to exactly 0
    assert (layer.pixels[alpha == 0] == 0).all()
    composite = out.composite()[..., :3]
    assert np.array_equal(composite[alpha == 0], background[alpha == 0])


def test_two_stacked_calls_equal_the_layered_composite(pipe):
    _soft_alpha(pipe)
    background = np.random.default_rng(2).random((33, 45, 3)).astype(np.float32)
    first = pipe(background, box=(2, 2, 20, 20), prompt="a blue circle", generator=torch.Generator().manual_seed(2))
    step = first.composite()[..., :3]
    second = pipe(step, box=(15, 10, 40, 30), prompt=CAPTION, generator=torch.Generator().manual_seed(3))
    stacked = LayeredImage(background, [first.layers[0], second.layers[0]])
    np.testing.assert_allclose(stacked.composite(), second.composite(), rtol=0, atol=1e-6)
    assert [layer.name for layer in stacked.layers] == ["a blue circle", CAPTION]


def test_upscale_layer_equals_the_full_resize_over_its_rectangle():
    from lamina.bfs.pipeline import ALPHA_FLOOR, resize_premultiplied, upscale_layer

    small = torch.rand(4, 8, 10, generator=torch.Generator().manual_seed(0))
    small[3, :, :3] = 0.0
    small[3, :2] = 0.5 * ALPHA_FLOOR  # under the floor: nothing visible comes of these rows
    small[3, 6:] = 0.0
    full = resize_premultiplied(small[None], (37, 53))[0].numpy()
    full = np.where(full[3:] < ALPHA_FLOOR, 0.0, full)
    planes, (left, top) = upscale_layer(small, 37, 53, rows=5)  # several bands
    assert planes.dtype == np.uint16 and (left, top) == (13, 7) and planes.shape == (4, 23, 40)
    canvas = np.zeros((4, 37, 53), np.float32)
    canvas[:, top:top + 23, left:left + 40] = planes / 65535.0
    assert (full[3, :, :left] == 0).all() and (full[3, :top] == 0).all() and (full[3, top + 23:] == 0).all()
    np.testing.assert_allclose(canvas, full, rtol=0, atol=0.5 / 65535 + 1e-6)
    assert np.array_equal(canvas[3] == 0, full[3] == 0)  # alpha 0 exactly where the full resize has it
    assert (planes[:3][:, planes[3] == 0] == 0).all()
    small[3] = 0.0
    assert upscale_layer(small, 37, 53) is None


def test_banded_downscale_and_box_cells_equal_the_whole_image_resizes():
    import torch.nn.functional as nnf

    from lamina.bfs.pipeline import REGION_COVERAGE, array_bands, box_cells, downscale_bands

    image = (np.random.default_rng(5).random((300, 410, 3)) * 255).astype(np.uint8)
    banded = downscale_bands(array_bands(image, rows=7), 300, 410, (32, 48))
    whole = nnf.interpolate(torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None], size=(32, 48),
                            mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
    for box in [(50, 33, 333, 201), (0, 0, 1, 1), (409, 290, 410, 300)]:
        region = np.zeros((300, 410), np.float32)
        region[box[1]:box[3], box[0]:box[2]] = 1
        cells = (nnf.interpolate(torch.from_numpy(region)[None, None], size=(32, 48), mode="area") > REGION_COVERAGE)
        assert torch.equal(box_cells(box, 300, 410, (32, 48)), cells.float())


def test_bounded_path_keeps_a_compact_background_and_matches_the_full_one(pipe):
    _soft_alpha(pipe)
    background = (np.random.default_rng(6).random((41, 57, 3)) * 255).astype(np.uint8)
    kwargs = dict(box=(6, 5, 40, 33), prompt=CAPTION, return_composite=True)
    full = pipe(background, generator=torch.Generator().manual_seed(6), bounded=False, **kwargs)
    bounded = pipe(background, generator=torch.Generator().manual_seed(6), bounded=True, **kwargs)
    assert not pipe.is_bounded(41, 57) and full.metadata == bounded.metadata
    assert bounded.background.is_compact and np.array_equal(bounded.background.quantised(8)[..., :3], background)
    layer = bounded.layers[0]
    assert layer.is_compact and layer.stored.dtype == np.uint16 and layer.metadata == full.layers[0].metadata
    assert bounded.layers[1].name == "bfs composite" and not bounded.layers[1].visible
    placed = bounded.canvas(0)  # [H, W, 4] on the canvas, 0 outside the layer's rectangle
    np.testing.assert_allclose(placed, full.layers[0].pixels, rtol=0, atol=1e-4)
    alpha = placed[..., 3]
    assert (alpha == 0).any() and (alpha > 0).any()
    composite = bounded.composite_uint8()[..., :3]
    assert np.array_equal(composite[alpha == 0], background[alpha == 0])  # B bit-exact where alpha = 0


def test_true_cfg_without_guidance_embedding(pipe):
    background = np.random.default_rng(4).random((32, 32, 3)).astype(np.float32)
    plain = pipe(background, box=(4, 4, 28, 28), prompt=CAPTION, generator=torch.Generator().manual_seed(4))
    cfg = pipe(background, box=(4, 4, 28, 28), prompt=CAPTION, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(4))
    assert cfg.metadata["guidance_scale"] == 3.0
    assert not np.array_equal(cfg.layers[0].pixels, plain.layers[0].pixels)


def test_pipeline_rejects_bad_regions(pipe):
    background = np.zeros((32, 32, 3), dtype=np.float32)
    with pytest.raises(LaminaError, match="exactly one of box"):
        pipe(background, prompt=CAPTION)
    with pytest.raises(LaminaError, match="outside"):
        pipe(background, box=(0, 0, 40, 40), prompt=CAPTION)
    with pytest.raises(LaminaError, match="mask is empty"):
        pipe(background, mask=np.zeros((32, 32)), prompt=CAPTION)


def test_sampling_window_geometry():
    from lamina.bfs.pipeline import sampling_window

    assert sampling_window((10, 20, 30, 40), 100, 200, None, 64) == (0, 0, 200, 100)  # no share: the whole image
    assert sampling_window((90, 40, 100, 50), 100, 200, 0.5, 32) == (79, 29, 111, 61)  # 32 px (the minimum) around it
    assert sampling_window((90, 40, 110, 50), 100, 200, 0.5, 32) == (80, 25, 120, 65)  # 20 / 0.5: 40 px
    assert sampling_window((90, 40, 130, 50), 100, 200, 0.5, 32) == (70, 5, 150, 85)  # 40 / 0.5: 80 px
    assert sampling_window((0, 0, 10, 10), 100, 200, 0.25, 16) == (0, 0, 40, 40)  # moved inside at a corner
    assert sampling_window((150, 80, 200, 100), 100, 200, 0.5, 16) == (100, 0, 200, 100)  # 100 px: cut to the height
    assert sampling_window((0, 0, 200, 100), 100, 200, 0.5, 16) == (0, 0, 200, 100)
    rng = np.random.default_rng(0)
    for _ in range(200):  # the window always holds the box and lies in the image
        h, w = (int(v) for v in rng.integers(8, 120, 2))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1)))
        left, top, right, bottom = sampling_window(box, h, w, float(rng.uniform(0.2, 1.0)), int(rng.integers(8, 64)))
        assert 0 <= left <= box[0] and box[2] <= right <= w and 0 <= top <= box[1] and box[3] <= bottom <= h


def test_sampling_window_equals_the_pipeline_on_the_cropped_background(pipe, tmp_path):
    _soft_alpha(pipe)
    background = np.random.default_rng(7).random((70, 90, 3)).astype(np.float32)
    box, kwargs = (50, 30, 62, 44), dict(prompt=CAPTION, return_composite=True)
    assert pipe.config.box_share is None and pipe.sampling_window(box, 70, 90) == (0, 0, 90, 70)
    window = pipe.sampling_window(box, 70, 90, crop=True)  # DEFAULT_BOX_SHARE: 14 / 0.5 -> 28, at least 32 px
    assert window == (40, 21, 72, 53)
    out = pipe(background, box=box, generator=torch.Generator().manual_seed(7), crop=True, **kwargs)
    left, top, right, bottom = window
    alone = pipe(background[top:bottom, left:right], box=(10, 9, 22, 23), generator=torch.Generator().manual_seed(7),
                 **kwargs)
    layer = out.layers[0]
    assert layer.offset == (left, top) and layer.pixels.shape == (32, 32, 4)
    assert np.array_equal(layer.pixels, alone.layers[0].pixels)
    assert layer.metadata["box"] == list(box) and layer.metadata["window"] == list(window)
    assert out.metadata["window"] == list(window) and out.layers[1].offset == (left, top)
    assert np.array_equal(out.background.pixels[..., :3], background)
    alpha = out.canvas(0)[..., 3]
    assert (alpha > 0).any() and (alpha[:, :left] == 0).all() and (alpha[bottom:] == 0).all()
    composite = out.composite()[..., :3]
    assert np.array_equal(composite[alpha == 0], background[alpha == 0])
    # A mask region takes the same window; bounded (an offset rectangle inside the window) matches too.
    mask = np.zeros((70, 90), np.float32)
    mask[box[1]:box[3], box[0]:box[2]] = 1
    masked = pipe(background, mask=mask, generator=torch.Generator().manual_seed(7), crop=True, **kwargs)
    assert np.array_equal(masked.canvas(0), out.canvas(0))
    bounded = pipe(background, box=box, generator=torch.Generator().manual_seed(7), crop=True, bounded=True, **kwargs)
    np.testing.assert_allclose(bounded.canvas(0), out.canvas(0), rtol=0, atol=1e-4)
    # The share is the pipeline's config: saved, loaded back, and then the default.
    pipe.register_to_config(box_share=0.5)
    try:
        pipe.save_pretrained(tmp_path / "bfs")
    finally:
        pipe.register_to_config(box_share=None)
    loaded = load_pipeline(tmp_path / "bfs")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.box_share == 0.5 and loaded.sampling_window(box, 70, 90) == window
    assert loaded.sampling_window(box, 70, 90, crop=False) == (0, 0, 90, 70)
    with pytest.raises(LaminaError, match="box_share"):
        BFSPipeline.from_components(dict(pipe.components), resolution=32, box_share=1.5)


def test_from_fill_on_a_saved_tiny_fill_folder(parts, tmp_path):
    from diffusers import FluxFillPipeline

    config = dataclasses.replace(SMALL, guidance_embeds=True)
    torch.manual_seed(0)
    fill = FluxFillPipeline(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                            tokenizer=parts["tokenizer"], text_encoder_2=parts["text_encoder_2"],
                            tokenizer_2=parts["tokenizer_2"], transformer=comp.build_transformer(config))
    fill.save_pretrained(tmp_path / "fill")
    pipe = load_pipeline(tmp_path / "fill", resolution=32, inference_steps=1, max_sequence_length=24)  # from_fill
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.guidance_scale == 30.0 and pipe.joint.config.share_base
    assert pipe.trans_vae.config.in_channels == 4 and pipe.joint.is_attached(pipe.transformer)
    out = pipe(np.full((30, 34, 3), 0.5, dtype=np.float32), mask=np.pad(np.ones((10, 10)), ((5, 15), (5, 19))),
               prompt=CAPTION, generator=torch.Generator().manual_seed(0))
    assert out.layers[0].pixels.shape == (30, 34, 4) and out.metadata["box"] == [5, 5, 15, 15]
    with pytest.raises(LaminaError, match="cannot load the Fill model"):
        BFSPipeline.from_fill(tmp_path)
    with pytest.raises(LaminaError, match="not a model folder"):
        BFSPipeline.from_fill(tmp_path / "missing")
    with pytest.raises(LaminaError, match="no model_index.json"):
        load_pipeline(tmp_path)


def _gpu_check_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check_bfs.py"
    spec = importlib.util.spec_from_file_location("lamina_gpu_check_bfs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_rehearsal_and_full_size_dry_run(tmp_path):
    """The GPU check script runs as prepared: its tiny CPU rehearsal gives finite numbers, and on the meta device
    the full FLUX.1-Fill-dev-shaped transformer (19 + 38 blocks, 3072 wide, 384 input channels) with the BFS
    adapter samples and takes a training step with every shape right and no gradient reaching the base. The
    parameter counts are the official release's (``bfs.md``: FLUX ~11.9 B; joint LoRAs 9.3 M + ``conv1n`` 0.54 B)."""
    script = _gpu_check_script()
    tiny = script.main(["--tiny", "--steps", "1", "--json", str(tmp_path / "tiny.json")])
    assert np.isfinite(tiny["loss"]) and tiny["loss"] > 0
    assert all(np.isfinite(row["seconds"]) for row in tiny["rows"].values())
    full = script.main(["--device", "meta", "--steps", "1", "--json", str(tmp_path / "meta.json")])
    assert full["config"] == "flux-fill" and full["size"] == 512
    assert 11.8e9 < full["parameters"]["transformer"] < 12.0e9
    rank4_loras = 9.3e6
    assert abs(full["parameters"]["joint"] - (rank4_loras + (19 + 38) * 3072**2)) < 0.05e6
