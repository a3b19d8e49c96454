"""BFS sampling: the building blocks shared with training, and :class:`BFSPipeline`.

Building blocks (pure functions on tensors; training uses the same ones):

* :func:`encode_prompts`: CLIP pooled + T5 token embeddings and FLUX's text ids;
* :func:`encode_image` / :func:`decode_latents`: VAE with its shift and scaling;
* :func:`pack_latents` / :func:`unpack_latents` / :func:`latent_image_ids`: FLUX's 2x2 packing;
* :func:`prepare_fill_condition`: the Fill condition ``[pack(E(B)), pack(unshuffle(M))]`` with the
  **unmasked** background (BFS), not stock Fill's ``E(B * (1 - M))``;
* :func:`predict_velocity`: one transformer call on the ``[composite; foreground]`` batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import LaminaError
from ..layers import Layer, LayeredImage, check_box
from ..progress import progress
from .joint import BFSJointAdapter, BFSJointProcessor
from .patch_vae import LinearPatchVAE  # noqa: F401  (a component class: from_pretrained finds it once imported)

#: A pixel of a region mask is inside above this value (masks in [0, 1]; uint8 masks are scaled).
MASK_THRESHOLD = 0.5
#: A working-size mask cell is inside when more than this fraction of its full-size pixels are (0: any).
REGION_COVERAGE = 0.0
#: Decoded alpha below this is set to exactly 0 (colour too): under half an 8-bit step, it is invisible once
#: written, but left in place it would make the whole background count as covered by the layer.
ALPHA_FLOOR = 0.5 / 255
#: Backgrounds whose longer side is above this many pixels take the bounded path (see :meth:`BFSPipeline.__call__`).
BOUNDED_SIDE = 1024
#: Full-size rows handled at a time by the bounded path (downscale of the background, upscale of the layer).
BAND_ROWS = 256
#: ``crop=True`` on a pipeline without a ``box_share``: the box's longer side is this share of the window's side
#: (the ``tiny`` preset's procedural scenes: objects 0.32 to 0.64 of the canvas across, boxes grown by up to 15 %).
DEFAULT_BOX_SHARE = 0.5

# ---------------------------------------------------------------------------- outputs


@dataclass
class PromptEmbeddings(BaseOutput):
    """Encoded captions: ``prompt_embeds`` [B, L, joint_attention_dim] (T5), ``pooled`` [B, pooled_projection_dim]
    (CLIP) and ``text_ids`` [L, 3] (zeros, FLUX's text positions)."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor

    def repeat(self, times: int) -> PromptEmbeddings:
        """The batch repeated ``times`` times (row order ``[all, all, ...]``)."""
        return PromptEmbeddings(self.prompt_embeds.repeat(times, 1, 1), self.pooled.repeat(times, 1), self.text_ids)


@dataclass
class VelocityOutput(BaseOutput):
    """Predicted flow-matching velocities (``noise - clean`` in packed latent space), each [B, N, 4c]:
    ``velocity_x`` for the composite branch, ``velocity_y`` for the foreground branch."""

    velocity_x: torch.Tensor
    velocity_y: torch.Tensor


# ---------------------------------------------------------------------------- text


def encode_prompts(
    prompts: str | list[str],
    tokenizer: Any,
    text_encoder: nn.Module,
    tokenizer_2: Any,
    text_encoder_2: nn.Module,
    max_sequence_length: int = 512,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> PromptEmbeddings:
    """FLUX's text conditioning of ``prompts`` (B captions): CLIP pooled output and T5 hidden states.

    As in ``FluxPipeline.encode_prompt``: both tokenizers pad to their length (CLIP: its
    ``model_max_length``; T5: ``max_sequence_length``, capped by ``tokenizer_2.model_max_length``)
    and truncate.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    device = torch.device(device) if device is not None else next(text_encoder_2.parameters()).device
    clip_length = int(min(getattr(tokenizer, "model_max_length", 77), 77))
    t5_length = int(min(max_sequence_length, getattr(tokenizer_2, "model_max_length", max_sequence_length)))
    clip_ids = tokenizer(prompts, padding="max_length", max_length=clip_length, truncation=True,
                         return_tensors="pt").input_ids
    t5_ids = tokenizer_2(prompts, padding="max_length", max_length=t5_length, truncation=True,
                         return_tensors="pt").input_ids
    clip_device = next(text_encoder.parameters()).device
    pooled = text_encoder(clip_ids.to(clip_device), output_hidden_states=False).pooler_output
    t5_device = next(text_encoder_2.parameters()).device
    embeds = text_encoder_2(t5_ids.to(t5_device), output_hidden_states=False)[0]
    dtype = dtype or embeds.dtype
    text_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype)
    return PromptEmbeddings(embeds.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype), text_ids)


# ---------------------------------------------------------------------------- latents


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent cell side of a diffusers VAE (``2 ** (len(block_out_channels) - 1)``), or the ``factor``
    of a :class:`~lamina.bfs.patch_vae.LinearPatchVAE`."""
    factor = vae.config.get("factor")
    return int(factor) if factor is not None else 2 ** (len(vae.config.block_out_channels) - 1)


def _vae_shift_scale(vae: nn.Module) -> tuple[float, float]:
    shift = vae.config.get("shift_factor", None)
    return float(shift or 0.0), float(vae.config.scaling_factor)


def encode_image(vae: nn.Module, image: torch.Tensor, generator: torch.Generator | None = None,
                 sample: bool = False) -> torch.Tensor:
    """Latents ``(E(image) - shift) * scale`` [B, c, H/s, W/s] of ``image`` [B, C, H, W] in ``[-1, 1]``.

    ``sample`` draws from the posterior (training targets); otherwise its mode (conditions).
    """
    dist = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = dist.sample(generator) if sample else dist.mode()
    shift, scale = _vae_shift_scale(vae)
    return (latents - shift) * scale


def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``vae.decode(latents / scale + shift)``: [B, C, H, W], nominally in ``[-1, 1]`` (not clamped)."""
    shift, scale = _vae_shift_scale(vae)
    return vae.decode((latents / scale + shift).to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """FLUX's 2x2 packing: [B, C, H, W] -> [B, H/2 * W/2, 4C] (``H``, ``W`` even)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise LaminaError(f"latents of size {h}x{w} cannot be packed 2x2 (sides must be even)")
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: [B, H/2 * W/2, 4C] -> [B, C, H, W] (``height``, ``width`` in latent cells)."""
    b, n, c4 = packed.shape
    if n != (height // 2) * (width // 2):
        raise LaminaError(f"{n} packed tokens do not match a {height}x{width} latent grid")
    latents = packed.view(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, c4 // 4, height, width)


def latent_image_ids(height: int, width: int, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """FLUX image position ids [H/2 * W/2, 3] , ``(0, row, col)`` per token, of a latent grid ``height x width``."""
    h, w = height // 2, width // 2
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device=device, dtype=dtype)


def pack_mask(mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Fill's mask condition: [B, 1, H, W] in ``{0, 1}`` -> pixel-unshuffled by ``s`` and packed: [B, N, 4 s^2].

    Channel order as ``FluxFillPipeline.prepare_mask_latents`` (``(dy, dx)`` inside each latent cell).
    """
    b, _, height, width = mask.shape
    s = scale_factor
    if height % (2 * s) or width % (2 * s):
        raise LaminaError(f"mask of size {height}x{width} is not a multiple of {2 * s} (VAE factor x 2)")
    h, w = height // s, width // s
    cells = mask[:, 0].reshape(b, h, s, w, s).permute(0, 2, 4, 1, 3).reshape(b, s * s, h, w)
    return pack_latents(cells)


def prepare_fill_condition(vae: nn.Module, background: torch.Tensor, mask: torch.Tensor,
                           masked: bool = False) -> torch.Tensor:
    """The Fill condition [B, N, 4c + 4 s^2]: packed latents of the background, then the packed mask.

    Args:
        background: [B, 3, H, W] in ``[-1, 1]`` (``H``, ``W`` multiples of ``2 s``).
        mask: [B, 1, H, W], 1 inside the region to synthesise, 0 elsewhere.
        masked: encode ``B * (1 - M)`` as stock ``FluxFillPipeline`` does; BFS encodes the unmasked ``B``
            (the default), because the layer's shadows fall on the visible background.
    """
    if background.shape[-2:] != mask.shape[-2:]:
        raise LaminaError(f"background {tuple(background.shape[-2:])} and mask {tuple(mask.shape[-2:])} sizes differ")
    mask = mask.to(device=background.device, dtype=background.dtype)
    image = background * (1 - mask) if masked else background
    latents = pack_latents(encode_image(vae, image))
    packed_mask = pack_mask(mask, vae_scale_factor(vae)).to(device=latents.device, dtype=latents.dtype)
    return torch.cat([latents, packed_mask], dim=-1)


# ---------------------------------------------------------------------------- the transformer call


def _has_joint_processors(transformer: nn.Module) -> bool:
    blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
    return any(isinstance(b.attn.processor, BFSJointProcessor) for b in blocks)


def predict_velocity(
    transformer: nn.Module,
    joint: BFSJointAdapter | None,
    latents_x: torch.Tensor,
    latents_y: torch.Tensor,
    condition: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    timestep: torch.Tensor | float,
    guidance: torch.Tensor | float | None = None,
) -> VelocityOutput:
    """Velocities of both branches from one call of ``transformer`` on the batch ``[x; y]``.

    Args:
        transformer: a stock Fill-style ``FluxTransformer2DModel`` (or a DDP / accelerate wrapper of one).
        joint: the coupling; attached to ``transformer`` here if it is not yet. ``None`` runs the
            branches uncoupled (any attached joint processors are switched off for this call).
        latents_x, latents_y: packed noisy latents [B, N, 4c] of the composite and foreground branches.
        condition: Fill condition [B, N, 4c + 4 s^2] (:func:`prepare_fill_condition`), shared by both branches.
        prompt_embeds: [B, L, D]; pooled: [B, P]; text_ids: [L, 3]; img_ids: [N, 3] (both branches share them).
        timestep: sigma in ``[0, 1]`` ([B] or a number; FLUX multiplies it by 1000 itself).
        guidance: guidance-embedding value ([B] or a number) for guidance-distilled models, else ``None``.
    Returns:
        :class:`VelocityOutput` with ``velocity_x``, ``velocity_y`` [B, N, 4c] (``noise - clean``).
    """
    model = getattr(transformer, "module", transformer)  # the model inside a DDP / accelerate wrapper
    if latents_x.shape != latents_y.shape:
        raise LaminaError(f"branch latents differ in shape: {tuple(latents_x.shape)} vs {tuple(latents_y.shape)}")
    b, n, _ = latents_x.shape
    if condition.shape[:2] != (b, n):
        raise LaminaError(f"condition {tuple(condition.shape)} does not match latents {tuple(latents_x.shape)}")
    expected = int(model.config.in_channels)
    if latents_x.shape[-1] + condition.shape[-1] != expected:
        raise LaminaError(f"latents ({latents_x.shape[-1]}) + condition ({condition.shape[-1]}) channels != the "
                          f"transformer's in_channels {expected}")
    dtype = model.dtype
    device = latents_x.device
    hidden = torch.cat([torch.cat([latents_x, condition], -1), torch.cat([latents_y, condition], -1)]).to(dtype)

    def batch(value: torch.Tensor | float | None) -> torch.Tensor | None:
        if value is None:
            return None
        value = torch.as_tensor(value, device=device, dtype=torch.float32)
        return (value.expand(b) if value.ndim == 0 else value).repeat(2).to(dtype)

    kwargs: dict[str, Any] | None = None
    if joint is not None:
        joint = getattr(joint, "module", joint)
        if not joint.is_attached(model):
            joint.attach(model)
        kwargs = {"bfs_image_tokens": n}
    elif _has_joint_processors(model):
        kwargs = {"bfs_joint": False}
    guided = bool(model.config.guidance_embeds)
    if guided and guidance is None:
        raise LaminaError("this transformer has a guidance embedding (guidance_embeds=True): pass guidance")
    out = transformer(
        hidden_states=hidden,
        encoder_hidden_states=prompt_embeds.repeat(2, 1, 1).to(dtype),
        pooled_projections=pooled.repeat(2, 1).to(dtype),
        timestep=batch(timestep),
        img_ids=img_ids,
        txt_ids=text_ids,
        guidance=batch(guidance) if guided else None,
        joint_attention_kwargs=kwargs,
        return_dict=False,
    )[0]
    velocity_x, velocity_y = out.chunk(2)
    return VelocityOutput(velocity_x=velocity_x, velocity_y=velocity_y)


# ---------------------------------------------------------------------------- geometry


def working_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """``(h, w)`` the model runs at for a ``height x width`` image: short side ``resolution``, aspect kept,
    both sides rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    scale = resolution / min(height, width)

    def side(n: int) -> int:
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(height), side(width)


def sampling_window(bbox: Sequence[int], height: int, width: int, box_share: float | None,
                    min_side: int) -> tuple[int, int, int, int]:
    """The rectangle ``(x0, y0, x1, y1)`` of a ``height x width`` background that the model samples in.

    ``None`` ``box_share``: the whole background. Else a square around the region's box ``bbox`` whose side is
    the box's longer side divided by ``box_share`` (the scale the model was trained at: the object, its
    shadow and enough of the background around them), at least ``min_side`` (the model's resolution: the
    background is never enlarged), centred on the box and moved inside the image; a side longer than the
    image's is cut to it. The window always holds the box.
    """
    if box_share is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = (int(v) for v in bbox)
    side = max(int(np.ceil(max(x1 - x0, y1 - y0) / box_share)), int(min_side))

    def span(lo: int, hi: int, size: int) -> tuple[int, int]:
        extent = min(side, size)
        start = min(max((lo + hi - extent) // 2, 0), size - extent)
        return start, start + extent

    left, right = span(x0, x1, width)
    top, bottom = span(y0, y1, height)
    return left, top, right, bottom


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """FLUX's resolution-dependent timestep shift ``mu``: linear in the number of image tokens."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


def flux_sigmas(num_steps: int) -> list[float]:
    """FLUX's sigma schedule before shifting: ``linspace(1, 1 / N, N)``."""
    return torch.linspace(1.0, 1.0 / num_steps, num_steps).tolist()


def resize_premultiplied(rgba: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize straight RGBA [B, 4, h, w] to ``size`` through premultiplied colour (no dark fringes); [0, 1].

    Bilinear (antialiased when shrinking); colour is 0 where the resized alpha is 0.
    """
    from ..compositing import premultiply, unpremultiply

    if tuple(rgba.shape[-2:]) == tuple(size):
        return rgba
    shrink = size[0] < rgba.shape[-2] or size[1] < rgba.shape[-1]
    resized = nnf.interpolate(premultiply(rgba.float()), size=size, mode="bilinear", align_corners=False,
                              antialias=shrink).clamp(0, 1)
    return unpremultiply(resized)


def downscale_bands(bands: Iterable[tuple[int, np.ndarray]], height: int, width: int,
                    size: tuple[int, int]) -> torch.Tensor:
    """A ``height x width`` image given as bands of rows, resized to ``size``: [1, 3, h, w] float32 in ``[0, 1]``.

    ``bands``: ``(first row, [r, W, C])`` in order (``uint8``, ``uint16`` or float in ``[0, 1]``; the first
    three channels are used). Bilinear, antialiased when shrinking, as one ``nnf.interpolate`` of the whole
    image but separably: each band is resized along its rows first (``[3, H, w]`` is all that is kept), then
    the columns; so the memory is one band, never a ``float32`` copy of the image.
    """
    h, w = size
    rows = torch.empty((1, 3, height, w), dtype=torch.float32)
    for r0, band in bands:
        part = torch.from_numpy(np.ascontiguousarray(_to_unit_float(band[..., :3]))).permute(2, 0, 1)[None]
        rows[:, :, r0:r0 + part.shape[2]] = nnf.interpolate(part, size=(part.shape[2], w), mode="bilinear",
                                                            align_corners=False, antialias=w < width)
    return nnf.interpolate(rows, size=(h, w), mode="bilinear", align_corners=False, antialias=h < height)


def array_bands(array: np.ndarray, rows: int = BAND_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, array[r0:r0 + rows])`` views of an ``[H, W, C]`` array, for :func:`downscale_bands`."""
    for r0 in range(0, array.shape[0], rows):
        yield r0, array[r0:r0 + rows]


def box_cells(box: Sequence[int], height: int, width: int, size: tuple[int, int]) -> torch.Tensor:
    """Working-size region mask [1, 1, h, w] (0 / 1) of a pixel box of a ``height x width`` image.

    Equal to area-resizing the full-size box mask and keeping cells covered by more than
    :data:`REGION_COVERAGE`, from two 1-D profiles instead of a full-size mask.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = size
    rows = torch.zeros(1, 1, height)
    rows[..., y0:y1] = 1.0
    cols = torch.zeros(1, 1, width)
    cols[..., x0:x1] = 1.0
    cover = nnf.adaptive_avg_pool1d(rows, h)[0, 0, :, None] * nnf.adaptive_avg_pool1d(cols, w)[0, 0, None, :]
    return (cover > REGION_COVERAGE).float()[None, None]


def _source_index(out_size: int, in_size: int, start: int = 0, stop: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps (``align_corners=False``) of output pixels ``start:stop`` when ``in_size`` -> ``out_size``:
    the two input indices and the weight of the second, as ``nnf.interpolate`` computes them."""
    dst = np.arange(start, out_size if stop is None else stop, dtype=np.float64)
    src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _reach(out_size: int, in_size: int, first: int, last: int) -> tuple[int, int]:
    """The output pixels ``[start, stop)`` whose bilinear taps touch input pixels ``first..last`` (inclusive)."""
    i0, i1, _ = _source_index(out_size, in_size)
    hit = np.nonzero((i1 >= first) & (i0 <= last))[0]
    return int(hit[0]), int(hit[-1]) + 1


def upscale_layer(layer: torch.Tensor, height: int, width: int, rows: int = BAND_ROWS, dtype: Any = np.uint16
                  ) -> tuple[np.ndarray, tuple[int, int]] | None:
    """A working-size layer brought to ``height x width`` over its support only, a band of rows at a time.

    Args:
        layer: straight RGBA [4, h, w] in ``[0, 1]`` with ``h <= height``, ``w <= width`` (upscaling).
        dtype: ``np.uint16`` or ``np.uint8``: the planes' integers.
    Returns:
        ``(planes, (left, top))``: integer planes [4, r, c] of the full-size rectangle that every pixel with
        resized alpha at or above :data:`ALPHA_FLOOR` lies in, and its offset; ``None`` when there is none.
        The values are those of :func:`resize_premultiplied` (bilinear through premultiplied colour) with
        alpha under :data:`ALPHA_FLOOR` set to exactly 0 (colour too), rounded half up to 1/65535 or 1/255
        (0 stays 0; the floor is at least half a step, so no visible pixel rounds to 0).
    """
    from ..compositing import UNPREMULTIPLY_EPS, premultiply

    _, h, w = layer.shape
    premul = premultiply(layer.float().clamp(0, 1))
    # A resized alpha is a convex mix of at most 2 x 2 working-size alphas: below the floor wherever they all are.
    support = layer[3] >= ALPHA_FLOOR * (1 - 1e-4)
    if not bool(support.any()):
        return None
    cells_r = torch.nonzero(support.any(dim=1))[:, 0]
    cells_c = torch.nonzero(support.any(dim=0))[:, 0]
    top, bottom = _reach(height, h, int(cells_r[0]), int(cells_r[-1]))
    left, right = _reach(width, w, int(cells_c[0]), int(cells_c[-1]))
    c0, c1, cw = (torch.from_numpy(a) for a in _source_index(width, w, left, right))
    columns = torch.zeros(w, right - left)  # the column taps as a matrix: one product per band
    span = torch.arange(right - left)
    columns.index_put_((c0, span), 1 - cw, accumulate=True)
    columns.index_put_((c1, span), cw, accumulate=True)
    top_value = float(np.iinfo(dtype).max)
    planes = np.empty((4, bottom - top, right - left), dtype)
    for r0 in range(top, bottom, rows):
        r1 = min(r0 + rows, bottom)
        i0, i1, rw = (torch.from_numpy(a) for a in _source_index(height, h, r0, r1))
        band = torch.matmul(premul[:, i0] * (1 - rw[None, :, None]) + premul[:, i1] * rw[None, :, None], columns)
        band.clamp_(0, 1)  # [4, r, c] premultiplied
        alpha = band[3]
        alpha.masked_fill_(alpha < ALPHA_FLOOR, 0.0)  # the RGBA VAE's noise around 0: B stays untouched there
        inverse = torch.reciprocal(alpha).masked_fill_(alpha <= UNPREMULTIPLY_EPS, 0.0)
        band[:3].mul_(inverse).clamp_(0, 1)  # straight colour, 0 where alpha is 0
        band.mul_(top_value).add_(0.5)  # round half up: the values are >= 0.5, so truncation is the floor
        planes[:, r0 - top:r1 - top] = band.numpy()  # numpy's float -> unsigned cast truncates
    return planes, (left, top)


def _background_array(background: Any) -> np.ndarray:
    """The caller's background as an ``[H, W, 3|4]`` array, unchanged where it already is one."""
    if isinstance(background, np.ndarray):
        array = background
    elif isinstance(background, torch.Tensor):
        tensor = background.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] not in (3, 4):
            raise LaminaError(f"background tensor must be [3, H, W] (or [1, 3, H, W]) in [0, 1], got "
                              f"{tuple(background.shape)}")
        array = tensor.permute(1, 2, 0).numpy()
    elif hasattr(background, "mode") and hasattr(background, "size"):  # PIL image
        array = np.asarray(background.convert("RGB") if background.mode not in ("RGB", "RGBA") else background)
    else:
        raise LaminaError(f"background must be a PIL image, an [H, W, 3] array or a [3, H, W] tensor, got "
                          f"{type(background).__name__}")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise LaminaError(f"background must be [H, W, 3], got shape {tuple(array.shape)}")
    return array


def _region_mask(box: Any, mask: Any, height: int, width: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The full-size region ``[H, W]`` (bool) of a box or a mask, and its bounding box."""
    if (box is None) == (mask is None):
        raise LaminaError("give exactly one of box=(x0, y0, x1, y1) and mask=[H, W]")
    if box is not None:
        x0, y0, x1, y1 = check_box(box, width, height)
        region = np.zeros((height, width), dtype=bool)
        region[y0:y1, x0:x1] = True
        return region, (x0, y0, x1, y1)
    region = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if region.ndim == 3 and region.shape[-1] == 1:
        region = region[..., 0]
    if region.shape != (height, width):
        raise LaminaError(f"mask must be [H, W] = [{height}, {width}] like the background, got {region.shape}")
    region = region.astype(np.float32) > (MASK_THRESHOLD * (255 if region.dtype == np.uint8 else 1))
    if not region.any():
        raise LaminaError("the region mask is empty")
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    return region, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


class BFSPipeline(DiffusionPipeline):
    """BFS: one straight-alpha layer (object + shadows/reflections) for a background, a region and a caption.

    Components (FLUX.1-Fill's, plus two): ``scheduler`` (flow-matching Euler), ``vae`` (RGB;
    decodes the composite branch), ``trans_vae`` (RGBA, :mod:`.transparency`; decodes the layer),
    ``text_encoder`` / ``tokenizer`` (CLIP), ``text_encoder_2`` / ``tokenizer_2`` (T5),
    ``transformer`` (a stock Fill ``FluxTransformer2DModel``) and ``joint``
    (:class:`~lamina.bfs.joint.BFSJointAdapter`, attached to the transformer here).

    Config: ``resolution`` (short side the model works at), ``inference_steps``,
    ``guidance_scale`` (the guidance embedding's value for guidance-distilled transformers, else the
    true-CFG scale; 1 means no CFG), ``max_sequence_length`` (T5 tokens), ``box_share`` (``None``: the
    model sees the whole background, as in the paper; else it samples in a window around the region whose
    side the region's longer side takes this share of, never smaller than ``resolution`` pixels: see
    :func:`sampling_window`).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->transformer->vae->trans_vae"
    _optional_components: list[str] = []

    def __init__(self, scheduler: Any, vae: Any, trans_vae: Any, text_encoder: Any, tokenizer: Any,
                 text_encoder_2: Any, tokenizer_2: Any, transformer: Any, joint: BFSJointAdapter,
                 resolution: int = 512, inference_steps: int = 50, guidance_scale: float = 30.0,
                 max_sequence_length: int = 512, box_share: float | None = None) -> None:
        super().__init__()
        if box_share is not None and not 0.0 < float(box_share) <= 1.0:
            raise LaminaError(f"box_share must be in (0, 1] (or None: the whole background), got {box_share}")
        self.register_modules(scheduler=scheduler, vae=vae, trans_vae=trans_vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                              transformer=transformer, joint=joint)
        self.register_to_config(resolution=int(resolution), inference_steps=int(inference_steps),
                                guidance_scale=float(guidance_scale), max_sequence_length=int(max_sequence_length),
                                box_share=None if box_share is None else float(box_share))
        multiple = self.packing_multiple
        if resolution % multiple:
            raise LaminaError(f"BFS resolution {resolution} must be a multiple of {multiple} (VAE factor x 2)")
        if int(trans_vae.config.latent_channels) != int(vae.config.latent_channels):
            raise LaminaError(f"trans_vae has {trans_vae.config.latent_channels} latent channels, the VAE "
                              f"{vae.config.latent_channels}")
        joint.attach(transformer)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, components: dict[str, Any], resolution: int = 64, inference_steps: int = 20,
                        guidance_scale: float = 1.0, max_sequence_length: int = 24,
                        box_share: float | None = None) -> BFSPipeline:
        """A pipeline from a dict of components (e.g. :func:`~lamina.bfs.components.build_components`)."""
        names = ("scheduler", "vae", "trans_vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                 "transformer", "joint")
        missing = [n for n in names if n not in components]
        if missing:
            raise LaminaError(f"BFS components missing: {missing}")
        return cls(**{n: components[n] for n in names}, resolution=resolution, inference_steps=inference_steps,
                   guidance_scale=guidance_scale, max_sequence_length=max_sequence_length, box_share=box_share)

    @classmethod
    def from_fill(
        cls,
        model: str | Path,
        trans_vae: Any = None,
        joint: Any = None,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        rank: int = 4,
        share_base: bool = True,
        resolution: int | None = None,
        inference_steps: int = 50,
        guidance_scale: float | None = None,
        max_sequence_length: int = 512,
        box_share: float | None = None,
        **kwargs: Any,
    ) -> BFSPipeline:
        """BFS on a FLUX.1-Fill-style model (hub id, e.g. ``black-forest-labs/FLUX.1-Fill-dev``, or folder).

        Args:
            trans_vae: the RGBA VAE: a folder / hub id, an ``AutoencoderKL``, or ``None`` for the Fill VAE
                widened to RGBA (:func:`~lamina.bfs.transparency.widen_vae`; untrained: opaque layers).
            joint: a :class:`BFSJointAdapter`, a folder / hub id saved by it, or ``None`` for a new one
                (``rank``, ``share_base``; zero ``post``: the layer branch then equals the composite branch).
            torch_dtype, device: for every component (e.g. ``torch.bfloat16``, ``"cuda"``).
            resolution: short side to work at; default ``64 x`` the VAE factor (512 for FLUX).
            guidance_scale: default 30 for a guidance-distilled transformer (Fill-dev), else 1 (no CFG).
            box_share: sample in a window around the region (:func:`sampling_window`); default ``None``, the
                whole background, as the paper does.
            kwargs: more ``from_pretrained`` options (``revision``, ``local_files_only``...).
        """
        from diffusers import AutoencoderKL, FluxFillPipeline

        from ..extras import require
        from ..hub import from_pretrained

        require("transformers", "prompt")  # the CLIP / T5 text encoders
        from .transparency import widen_vae

        kwargs.pop("local_files_only", None)  # lamina.hub decides: folders and the cache first
        fill = from_pretrained(FluxFillPipeline, model, "Fill model", torch_dtype=torch_dtype, **kwargs)
        if isinstance(trans_vae, (str, Path)):
            trans_vae = from_pretrained(AutoencoderKL, trans_vae, "transparency VAE", torch_dtype=torch_dtype)
        if isinstance(joint, (str, Path)):
            joint = from_pretrained(BFSJointAdapter, joint, "BFS joint adapter", torch_dtype=torch_dtype)

        parts = dict(fill.components)
        transformer = parts["transformer"]
        if trans_vae is None:
            trans_vae = widen_vae(parts["vae"])
        if joint is None:
            joint = BFSJointAdapter.for_transformer(transformer, rank=rank, lora_alpha=float(rank),
                                                    share_base=share_base)
        factor = vae_scale_factor(parts["vae"])
        guided = bool(transformer.config.guidance_embeds)
        pipe = cls(scheduler=parts["scheduler"], vae=parts["vae"], trans_vae=trans_vae,
                   text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
                   text_encoder_2=parts["text_encoder_2"], tokenizer_2=parts["tokenizer_2"],
                   transformer=transformer, joint=joint, resolution=resolution or 64 * factor,
                   inference_steps=inference_steps,
                   guidance_scale=guidance_scale if guidance_scale is not None else (30.0 if guided else 1.0),
                   max_sequence_length=max_sequence_length, box_share=box_share)
        if torch_dtype is not None:
            pipe.trans_vae.to(dtype=torch_dtype)
            pipe.joint.to(dtype=torch_dtype)
        if device is not None:
            pipe.to(device)
        return pipe

    # ------------------------------------------------------------ geometry
    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    @property
    def packing_multiple(self) -> int:
        """Working sizes are multiples of this: the VAE factor times FLUX's 2x2 packing."""
        return 2 * self.vae_scale_factor

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the model runs at for a ``height x width`` background (:func:`working_size`)."""
        return working_size(height, width, int(self.config.resolution), self.packing_multiple)

    # ------------------------------------------------------------ sampling
    def is_bounded(self, height: int, width: int) -> bool:
        """Whether a ``height x width`` background takes the bounded path by default: its longer side is above
        :data:`BOUNDED_SIDE` and the model's working size is no larger than it on either side."""
        h, w = self.working_size(height, width)
        return max(height, width) > BOUNDED_SIDE and h <= height and w <= width

    def sampling_window(self, bbox: Sequence[int], height: int, width: int,
                        crop: bool | None = None) -> tuple[int, int, int, int]:
        """The rectangle ``(x0, y0, x1, y1)`` the model samples in for a region with box ``bbox``.

        ``crop``: ``None`` follows the pipeline's ``box_share`` (``None``: the whole background); ``False`` is
        the whole background; ``True`` a window around the region (:func:`sampling_window`) with the
        pipeline's ``box_share``, or :data:`DEFAULT_BOX_SHARE` when it has none.
        """
        share = self.config.get("box_share")
        if crop is False:
            share = None
        elif crop and share is None:
            share = DEFAULT_BOX_SHARE
        return sampling_window(bbox, height, width, share, int(self.config.resolution))

    @torch.no_grad()
    def __call__(
        self,
        background: Any,
        box: Sequence[int] | None = None,
        mask: Any = None,
        prompt: str = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        return_composite: bool = False,
        bounded: bool | None = None,
        crop: bool | None = None,
    ) -> LayeredImage:
        """Synthesise one layer for ``prompt`` in the region (``box`` or ``mask``) over ``background``.

        Args:
            background: PIL image, NumPy ``[H, W, 3]`` (float in ``[0, 1]``, uint8 or uint16) or torch ``[3, H, W]``
                in ``[0, 1]``; any size (the model works at :meth:`working_size` of its sampling window).
            box: ``(x0, y0, x1, y1)`` pixel box of the object (exclusive end), or
            mask: ``[H, W]`` region mask (> 0.5 inside).
            prompt: the object's caption (names the layer).
            num_inference_steps, guidance_scale: default to the pipeline's config.
            generator: for the initial noise of both branches.
            return_composite: add the decoded composite branch as a hidden top layer ``"bfs composite"``
                (a preview; BFS's output composite is the layer over the untouched background).
            bounded: memory bounded by the layer's area rather than the window's size (default: for large
                windows, :meth:`is_bounded`): the background is downscaled a band at a time without a
                ``float32`` copy, and the layer is made only over the rectangle its alpha can reach (an offset
                layer, stored as ``uint16``), resized back a band at a time.
            crop: sample in a window around the region rather than over the whole background
                (:meth:`sampling_window`; default: the pipeline's ``box_share``). A small box on a large photo
                then gets the model's full resolution instead of a few of its pixels.
        Returns:
            ``LayeredImage(background, [Layer(F, name=prompt)])``: the background is the caller's, untouched;
            ``F`` is straight RGBA over the sampling window (an offset layer; the whole background's size
            without a window), or, bounded, over the rectangle its alpha reaches.
        """
        full = _background_array(background)
        full_height, full_width = full.shape[:2]
        if box is not None and mask is None:
            bbox, region = check_box(box, full_width, full_height), None
        else:
            region, bbox = _region_mask(box, mask, full_height, full_width)
        window = self.sampling_window(bbox, full_height, full_width, crop)
        left, top, right, bottom = window
        array = full[top:bottom, left:right]  # a view
        height, width = bottom - top, right - left
        inner = (bbox[0] - left, bbox[1] - top, bbox[2] - left, bbox[3] - top)
        size = self.working_size(height, width)
        if bounded is None:
            bounded = self.is_bounded(height, width)
        bounded = bool(bounded) and size[0] <= height and size[1] <= width  # the band upscale only enlarges
        if region is None:
            small_mask = box_cells(inner, height, width, size)
        else:
            inside = torch.from_numpy(region[top:bottom, left:right].astype(np.float32))[None, None]
            small_mask = (nnf.interpolate(inside, size=size, mode="area") > REGION_COVERAGE).float()
            del region, inside
        if bounded:
            small = downscale_bands(array_bands(array), height, width, size)
        else:
            rgb = torch.from_numpy(np.ascontiguousarray(_to_unit_float(array)[..., :3])).permute(2, 0, 1)[None]
            small = nnf.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
            del rgb
        layers = self.layers_over(small, small_mask, height, width, inner, prompt, num_inference_steps,
                                  guidance_scale, generator, return_composite, bounded)
        place_in_window(layers, window, bbox)
        steps, scale = layers[0].metadata["steps"], layers[0].metadata["guidance_scale"]
        metadata = {"method": "bfs", "prompt": prompt, "box": list(bbox), "steps": steps, "guidance_scale": scale,
                    "working_size": list(size), "window": list(window)}
        return LayeredImage(full, layers, metadata=metadata)

    @torch.no_grad()
    def layer_from_bands(
        self,
        bands: Iterable[tuple[int, np.ndarray]],
        height: int,
        width: int,
        box: Sequence[int],
        prompt: str = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        crop: bool | None = None,
        layer_dtype: Any = np.uint16,
    ) -> Layer:
        """The bounded path for a background given as bands of rows: the layer for ``box`` in its sampling window.

        Args:
            bands: ``(first row, [r, W, C])`` of the whole ``height x width`` background, in order (e.g.
                :meth:`~lamina.LayeredImage.iter_composite`); only the rows of the window are read, cut to it.
            box: ``(x0, y0, x1, y1)`` in full-size pixels; ``crop`` as in :meth:`__call__`.
        Returns:
            The layer over the rectangle its alpha reaches (integers of ``layer_dtype``), on the whole background
            (:func:`place_in_window`); a window smaller than the working size gives a ``float32`` layer over it.
        """
        window = self.sampling_window(box, height, width, crop)
        left, top, right, bottom = window
        rows, cols = bottom - top, right - left
        size = self.working_size(rows, cols)
        inner = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
        small = downscale_bands(_window_bands(bands, window), rows, cols, size)
        fits = size[0] <= rows and size[1] <= cols  # the band upscale only enlarges
        layer = self.layers_over(small, box_cells(inner, rows, cols, size), rows, cols, inner, prompt,
                                 num_inference_steps, guidance_scale, generator, bounded=fits,
                                 layer_dtype=layer_dtype)[0]
        place_in_window([layer], window, box)
        return layer

    @torch.no_grad()
    def layers_over(
        self,
        small: torch.Tensor,
        small_mask: torch.Tensor,
        height: int,
        width: int,
        bbox: Sequence[int],
        prompt: str = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        return_composite: bool = False,
        bounded: bool = False,
        layer_dtype: Any = np.uint16,
    ) -> list[Layer]:
        """The layer (and, with ``return_composite``, the hidden preview) for a background already at the working size.

        Args:
            small: the ``height x width`` background (or sampling window of one) at :meth:`working_size`:
                [1, 3, h, w] in ``[0, 1]`` (e.g. :func:`downscale_bands` of a composite's bands).
            small_mask: the region there, [1, 1, h, w] in ``{0, 1}`` (e.g. :func:`box_cells`).
            bbox: the region's pixel box (recorded in the layer's metadata).
            bounded: the layer over its rectangle only (:func:`upscale_layer`, integers of ``layer_dtype``:
                ``np.uint16`` or ``np.uint8``), else full size ``float32``.
        Returns:
            ``[Layer(F, name=prompt)]`` (+ ``"bfs composite"``) in the coordinates of the ``height x width``
            image (:func:`place_in_window` moves them onto a larger background).
        """
        steps = int(num_inference_steps or self.config.inference_steps)
        if steps < 1:
            raise LaminaError(f"num_inference_steps must be >= 1, got {steps}")
        scale = float(self.config.guidance_scale if guidance_scale is None else guidance_scale)
        device = self._execution_device
        dtype = self.transformer.dtype
        h, w = small.shape[-2:]

        # 1. background and region at the working size
        vae_dtype = self.vae.dtype
        condition = prepare_fill_condition(self.vae, (small * 2 - 1).to(device, vae_dtype),
                                           small_mask.to(device, vae_dtype))

        # 2. text
        guided = bool(self.transformer.config.guidance_embeds)
        cfg = not guided and scale > 1.0
        texts = [prompt, ""] if cfg else [prompt]
        text = encode_prompts(texts, self.tokenizer, self.text_encoder, self.tokenizer_2, self.text_encoder_2,
                              int(self.config.max_sequence_length), device=device, dtype=dtype)

        # 3. noise and schedule
        lh, lw = h // self.vae_scale_factor, w // self.vae_scale_factor
        channels = int(self.vae.config.latent_channels)
        tokens = (lh // 2) * (lw // 2)
        noise = torch.randn((2, tokens, 4 * channels), generator=generator, dtype=torch.float32)
        latents = noise.to(device=device, dtype=dtype)  # rows: [x; y]
        img_ids = latent_image_ids(lh, lw, device=device, dtype=dtype)
        sched = self.scheduler.config
        mu = calculate_shift(tokens, sched.get("base_image_seq_len", 256), sched.get("max_image_seq_len", 4096),
                             sched.get("base_shift", 0.5), sched.get("max_shift", 1.15))
        self.scheduler.set_timesteps(sigmas=flux_sigmas(steps), device=device, mu=mu)

        # 4. denoise both branches together
        repeat = len(texts)
        cond = condition.repeat(repeat, 1, 1)
        disable = getattr(self, "_progress_bar_config", {}).get("disable")
        for t in progress(self.scheduler.timesteps, desc="BFS sampling", disable=disable):
            lx, ly = latents[:1].repeat(repeat, 1, 1), latents[1:].repeat(repeat, 1, 1)
            sigma = (t / self.scheduler.config.num_train_timesteps).to(dtype)
            out = predict_velocity(self.transformer, self.joint, lx, ly, cond, text.prompt_embeds, text.pooled,
                                   text.text_ids, img_ids, sigma, guidance=scale if guided else None)
            velocity = torch.cat([out.velocity_x, out.velocity_y])  # [x_c, (x_u), y_c, (y_u)]
            if cfg:
                v = velocity.view(2, 2, *velocity.shape[1:])
                velocity = v[:, 1] + scale * (v[:, 0] - v[:, 1])
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]

        # 5. decode: the layer with the RGBA VAE, the composite (preview only) with the RGB VAE
        from .transparency import decode_layer

        grid = unpack_latents(latents.float(), lh, lw)
        layer_small = decode_layer(self.trans_vae, grid[1:].to(self.trans_vae.dtype)).float().cpu()
        name = prompt.strip() or "layer"
        meta = {"caption": prompt, "box": [int(v) for v in bbox], "method": "bfs", "steps": steps,
                "guidance_scale": scale}
        if bounded:
            placed = upscale_layer(layer_small[0], height, width, dtype=layer_dtype)
            if placed is None:  # nothing visible: a clear layer over the box
                x0, y0, x1, y1 = (int(v) for v in bbox)
                placed = np.zeros((4, y1 - y0, x1 - x0), layer_dtype), (x0, y0)
            layer = Layer.from_planes(placed[0], name, offset=placed[1], metadata=meta)
        else:
            layer_full = resize_premultiplied(layer_small, (height, width))[0].permute(1, 2, 0).numpy()
            faint = layer_full[..., 3] < ALPHA_FLOOR  # the RGBA VAE's noise around 0: B stays untouched there
            layer_full[faint] = 0.0
            layer = Layer(np.ascontiguousarray(layer_full), name=name, metadata=meta)
        layers = [layer]
        if return_composite:
            composite = decode_latents(self.vae, grid[:1].to(self.vae.dtype)).float().cpu()
            composite = ((composite + 1) / 2).clamp(0, 1)
            preview = {"preview": "decoded composite branch"}
            if bounded:  # a preview: 8 bits, resized by Pillow (no float32 canvas)
                from PIL import Image

                small_u8 = composite[0].mul(255).add(0.5).floor().to(torch.uint8).permute(1, 2, 0).numpy()
                big = Image.fromarray(small_u8).resize((width, height), Image.Resampling.BILINEAR)
                layers.append(Layer(np.asarray(big), name="bfs composite", visible=False, metadata=preview))
            else:
                composite = nnf.interpolate(composite, size=(height, width), mode="bilinear", align_corners=False)
                layers.append(Layer(composite[0].clamp(0, 1).permute(1, 2, 0).numpy(), name="bfs composite",
                                    visible=False, metadata=preview))
        return layers


def _window_bands(bands: Iterable[tuple[int, np.ndarray]], window: Sequence[int]
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, band)`` of a whole canvas cut to ``window`` ``(x0, y0, x1, y1)``: rows counted from its top."""
    left, top, right, bottom = window
    for r0, band in bands:
        if r0 >= bottom:
            break
        first, last = max(r0, top), min(r0 + band.shape[0], bottom)
        if first < last:
            yield first - top, band[first - r0:last - r0, left:right]


def place_in_window(layers: Sequence[Layer], window: Sequence[int], bbox: Sequence[int]) -> None:
    """Layers made for the sampling ``window`` ``(x0, y0, x1, y1)`` moved onto the whole background, in place:
    offsets shifted by the window's corner, and the region's box ``bbox`` and the window in full-size
    coordinates in their metadata."""
    left, top = int(window[0]), int(window[1])
    for layer in layers:
        layer.offset = (layer.offset[0] + left, layer.offset[1] + top)
        if "box" in layer.metadata:
            layer.metadata["box"] = [int(v) for v in bbox]
        layer.metadata["window"] = [int(v) for v in window]


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` as float32 in ``[0, 1]`` (integers rescaled)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    out = array.astype(np.float32)
    if not np.isfinite(out).all() or out.min() < -1e-4 or out.max() > 1 + 1e-4:
        raise LaminaError("background floats must be finite and in [0, 1]")
    return out.clip(0, 1)


def load_pipeline(model: str | Path, **kwargs: Any) -> BFSPipeline:
    """A saved :class:`BFSPipeline` (folder or hub id), or BFS on a FLUX.1-Fill-style model (``from_fill``).

    The folder's (or hub repo's) ``model_index.json`` decides; errors are one line (:mod:`lamina.hub`).
    ``kwargs`` go to ``from_pretrained`` / :meth:`BFSPipeline.from_fill`.
    """
    import json

    from ..extras import require
    from ..hub import from_pretrained, hub_errors, hub_unreachable, is_local, load_error

    require("transformers", "prompt")  # the CLIP / T5 text encoders

    path = Path(model).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise LaminaError(f"BFS model {model}: no model_index.json (not a saved pipeline or Fill model)")
    elif is_local(model):
        raise LaminaError(f"BFS model {model}: not a folder saved by BFSPipeline.save_pretrained")
    else:
        from huggingface_hub import hf_hub_download

        revision = kwargs.get("revision")
        try:
            index = Path(hf_hub_download(str(model), "model_index.json", revision=revision, local_files_only=True))
        except hub_errors():
            reason = hub_unreachable()
            if reason is not None:
                raise LaminaError(f"cannot load the BFS model {str(model)!r}: it is not in the local Hugging Face "
                                  f"cache and {reason}") from None
            try:
                index = Path(hf_hub_download(str(model), "model_index.json", revision=revision))
            except hub_errors() as exc:
                raise load_error("BFS model", model, exc) from None
    name = json.loads(index.read_text()).get("_class_name")
    if name == "BFSPipeline":
        return from_pretrained(BFSPipeline, model, "BFS model", **kwargs)
    if name == "FluxFillPipeline":
        return BFSPipeline.from_fill(model, **kwargs)
    raise LaminaError(f"{model}: a {name}, neither a BFSPipeline nor a FluxFillPipeline")
