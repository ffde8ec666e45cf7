"""Which arithmetic a run computes in: bf16 where the hardware does it natively, fp32 elsewhere.

bf16 pays only where it is native: on GPUs with bf16 support, and on CPUs with AMX-BF16 or
AVX512-BF16 (a bf16 GEMM of the model's shapes ran at 700-1000 GFLOP/s there, against 160-250 for
fp32). A CPU without them emulates bf16 and runs it about 3x SLOWER than fp32 (benchmarks/bench_model.py
prints both rates), so `auto` picks fp32 there. The choice is recorded in run.json and the export,
and evaluation of a saved run reuses it whatever machine it runs on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux); empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested: str, device_type: str, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, reason): precision is "bf16" or "no" (fp32)."""
    if requested != "auto":
        return requested, f"train.mixed_precision={requested}"
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "no", "auto: the GPU has no bf16"
    flags = cpu_flags() if flags is None else flags
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in flags]
    if native:
        return "bf16", f"auto: the CPU has native bf16 ({', '.join(native)})"
    return "no", "auto: the CPU has no native bf16 (no amx_bf16/avx512_bf16 flag), fp32 is faster"


def compute_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass (losses and metrics are computed in fp32 after it)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
