"""What every benchmark prints beside its figures: the machine, and ratios measured side by side in one run.

Machines differ from session to session (AMX, AVX-512 with bf16, or plain AVX2), and a timing means nothing without
the CPU that gave it, so each benchmark prints `machine()` first and states each target as `ratio(...)`.
"""

from __future__ import annotations

import os
import platform
import subprocess

SPEED_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # the flags that decide matmul speed and bf16


def cpu_model() -> str:
    """`lscpu`'s model name, the CPU count and the speed-deciding flags, e.g. "AMD EPYC, 2 CPUs, avx512_bf16 avx2"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # no lscpu: say so rather than guess
        return f"{platform.processor() or 'unknown CPU'} (no lscpu), {os.cpu_count()} CPUs"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    flags = set(fields.get("Flags", "").split())
    return f"{name}, {os.cpu_count()} CPUs, " + (" ".join(f for f in SPEED_FLAGS if f in flags) or "no AVX2")


def machine() -> str:
    """The line every benchmark prints first."""
    return f"CPU: {cpu_model()}"


def ratio(label: str, numerator: float, denominator: float, target: str = "") -> str:
    """One measured ratio as a line: `label: 0.53 (target: ...)`."""
    value = numerator / denominator if denominator else float("nan")
    return f"{label}: {value:.2f}" + (f" (target: {target})" if target else "")
