"""BFS components: sizes as frozen configs, and builders for the tiny (CPU) ones.

A BFS model is a FLUX.1-Fill-style set of diffusers / transformers components plus the joint
adapter (:mod:`.joint`) and the transparency VAE (:mod:`.transparency`):

* ``vae``: :class:`~diffusers.AutoencoderKL` RGB -> latent (the composite branch decodes with it);
* ``trans_vae``: the same architecture with 4 (RGBA) image channels (the foreground branch);
  or, with ``vae_kind="patch"`` (the ``tiny`` preset), both are linear codes of pixel patches
  (:class:`~lamina.bfs.patch_vae.LinearPatchVAE`, fitted to data): a tiny learned VAE lost colour and soft alpha;
* ``transformer``: a stock :class:`~diffusers.FluxTransformer2DModel` with Fill input channels
  ``in = 2 * 4c + s^2 * 4`` (noisy packed latents, packed condition latents, packed
  pixel-unshuffled mask; ``c`` latent channels, ``s`` the VAE's scale factor);
* ``text_encoder`` / ``tokenizer``: CLIP (pooled embedding), ``text_encoder_2`` / ``tokenizer_2``:
  T5 (token embeddings), as in FLUX;
* ``scheduler``: :class:`~diffusers.FlowMatchEulerDiscreteScheduler` with resolution-dependent shift.

:data:`PRESETS` names three configs: ``tiny`` (built here, randomly initialised, linear patch codes as VAEs,
trained on CPU into the built-in model), ``tiny-kl`` (the same with tiny learned ``AutoencoderKL`` VAEs,
trained by the ``vae`` stage: the full-size layout at toy size) and ``flux-fill`` (full size; it only
describes what to load: the weights are FLUX.1-Fill-dev's, which users bring themselves).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LaminaError

#: Shape nouns the procedural scenes use in captions (``lamina.data.shapes``), split into words.
_SHAPE_WORDS = ("circle", "oval", "rounded", "square", "rectangle", "star", "blob", "flower", "heart", "ring")
#: Function words and punctuation of the caption grammar (``lamina.data.captions``).
_GRAMMAR_WORDS = ("a", "an", "and", ",", "-", "with", "on", "in", "of", "front")
#: Rounds of merge repair in :func:`build_clip_tokenizer`.
_TOKENIZER_REPAIR_ROUNDS = 8


#: VAE kinds of :class:`BFSComponentsConfig`: learned ``AutoencoderKL`` pairs, or linear patch codes.
VAE_KINDS = ("kl", "patch")


@dataclass(frozen=True)
class BFSComponentsConfig:
    """Sizes of every BFS component (a preset of :data:`PRESETS`, or ``dataclasses.replace`` of one).

    ``source`` is ``None`` for components built here from these sizes, or a FLUX.1-Fill-style hub
    id / folder to load (then the size fields only document what that model is).
    """

    name: str = "tiny"
    source: str | None = None
    #: Working resolution (short side, pixels) of the model.
    resolution: int = 64
    # --- VAE (both ``vae`` and ``trans_vae``): "kl" (AutoencoderKL) or "patch" (LinearPatchVAE of ``patch_factor``
    # px patches, ``latent_channels`` components)
    vae_kind: str = "kl"
    patch_factor: int = 4
    vae_block_out_channels: tuple[int, ...] = (16, 32, 32)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    #: Self-attention in the VAE's mid block (diffusers' ``mid_block_add_attention``; FLUX's VAE has it).
    vae_mid_block_attention: bool = False
    latent_channels: int = 8
    vae_scaling_factor: float = 1.0
    vae_shift_factor: float = 0.0
    # --- transformer
    num_layers: int = 2
    num_single_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    joint_attention_dim: int = 64
    pooled_projection_dim: int = 64
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    guidance_embeds: bool = False
    # --- text encoders
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate_size: int = 128
    max_sequence_length: int = 24
    # --- scheduler (FLUX's resolution-dependent shift, ``calculate_shift``)
    base_image_seq_len: int = 64
    max_image_seq_len: int = 1024
    base_shift: float = 0.5
    max_shift: float = 1.15
    # --- joint adapter (:class:`~lamina.bfs.joint.BFSJointAdapter`)
    joint_rank: int = 8
    joint_alpha: float = 8.0
    joint_share_base: bool = False
    joint_single_tokens: str = "all"
    #: Default sampling settings.
    inference_steps: int = 20
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.vae_kind not in VAE_KINDS:
            raise LaminaError(f"vae_kind must be one of {', '.join(VAE_KINDS)}, got {self.vae_kind!r}")
        if self.vae_kind == "patch" and not 1 <= self.latent_channels <= 4 * self.patch_factor ** 2:
            raise LaminaError(f"a patch VAE of factor {self.patch_factor} has 1 to {4 * self.patch_factor ** 2} "
                              f"latent channels, got latent_channels={self.latent_channels}")
        if self.joint_single_tokens not in ("all", "image"):
            raise LaminaError(f"joint_single_tokens must be 'all' or 'image', got {self.joint_single_tokens!r}")
        if self.resolution % self.packing_multiple:
            raise LaminaError(f"resolution {self.resolution} is not a multiple of the latent packing "
                              f"{self.packing_multiple} (VAE factor x 2)")

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell side: ``patch_factor``, or ``2 ** (len(vae_block_out_channels) - 1)`` as diffusers
        computes it for an ``AutoencoderKL``."""
        return self.patch_factor if self.vae_kind == "patch" else 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def packing_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor times FLUX's 2x2 latent packing)."""
        return 2 * self.vae_scale_factor

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def fill_in_channels(self) -> int:
        """Fill transformer input channels: packed noisy latents + packed condition latents + packed mask."""
        return 2 * 4 * self.latent_channels + 4 * self.vae_scale_factor ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named presets. ``flux-fill`` describes FLUX.1-Fill-dev (loaded, never built here).
