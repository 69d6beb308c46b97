"""Where a learned encoder runs: device and dtype, resolved once, recorded in ``run.json``.

``auto`` picks CUDA, then Apple MPS, then CPU. A device that is asked for by name and is not
there is an error, never a silent fallback to CPU (a 70x slower run should not be a surprise).
:func:`gpu_share` answers the Ray runner's question "does this stage want a GPU?" without
importing torch, so building stages on a driver stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from handclust.errors import DeviceError as DeviceError  # defined with every error in handclust/errors.py


def cuda_visible() -> bool:
    """Whether this process can see an NVIDIA GPU, judged without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def gpu_share(device: str, num_gpus: float) -> float:
    """GPUs a stage asks of Ray per actor: ``num_gpus`` when it will run on CUDA, else 0."""
    if device == "cuda" or (device == "auto" and cuda_visible()):
        return float(num_gpus)
    return 0.0


def resolve_device(requested: str, key: str) -> str:
    """``auto`` -> cuda, mps or cpu (first available); a named device must exist."""
    import torch

    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if requested == "cuda" and not has_cuda:
        raise DeviceError(f"{key}=cuda but torch {torch.__version__} sees no CUDA device "
                          f"(CUDA build: {torch.version.cuda or 'no'}); set {key}=auto or {key}=cpu")
    if requested == "mps" and not has_mps:
        raise DeviceError(f"{key}=mps but this torch build has no usable MPS device; set {key}=auto or {key}=cpu")
    return requested


def cuda_has_bf16(capability: tuple[int, int]) -> bool:
    """bfloat16 runs natively from compute capability 8.0 (Ampere: A10G, L4, A100, H100); a T4 (7.5)
    or V100 (7.0) only emulates it, many times slower than float16."""
    return tuple(capability) >= (8, 0)


def resolve_dtype(requested: str, device: str, key: str) -> Any:
    """``auto`` -> bfloat16 on CUDA GPUs that have it, float16 on older ones (T4, V100), float32
    elsewhere (CPU bf16 matmuls are slow on most CPUs)."""
    import torch

    bf16 = True
    if device == "cuda" and requested in ("auto", "bfloat16"):
        capability = torch.cuda.get_device_capability()
        bf16 = cuda_has_bf16(capability)
    if requested == "auto":
        name = ("bfloat16" if bf16 else "float16") if device == "cuda" else "float32"
    else:
        name = requested
    if name == "bfloat16" and not bf16:
        raise DeviceError(f"{key}=bfloat16 but this GPU ({torch.cuda.get_device_name()}, compute capability "
                          f"{capability[0]}.{capability[1]}) has no native bfloat16; set {key}=float16 or {key}=auto")
    if name == "float16" and device == "cpu":
        raise DeviceError(f"{key}=float16 is not supported on CPU; use float32 or bfloat16")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
