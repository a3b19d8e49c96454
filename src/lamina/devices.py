"""Where and in what precision models run: ``--device`` / ``--dtype`` of every command.

:func:`resolve_device` turns ``"auto" | "cpu" | "cuda" | "cuda:1" | "mps"`` into a
:class:`torch.device` that this machine has (``auto``: CUDA if available, then Apple's MPS,
else the CPU); :func:`resolve_dtype` turns ``"auto" | "float32" | "float16" | "bfloat16"``
into a :class:`torch.dtype` for that device. Both raise one-line :class:`lamina.LaminaError`
messages for what cannot work (CUDA asked on a machine without it, half precision on the CPU
for a model that would not run in it is allowed but said in the docs, not refused).

``auto`` precision is float32 on the CPU and float16 on CUDA / MPS for the large pretrained
models (text-to-image, Grounding DINO / SAM / ViTMatte, latent FBDD); lamina's own small
networks (built-in FBDD, FurryGAN) stay in float32 under ``auto`` (:data:`SMALL_MODEL_AUTO_DTYPE`),
where half precision saves nothing and costs accuracy. An explicit ``--dtype`` applies to all.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import LaminaError

#: Accepted ``--device`` values (``cuda:N`` also works).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Accepted ``--dtype`` values.
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: What ``auto`` precision means for lamina's small built-in networks: full precision.
SMALL_MODEL_AUTO_DTYPE = "float32"


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: Any = "auto") -> Any:
    """A :class:`torch.device` this machine has.

    Args:
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``, a :class:`torch.device`, or ``None`` (= ``"auto"``).
    Raises:
        LaminaError: unknown name, or an accelerator this PyTorch does not see.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise LaminaError(f"{device!r} is not a torch device; choose from {', '.join(DEVICES)} "
                          "(or cuda:N)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LaminaError(f"--device {device}: this PyTorch sees no CUDA device (use --device auto or cpu)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise LaminaError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1})")
    elif resolved.type == "mps":
        if not _mps_available(torch):
            raise LaminaError(f"--device {device}: Apple MPS is not available here (use --device auto or cpu)")
    elif resolved.type != "cpu":
        raise LaminaError(f"--device {device}: unsupported device type {resolved.type!r}; choose from "
                          f"{', '.join(DEVICES)}")
    return resolved


def resolve_dtype(dtype: Any = "auto", device: Any = "cpu", *, small_model: bool = False) -> Any:
    """A :class:`torch.dtype` for ``device``.

    Args:
        dtype: ``"auto"``, ``"float32"``, ``"float16"``, ``"bfloat16"``, a :class:`torch.dtype`, or ``None`` (auto).
        device: the device the model runs on (a name or :class:`torch.device`; ``"auto"`` is resolved).
        small_model: ``auto`` for one of lamina's small networks means float32 on every device.
    Raises:
        LaminaError: unknown name, or bfloat16 on a GPU without it.
    """
    import torch

    device = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = "auto" if dtype is None else str(dtype).strip().lower()
    if name == "auto":
        name = "float32" if small_model or device.type == "cpu" else "float16"
    if name not in DTYPES[1:]:
        raise LaminaError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LaminaError(f"--dtype bfloat16: the GPU {torch.cuda.get_device_name(device)} has no bfloat16 "
                          "(use float16)")
    return getattr(torch, name)


def set_threads(threads: int | None) -> None:
    """Cap the CPU threads of torch and numba (pymatting's shared matting) at ``threads``; ``None``: the defaults.

    The one meaning of ``--threads`` in every command. numba is not imported for this (it costs
    half a second): when it is not loaded yet, ``NUMBA_NUM_THREADS`` caps it when it is.
    """
    if threads is None:
        return
    if threads < 1:
        raise LaminaError(f"--threads {threads}: give at least 1 (leave it out for PyTorch's default)")
    import torch

    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(min(threads, os.cpu_count() or 1))
    torch.set_num_threads(threads)  # after numba: its OpenMP layer may reset the shared thread count