PRESETS: dict[str, BFSComponentsConfig] = {
    "tiny": BFSComponentsConfig(vae_kind="patch", patch_factor=4, latent_channels=16),
    "tiny-kl": BFSComponentsConfig(name="tiny-kl"),
    "flux-fill": BFSComponentsConfig(
        name="flux-fill", source="black-forest-labs/FLUX.1-Fill-dev", resolution=512,
        vae_block_out_channels=(128, 256, 512, 512), vae_layers_per_block=2, vae_norm_num_groups=32,
        vae_mid_block_attention=True,
        latent_channels=16, vae_scaling_factor=0.3611, vae_shift_factor=0.1159,
        num_layers=19, num_single_layers=38, num_attention_heads=24, attention_head_dim=128,
        joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56), guidance_embeds=True,
        text_hidden_size=768, text_layers=12, text_heads=12, text_intermediate_size=3072, max_sequence_length=512,
        base_image_seq_len=256, max_image_seq_len=4096, joint_rank=4, joint_alpha=4.0, joint_share_base=True,
        joint_single_tokens="all", inference_steps=50, guidance_scale=30.0,
    ),
}


def get_preset(name: str) -> BFSComponentsConfig:
    """The preset called ``name`` (``tiny``, ``tiny-kl`` or ``flux-fill``)."""
    if name not in PRESETS:
        raise LaminaError(f"unknown BFS components preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------- vocabulary


def caption_vocabulary() -> list[str]:
    """Every word the procedural captions use (``lamina.data.captions``), sorted; the tiny tokenizers' vocabulary."""
    from ..data import captions
    from ..data.shapes import POLYGON_NOUNS

    words: set[str] = set(_GRAMMAR_WORDS) | set(_SHAPE_WORDS) | set(POLYGON_NOUNS.values())
    words |= set(captions.COLORS) | {captions.FUR_WORD, captions.GLASS_WORD}
    phrases = list(captions.TEXTURE_WORDS.values()) + list(captions.BACKGROUND_PHRASES.values())
    phrases += list(captions.FLOOR_PHRASES.values()) + list(captions.EFFECT_PHRASES.values())
    for phrase in phrases:
        words |= set(phrase.replace("-", " - ").split())
    return sorted(w for w in words if w)


def build_clip_tokenizer(max_length: int) -> Any:
    """A CLIP BPE tokenizer over :func:`caption_vocabulary` (one token per word, letters as fallback); offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocabulary()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), unk_token="<unk>", model_max_length=max_length)


@functools.lru_cache(maxsize=1)
def _clip_vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocabulary and merges of :func:`build_clip_tokenizer` (computed once per process).

    Merges are added left to right per word, then repaired until every vocabulary word is one token
    (a merge of one word can fire first inside another and split it).
    """
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token in specials + letters + [f"{c}</w>" for c in letters] + [",</w>", "-</w>"]:
        vocab.setdefault(token, len(vocab))

    def add_chain(pieces: list[str]) -> None:
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current = current + piece
            vocab.setdefault(current, len(vocab))

    words = [w for w in caption_vocabulary() if len(w) > 1]
    for word in words:
        add_chain(list(word[:-1]) + [word[-1] + "</w>"])
    for _ in range(_TOKENIZER_REPAIR_ROUNDS):
        tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), unk_token="<unk>")
        split = [pieces for pieces in (tokenizer.tokenize(w) for w in words) if len(pieces) > 1]
        if not split:
            return vocab, tuple(merges)
        for pieces in split:
            add_chain(pieces)
    raise LaminaError("could not build a whole-word CLIP tokenizer over the caption vocabulary")


