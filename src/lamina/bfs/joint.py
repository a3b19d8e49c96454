"""BFS's dual-branch coupling on a stock :class:`~diffusers.FluxTransformer2DModel`, through attention processors.

BFS runs one FLUX transformer on a batch ``[x; y]``: the first half of the rows is the
*composite* branch ``x``, the second half the *foreground layer* branch ``y`` (row ``i`` of
``x`` pairs with row ``i`` of ``y``). The branches see the same caption, condition and
timestep; they are coupled by *joint attention* in every block, and told apart only by
branch-specific LoRAs (UniCon-style; the official code patches the block classes, we do not).

In every dual-stream and single-stream block, :class:`BFSJointProcessor` wraps the block's own
processor:

1. it runs the stock processor: the block's ordinary attention output ``o``;
2. on the detached tokens ``h`` of the block (dual blocks: image tokens; single blocks: the
   whole ``[text; image]`` sequence, as the official code does, or only the image tokens with
   ``single_tokens="image"``) it computes joint attention both ways,
   ``J_x = Attn(Q(h_x), K(h_y), V(h_y))`` and ``J_y = Attn(Q(h_y), K(h_x), V(h_x))``, with
   ``P(h) = W_P h + b_P + s * B_{br(h)} A_{br(h)} h`` for ``P in {q, k, v}`` (``br(h)`` the branch
   ``h`` comes from: the ``x`` LoRA acts on the composite branch's features wherever they
   appear, the ``y`` LoRA on the foreground's), the block's q/k RMS norms, rotary embedding
   (dual blocks: the image slice of the block's RoPE, so that equal pixels share positions),
   and SDPA; dual blocks then apply ``to_out`` with the query branch's LoRA;
3. it adds ``scale * post(J)`` to the image part of ``o``: dual blocks after ``to_out`` and before
   the block's gate (the processor's first output *is* that tensor), single blocks before
   ``proj_out`` (the processor's output is the attention half of ``proj_out``'s input).

``post`` is a bias-free ``d x d`` linear shared by both rows, initialised to zero, so a new
adapter leaves the transformer's output unchanged bit for bit. ``W_P`` are the block's own
(frozen) projections with ``share_base=True`` (FLUX size) or trainable copies of them
(``share_base=False``, the tiny model; initialised from the base by :meth:`BFSJointAdapter.for_transformer`).

The joint path is skipped when :attr:`BFSJointAdapter.enabled` is False or when the
transformer is called with ``joint_attention_kwargs={"bfs_joint": False}``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

from ..errors import LaminaError

#: Projections carrying a LoRA in dual-stream blocks and in single-stream blocks (no ``to_out`` there).
DUAL_PROJECTIONS = ("q", "k", "v", "out")
SINGLE_PROJECTIONS = ("q", "k", "v")
#: Branch names: ``x`` the composite rows (first half of the batch), ``y`` the foreground rows.
BRANCHES = ("x", "y")
#: Token sets the single-stream joint attention may use.
SINGLE_TOKEN_MODES = ("all", "image")


def dual_key(index: int) -> str:
    """Key of dual-stream block ``index`` in :attr:`BFSJointAdapter.blocks`."""
    return f"d{index}"


def single_key(index: int) -> str:
    """Key of single-stream block ``index`` in :attr:`BFSJointAdapter.blocks`."""
    return f"s{index}"


class LoRA(nn.Module):
    """Low-rank update ``scaling * up(down(h))``; ``down`` [r, d_in] default-initialised, ``up`` [d_out, r] zero."""

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scaling = scaling

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        dtype = self.down.weight.dtype
        return (self.up(self.down(h.to(dtype))) * self.scaling).to(h.dtype)


class JointBlock(nn.Module):
    """The joint-attention weights of one transformer block: per-branch LoRAs, ``post``, optional projection copies."""

    def __init__(self, dim: int, heads: int, head_dim: int, rank: int, scaling: float, dual: bool,
                 share_base: bool, eps: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.dual = dual
        self.heads = heads
        self.head_dim = head_dim
        names = DUAL_PROJECTIONS if dual else SINGLE_PROJECTIONS
        sizes = {"q": (dim, inner), "k": (dim, inner), "v": (dim, inner), "out": (inner, dim)}
        self.lora = nn.ModuleDict({
            branch: nn.ModuleDict({p: LoRA(*sizes[p], rank, scaling) for p in names}) for branch in BRANCHES
        })
        self.post = nn.Linear(inner if not dual else dim, dim, bias=False)
        nn.init.zeros_(self.post.weight)
        self.proj: nn.ModuleDict | None = None
        self.norm_q: nn.Module | None = None
        self.norm_k: nn.Module | None = None
        if not share_base:
            self.make_copies(eps)

    def make_copies(self, eps: float) -> None:
        """Own (trainable) projections and q/k norms instead of the block's (initialise with :meth:`copy_from`)."""
        names = DUAL_PROJECTIONS if self.dual else SINGLE_PROJECTIONS
        inner = self.heads * self.head_dim
        dim = self.post.weight.shape[0]
        sizes = {"q": (dim, inner), "k": (dim, inner), "v": (dim, inner), "out": (inner, dim)}
        self.proj = nn.ModuleDict({p: nn.Linear(*sizes[p], bias=True) for p in names})
        self.norm_q = nn.RMSNorm(self.head_dim, eps=eps)
        self.norm_k = nn.RMSNorm(self.head_dim, eps=eps)

    @torch.no_grad()
    def copy_from(self, attn: nn.Module) -> None:
        """Set the copies to the block's own projections and norms (a no-op without copies)."""
        if self.proj is None:
            return
        for name, module in self.proj.items():
            source = attn.to_out[0] if name == "out" else getattr(attn, f"to_{name}")
            module.weight.copy_(source.weight)
            if source.bias is not None:
                module.bias.copy_(source.bias)
            else:
                module.bias.zero_()
        for mine, theirs in ((self.norm_q, attn.norm_q), (self.norm_k, attn.norm_k)):
            if getattr(theirs, "weight", None) is not None:
                mine.weight.copy_(theirs.weight)

    # ------------------------------------------------------------ math
    def _project(self, attn: nn.Module, name: str, h: torch.Tensor) -> torch.Tensor:
        """``W_P h + b_P + LoRA_{branch(row)}(h)`` for the [x; y] rows ``h`` [2B, S, d_in]."""
        if self.proj is not None:
            base = self.proj[name]
        else:
            base = attn.to_out[0] if name == "out" else getattr(attn, f"to_{name}")
        x, y = h.chunk(2)
        low_rank = torch.cat([self.lora["x"][name](x), self.lora["y"][name](y)])
        return base(h) + low_rank

    def delta(self, attn: nn.Module, tokens: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None,
              scale: float, backend: Any = None) -> torch.Tensor:
        """``scale * post([J_x; J_y])`` [2B, S, d] for the block's tokens [2B, S, d] (first half x, second half y).

        Every row is projected with its own branch's LoRA (so the ``x`` LoRA acts on the composite rows
        whether they serve as queries or as keys/values); then the keys and values of the two halves
        are swapped, so that the x rows attend to the y rows and the y rows to the x rows.
        """
        if tokens.shape[0] % 2:
            raise LaminaError(f"BFS joint attention needs a batch of [composite; foreground] pairs, got an odd "
                              f"batch of {tokens.shape[0]}")
        h = tokens.detach()
        q = self._project(attn, "q", h).unflatten(-1, (-1, self.head_dim))
        k = self._project(attn, "k", h).unflatten(-1, (-1, self.head_dim))
        v = self._project(attn, "v", h).unflatten(-1, (-1, self.head_dim))
        q = (self.norm_q or attn.norm_q)(q)
        k = (self.norm_k or attn.norm_k)(k)
        if rotary is not None:
            q = apply_rotary_emb(q, rotary, sequence_dim=1)
            k = apply_rotary_emb(k, rotary, sequence_dim=1)
        k, v = (torch.cat(t.chunk(2)[::-1]) for t in (k, v))  # [y; x]
        joint = dispatch_attention_fn(q, k, v, backend=backend).flatten(2, 3).to(q.dtype)
        if self.dual:
            joint = self._project(attn, "out", joint)
        return (self.post(joint.to(self.post.weight.dtype)) * scale).to(tokens.dtype)


