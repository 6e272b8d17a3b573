"""Training precision: bf16 where the hardware computes it fast, on GPUs and on CPUs alike.

A CPU with AVX512-BF16 or AMX runs bf16 matrix products at about twice the fp32 rate (measured
in ``benchmarks/training_precision.py``), so "auto" picks bf16 there too, not only on CUDA.
Mixed precision keeps fp32 master weights and runs the forward and backward under bf16
autocast; frozen weights (a LoRA base) can be stored in bf16 outright.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DTYPES", "bf16_supported", "resolve_bf16", "torch_dtype_of"]

DTYPES = ("float32", "bfloat16", "float16", "auto")


def bf16_supported(device: str | None = None) -> bool:
    """Whether ``device`` ("cuda", "cpu"; default: CUDA when present) computes bf16 natively."""
    import torch

    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_bf16(flag: bool | None, device: str | None = None) -> bool:
    """``flag``, or for None whether ``device`` supports bf16 (see :func:`bf16_supported`)."""
    return bf16_supported(device) if flag is None else bool(flag)


def torch_dtype_of(name: str, device: str | None = None) -> Any:
    """The torch dtype called ``name``; ``"auto"``: bfloat16 where supported, else float32."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"torch_dtype must be one of {DTYPES}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    return getattr(torch, name)