def build_t5_tokenizer(max_length: int) -> Any:
    """A T5 (Unigram) tokenizer over :func:`caption_vocabulary` (one piece per word), built offline."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = caption_vocabulary()
    vocab += [("\u2581" + w, -1.0) for w in words] + [(w, -1.5) for w in words] + [("\u2581", -2.0)]
    vocab += [(chr(c), -3.0) for c in range(ord("a"), ord("z") + 1)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


# ---------------------------------------------------------------------------- builders


def build_vae(config: BFSComponentsConfig, channels: int = 3) -> Any:
    """A randomly initialised :class:`~diffusers.AutoencoderKL` with ``channels`` image channels (no quant convs),
    or for ``vae_kind="patch"`` a :class:`~lamina.bfs.patch_vae.LinearPatchVAE` (not yet fitted; the RGBA one
    un-premultiplies from :data:`~lamina.bfs.transparency.NEUTRAL_GREY`)."""
    from diffusers import AutoencoderKL

    if config.vae_kind == "patch":
        from .patch_vae import LinearPatchVAE
        from .transparency import NEUTRAL_GREY

        return LinearPatchVAE(image_channels=channels, factor=config.patch_factor, components=config.latent_channels,
                              scaling_factor=config.vae_scaling_factor, shift_factor=config.vae_shift_factor,
                              unpremultiply_grey=NEUTRAL_GREY if channels == 4 else None)

    n = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=channels, out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(config.vae_block_out_channels), layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.vae_norm_num_groups,
        sample_size=config.resolution, scaling_factor=config.vae_scaling_factor, shift_factor=config.vae_shift_factor,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=config.vae_mid_block_attention,
    )


def build_transformer(config: BFSComponentsConfig) -> Any:
    """A randomly initialised Fill-style :class:`~diffusers.FluxTransformer2DModel` of ``config``'s size."""
    from diffusers import FluxTransformer2DModel

    if sum(config.axes_dims_rope) != config.attention_head_dim:
        raise LaminaError(f"axes_dims_rope {config.axes_dims_rope} must sum to attention_head_dim "
                          f"{config.attention_head_dim}")
    return FluxTransformer2DModel(
        patch_size=1, in_channels=config.fill_in_channels, out_channels=4 * config.latent_channels,
        num_layers=config.num_layers, num_single_layers=config.num_single_layers,
        attention_head_dim=config.attention_head_dim, num_attention_heads=config.num_attention_heads,
        joint_attention_dim=config.joint_attention_dim, pooled_projection_dim=config.pooled_projection_dim,
        guidance_embeds=config.guidance_embeds, axes_dims_rope=tuple(config.axes_dims_rope),
    )


def build_text_encoders(config: BFSComponentsConfig) -> dict[str, Any]:
    """Tiny random ``text_encoder`` (CLIP, pooled ``pooled_projection_dim``) and ``text_encoder_2`` (T5,
    ``joint_attention_dim``) with their offline tokenizers."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = build_clip_tokenizer(config.max_sequence_length)
    tokenizer_2 = build_t5_tokenizer(config.max_sequence_length)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.pooled_projection_dim,
        intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=config.max_sequence_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        projection_dim=config.pooled_projection_dim,
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=config.joint_attention_dim, d_kv=config.joint_attention_dim // 2,
        d_ff=config.text_intermediate_size, num_layers=config.text_layers, num_heads=config.text_heads,
        relative_attention_num_buckets=8, relative_attention_max_distance=config.max_sequence_length,
        pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=0,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, dropout_rate=0.0,
    ))
    return {"text_encoder": clip, "tokenizer": tokenizer, "text_encoder_2": t5, "tokenizer_2": tokenizer_2}


def build_scheduler(config: BFSComponentsConfig) -> Any:
    """FLUX's flow-matching Euler scheduler with the resolution-dependent shift of ``config``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=config.base_shift,
        max_shift=config.max_shift, base_image_seq_len=config.base_image_seq_len,
        max_image_seq_len=config.max_image_seq_len,
    )


def build_joint(config: BFSComponentsConfig, transformer: Any) -> Any:
    """A new :class:`~lamina.bfs.joint.BFSJointAdapter` for ``transformer`` (zero ``post``: a no-op until trained)."""
    from .joint import BFSJointAdapter

    return BFSJointAdapter.for_transformer(transformer, rank=config.joint_rank, lora_alpha=config.joint_alpha,
                                           share_base=config.joint_share_base,
                                           single_tokens=config.joint_single_tokens)


def build_components(config: BFSComponentsConfig | str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Every component of a randomly initialised BFS model (keys as :class:`~lamina.bfs.pipeline.BFSPipeline`'s).

    ``trans_vae`` is ``vae`` widened to RGBA (:func:`~lamina.bfs.transparency.widen_vae`), so that
    before training it encodes a layer as ``vae`` encodes its colour; patch codes are fitted to data when a
    run starts instead (:func:`lamina.bfs.train.fit_patch_codes`).
    """
    from ..extras import require
    from .transparency import widen_vae

    require("transformers", "prompt")  # the CLIP / T5 text encoders
    if isinstance(config, str):
        config = get_preset(config)
    if config.source is not None:
        raise LaminaError(f"preset {config.name!r} is loaded from {config.source!r} "
                          "(BFSPipeline.from_fill), not built from random weights")
    torch.manual_seed(seed)
    vae = build_vae(config)
    trans_vae = build_vae(config, channels=4) if config.vae_kind == "patch" else widen_vae(vae)
    transformer = build_transformer(config)
    parts = build_text_encoders(config)
    joint = build_joint(config, transformer)
    parts = {"scheduler": build_scheduler(config), "vae": vae, "trans_vae": trans_vae, **parts,
             "transformer": transformer, "joint": joint}
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()  # as from_pretrained returns them; training switches what it trains to train()
    return parts


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