def image_rotary(rotary: tuple[torch.Tensor, torch.Tensor] | None, image_tokens: int
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The image-token slice (the last ``image_tokens`` rows; text comes first) of FLUX's ``(cos, sin)`` RoPE."""
    if rotary is None:
        return None
    cos, sin = rotary
    return cos[-image_tokens:], sin[-image_tokens:]


class BFSJointProcessor:
    """Attention processor of one block: the wrapped stock processor, plus BFS's joint attention delta.

    Extra ``joint_attention_kwargs`` it understands: ``bfs_joint`` (False skips the joint path)
    and ``bfs_image_tokens`` (the number of image tokens, needed in single-stream blocks when the
    adapter's ``single_tokens`` is ``"image"``).
    """

    def __init__(self, adapter: BFSJointAdapter, key: str, base: Any) -> None:
        self.adapter = adapter
        self.key = key
        self.base = base

    # diffusers sets these on every processor (``set_attention_backend``, context parallelism): share the base's
    @property
    def _attention_backend(self) -> Any:
        return getattr(self.base, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value: Any) -> None:
        self.base._attention_backend = value

    @property
    def _parallel_config(self) -> Any:
        return getattr(self.base, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value: Any) -> None:
        self.base._parallel_config = value

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        bfs_joint: bool | None = None,
        bfs_image_tokens: int | None = None,
    ) -> Any:
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        adapter = self.adapter
        if not adapter.enabled or bfs_joint is False:
            return out
        block: JointBlock = adapter.blocks[self.key]
        scale = float(adapter.config.scale)
        backend = self._attention_backend
        if encoder_hidden_states is not None:  # dual-stream: ``hidden_states`` are the image tokens only
            rotary = image_rotary(image_rotary_emb, hidden_states.shape[1])
            delta = block.delta(attn, hidden_states, rotary, scale, backend)
            return (out[0] + delta, *out[1:])
        if adapter.config.single_tokens == "all":
            return out + block.delta(attn, hidden_states, image_rotary_emb, scale, backend)
        if bfs_image_tokens is None:
            raise LaminaError("the BFS joint adapter (single_tokens='image') needs joint_attention_kwargs="
                              "{'bfs_image_tokens': N}")
        n = int(bfs_image_tokens)
        delta = block.delta(attn, hidden_states[:, -n:], image_rotary(image_rotary_emb, n), scale, backend)
        return torch.cat([out[:, :-n], out[:, -n:] + delta], dim=1)


