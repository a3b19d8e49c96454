"""Loading the official BFS release's joint weights (``kkang831/BFS_Release`` layout) into a :class:`BFSJointAdapter`.

The official code deep-copies each block's attention as ``attn1n``, wraps its projections
with peft LoRAs ``xy_lora`` / ``yx_lora`` and adds ``conv1n``; its ``trained_weights.pt`` keys
(with or without a leading ``transformer.``) are, per block ``{kind}.{i}`` with ``kind`` one
of ``transformer_blocks`` (dual-stream) and ``single_transformer_blocks``:

=====================================================  ==========================================
official                                               ours (``blocks.{d|s}{i}.``)
=====================================================  ==========================================
``attn1n.to_{q,k,v,out.0}.lora_A.xy_lora.weight``      ``lora.x.{q,k,v,out}.down.weight``
``attn1n.to_{q,k,v,out.0}.lora_B.xy_lora.weight``      ``lora.x.{q,k,v,out}.up.weight``
``... yx_lora ...``                                    ``lora.y. ...``
``attn1n.to_{q,k,v,out.0}.base_layer.{weight,bias}``   ``proj.{q,k,v,out}.{weight,bias}`` (copies)
``attn1n.norm_{q,k}.weight``                           ``norm_{q,k}.weight`` (copies)
``conv1n.weight``                                      ``post.weight``
=====================================================  ==========================================

(single-stream blocks have no ``to_out``). ``xy`` is the LoRA masked onto the composite
branch's features, ``yx`` onto the foreground's (``unicon_utils.py``), i.e. our ``x`` and ``y``.
Loading is strict: any key that maps nowhere, and any adapter weight the checkpoint leaves
unset, is a :class:`~lamina.errors.LaminaError` listing them. Base-layer copies equal to the
transformer's own weights are dropped (``share_base`` stays); if they differ, the adapter
switches to its own copies (:meth:`BFSJointAdapter.make_copies`) and loads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import LaminaError
from .joint import BFSJointAdapter, dual_key, single_key

#: Official branch names -> ours.
BRANCH_NAMES = {"xy_lora": "x", "yx_lora": "y"}
#: Official projection names -> ours.
PROJECTION_NAMES = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out"}
#: peft LoRA matrices -> ours.
LORA_MATRICES = {"lora_A": "down", "lora_B": "up"}
#: Keys listed in an error message at most.
MAX_LISTED_KEYS = 8

_BLOCK = r"(?P<kind>transformer_blocks|single_transformer_blocks)\.(?P<index>\d+)\."
_PROJ = r"(?P<proj>to_q|to_k|to_v|to_out\.0)"
_LORA_RE = re.compile(_BLOCK + r"attn1n\." + _PROJ
                      + r"\.(?P<matrix>lora_A|lora_B)\.(?P<branch>xy_lora|yx_lora)\.weight$")
_BASE_RE = re.compile(_BLOCK + r"attn1n\." + _PROJ + r"\.base_layer\.(?P<param>weight|bias)$")
_NORM_RE = re.compile(_BLOCK + r"attn1n\.(?P<norm>norm_q|norm_k)\.weight$")
_POST_RE = re.compile(_BLOCK + r"conv1n\.weight$")


@dataclass(frozen=True)
class CheckpointReport:
    """What :func:`load_bfs_checkpoint` did: tensors loaded, base copies dropped as equal to the base, copy mode."""

    loaded: int
    dropped_equal_base: int
    copies: bool


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return ", ".join(keys[:MAX_LISTED_KEYS]) + more


def _block_key(match: re.Match) -> str:
    index = int(match.group("index"))
    return dual_key(index) if match.group("kind") == "transformer_blocks" else single_key(index)


def map_official_key(key: str) -> tuple[str, str] | None:
    """``(kind, our key)`` for an official key (kind: ``lora``, ``post``, ``base``), or ``None`` if it maps nowhere."""
    key = key.removeprefix("transformer.")
    if m := _LORA_RE.match(key):
        ours = (f"blocks.{_block_key(m)}.lora.{BRANCH_NAMES[m.group('branch')]}."
                f"{PROJECTION_NAMES[m.group('proj')]}.{LORA_MATRICES[m.group('matrix')]}.weight")
        return "lora", ours
    if m := _BASE_RE.match(key):
        return "base", f"blocks.{_block_key(m)}.proj.{PROJECTION_NAMES[m.group('proj')]}.{m.group('param')}"
    if m := _NORM_RE.match(key):
        return "base", f"blocks.{_block_key(m)}.{m.group('norm')}.weight"
    if m := _POST_RE.match(key):
        return "post", f"blocks.{_block_key(m)}.post.weight"
    return None


def _base_tensor(transformer: nn.Module, ours: str) -> torch.Tensor | None:
    """The transformer's own weight that copy ``ours`` (``blocks.d3.proj.q.weight``...) duplicates."""
    parts = ours.split(".")
    block_key, rest = parts[1], parts[2:]
    index = int(block_key[1:])
    blocks = transformer.transformer_blocks if block_key[0] == "d" else transformer.single_transformer_blocks
    if index >= len(blocks):
        return None
    attn = blocks[index].attn
    if rest[0] == "proj":
        module = attn.to_out[0] if rest[1] == "out" else getattr(attn, f"to_{rest[1]}", None)
        return None if module is None else getattr(module, rest[2], None)
    norm = getattr(attn, rest[0], None)
    return None if norm is None else getattr(norm, "weight", None)


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a torch file (``weights_only``)."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise LaminaError(f"BFS checkpoint {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - many formats, one message
        raise LaminaError(f"BFS checkpoint {path}: cannot read it ({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise LaminaError(f"BFS checkpoint {path}: not a state dict")
    return dict(state)


def load_bfs_checkpoint(adapter: BFSJointAdapter, state_dict: str | Path | Mapping[str, torch.Tensor],
                        transformer: nn.Module | None = None) -> CheckpointReport:
    """Load an official-layout BFS state dict into ``adapter``, strictly (see the module docstring).

    ``transformer`` (the base the adapter is for) is needed when the checkpoint holds ``attn1n``
    base-layer copies and ``adapter`` shares the base: equal copies are dropped, different ones
    switch the adapter to its own copies.
    """
    state = read_state_dict(state_dict)
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    base_keys: list[str] = []
    for key, value in state.items():
        target = map_official_key(key)
        if target is None:
            unknown.append(key)
            continue
        kind, ours = target
        if ours in mapped:
            raise LaminaError(f"BFS checkpoint: two keys map to {ours} (one is {key})")
        mapped[ours] = value
        if kind == "base":
            base_keys.append(ours)
    if unknown:
        raise LaminaError(f"BFS checkpoint: {len(unknown)} unknown keys: {_listed(unknown)}")

    dropped = 0
    if base_keys and adapter.config.share_base:
        if transformer is None:
            raise LaminaError("BFS checkpoint has attn1n base-layer copies: pass the transformer to compare them with")
        differs = False
        for ours in base_keys:
            own = _base_tensor(transformer, ours)
            if own is None or own.shape != mapped[ours].shape:
                differs = True
                break
            if not torch.equal(own.detach().cpu(), mapped[ours].to(own.dtype).cpu()):
                differs = True
                break
        if differs:
            adapter.make_copies(transformer)
        else:
            for ours in base_keys:
                del mapped[ours]
            dropped = len(base_keys)

    expected = adapter.state_dict()
    extra = sorted(k for k in mapped if k not in expected)
    if extra:
        raise LaminaError(f"BFS checkpoint: {len(extra)} keys have no place in this adapter "
                          f"(shape: {adapter.config.num_layers} dual / {adapter.config.num_single_layers} single "
                          f"blocks): {_listed(extra)}")
    missing = sorted(k for k in expected if k not in mapped)
    if missing:
        raise LaminaError(f"BFS checkpoint: {len(missing)} adapter weights missing: {_listed(missing)}")
    wrong = [f"{k} {tuple(mapped[k].shape)} != {tuple(expected[k].shape)}" for k in sorted(mapped)
             if tuple(mapped[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise LaminaError(f"BFS checkpoint: {len(wrong)} shape mismatches (rank {adapter.config.rank}?): "
                          f"{_listed(wrong)}")
    adapter.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()}, strict=True)
    return CheckpointReport(loaded=len(mapped), dropped_equal_base=dropped, copies=not adapter.config.share_base)


def to_official_state_dict(adapter: BFSJointAdapter) -> dict[str, torch.Tensor]:
    """``adapter``'s weights in the official layout (the inverse of :func:`load_bfs_checkpoint`; tests, export)."""
    branches = {v: k for k, v in BRANCH_NAMES.items()}
    projections = {v: k for k, v in PROJECTION_NAMES.items()}
    matrices = {v: k for k, v in LORA_MATRICES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in adapter.state_dict().items():
        parts = key.split(".")
        block = parts[1]
        kind = "transformer_blocks" if block[0] == "d" else "single_transformer_blocks"
        prefix = f"{kind}.{int(block[1:])}."
        rest = parts[2:]
        if rest[0] == "lora":
            name = f"attn1n.{projections[rest[2]]}.{matrices[rest[3]]}.{branches[rest[1]]}.weight"
        elif rest[0] == "post":
            name = "conv1n.weight"
        elif rest[0] == "proj":
            name = f"attn1n.{projections[rest[1]]}.base_layer.{rest[2]}"
        else:
            name = f"attn1n.{rest[0]}.weight"
        out[prefix + name] = value
    return out