class BFSJointAdapter(ModelMixin, ConfigMixin):
    """BFS's joint-attention weights for every block of a FLUX transformer (a pipeline component).

    Args:
        dim: the transformer's hidden size (``num_attention_heads * attention_head_dim``).
        num_attention_heads, attention_head_dim: its attention shape.
        num_layers, num_single_layers: its numbers of dual-stream and single-stream blocks.
        rank, lora_alpha: LoRA rank ``r`` and ``alpha`` (scaling ``alpha / r``); the official release uses 4 / 4.
        share_base: use the blocks' own (frozen) q/k/v/out projections and norms; else own trainable copies.
        single_tokens: ``"all"`` (the official code: ``[text; image]`` with the full RoPE) or ``"image"``.
        scale: multiplier of the ``post`` output (BFS's ``joint_scale``).
        eps: RMS-norm epsilon of the copies (FLUX: 1e-6).

    State dict keys: ``blocks.{d|s}{i}.lora.{x|y}.{q|k|v|out}.{down|up}.weight``,
    ``blocks.*.post.weight`` and, with copies, ``blocks.*.proj.{q|k|v|out}.{weight|bias}``,
    ``blocks.*.norm_{q|k}.weight``.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        dim: int = 3072,
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        num_layers: int = 19,
        num_single_layers: int = 38,
        rank: int = 4,
        lora_alpha: float = 4.0,
        share_base: bool = True,
        single_tokens: str = "all",
        scale: float = 1.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if single_tokens not in SINGLE_TOKEN_MODES:
            raise LaminaError(f"single_tokens must be one of {SINGLE_TOKEN_MODES}, got {single_tokens!r}")
        if rank < 1:
            raise LaminaError(f"the joint LoRA rank must be >= 1, got {rank}")
        scaling = float(lora_alpha) / rank
        args = (dim, num_attention_heads, attention_head_dim, rank, scaling)
        blocks = {dual_key(i): JointBlock(*args, dual=True, share_base=share_base, eps=eps) for i in range(num_layers)}
        blocks.update({single_key(i): JointBlock(*args, dual=False, share_base=share_base, eps=eps)
                       for i in range(num_single_layers)})
        self.blocks = nn.ModuleDict(blocks)
        #: Switch for the joint path (not saved); False makes an attached transformer behave as stock.
        self.enabled = True

    # ------------------------------------------------------------ construction
    @classmethod
    def for_transformer(cls, transformer: nn.Module, rank: int = 4, lora_alpha: float = 4.0, share_base: bool = True,
                        single_tokens: str = "all", scale: float = 1.0) -> BFSJointAdapter:
        """A new adapter shaped for ``transformer`` (copies, if any, initialised from its blocks; ``post`` zero)."""
        cfg = transformer.config
        adapter = cls(dim=int(cfg.num_attention_heads * cfg.attention_head_dim),
                      num_attention_heads=int(cfg.num_attention_heads),
                      attention_head_dim=int(cfg.attention_head_dim), num_layers=int(cfg.num_layers),
                      num_single_layers=int(cfg.num_single_layers), rank=rank, lora_alpha=lora_alpha,
                      share_base=share_base, single_tokens=single_tokens, scale=scale)
        adapter.copy_base(transformer)
        param = next(transformer.parameters())
        mine = next(adapter.parameters())
        if (mine.device, mine.dtype) != (param.device, param.dtype):
            adapter = adapter.to(device=param.device, dtype=param.dtype)
        return adapter

    def copy_base(self, transformer: nn.Module) -> None:
        """Initialise the projection copies (``share_base=False``) from ``transformer``'s attention weights."""
        self._check_shape(transformer)
        for key, attn in self._attentions(transformer):
            self.blocks[key].copy_from(attn)

    def make_copies(self, transformer: nn.Module) -> None:
        """Switch to own projections (``share_base=False``), initialised from ``transformer``; keeps LoRAs and post."""
        if not self.config.share_base:
            return
        param = next(self.parameters())
        for block in self.blocks.values():
            block.make_copies(float(self.config.eps))
        self.register_to_config(share_base=False)
        if (param.device, param.dtype) != (torch.device("cpu"), torch.float32):
            self.to(device=param.device, dtype=param.dtype)
        self.copy_base(transformer)

    # ------------------------------------------------------------ attaching
    def _check_shape(self, transformer: nn.Module) -> None:
        cfg = transformer.config
        mine = (self.config.num_layers, self.config.num_single_layers, self.config.num_attention_heads,
                self.config.attention_head_dim)
        theirs = (cfg.num_layers, cfg.num_single_layers, cfg.num_attention_heads, cfg.attention_head_dim)
        if tuple(int(v) for v in theirs) != tuple(int(v) for v in mine):
            raise LaminaError(f"the BFS joint adapter is shaped for (layers, single layers, heads, head dim) = "
                              f"{mine}, the transformer is {theirs}")

    @staticmethod
    def _attentions(transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        pairs = [(dual_key(i), b.attn) for i, b in enumerate(transformer.transformer_blocks)]
        return pairs + [(single_key(i), b.attn) for i, b in enumerate(transformer.single_transformer_blocks)]

    def attach(self, transformer: nn.Module) -> nn.Module:
        """Install :class:`BFSJointProcessor` in every block of ``transformer`` (which stays a stock model).

        Attaching again (this or another adapter) replaces the previous joint processors.
        """
        self._check_shape(transformer)
        for key, attn in self._attentions(transformer):
            base = attn.processor
            if isinstance(base, BFSJointProcessor):
                base = base.base
            attn.set_processor(BFSJointProcessor(self, key, base))
        return transformer

    def detach(self, transformer: nn.Module) -> nn.Module:
        """Restore the processors :meth:`attach` wrapped."""
        for _, attn in self._attentions(transformer):
            if isinstance(attn.processor, BFSJointProcessor):
                attn.set_processor(attn.processor.base)
        return transformer

    def is_attached(self, transformer: nn.Module) -> bool:
        """Whether every block of ``transformer`` runs this adapter's processors."""
        pairs = self._attentions(transformer)
        return bool(pairs) and all(isinstance(a.processor, BFSJointProcessor) and a.processor.adapter is self
                                   for _, a in pairs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters training updates (all of the adapter's: LoRAs, ``post``, copies)."""
        return [p for p in self.parameters() if p.requires_grad]
