"""DeepSpeed JSON configs: read a file from ds_configs/ and fill its "auto" values from the run config.

Why fill them ourselves: Accelerate only resolves "auto" from objects passed to `prepare`, and we never
hand it a DataLoader (our streams are sharded per rank already), so the batch sizes must come from the
run config. What is left "auto" after this (bucket sizes) Accelerate fills from the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm4ts_scale.core.errors import UserError


def read_ds_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"DeepSpeed config {path} does not exist; pass one of ds_configs/zero2.json, zero3.json, "
                        "zero3_offload.json")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"DeepSpeed config {path} is not valid JSON ({err}); fix its syntax") from None
    if not isinstance(config, dict) or "zero_optimization" not in config:
        raise UserError(f"DeepSpeed config {path} has no zero_optimization section; start from ds_configs/zero2.json")
    return config


def fill_auto(config: dict, *, micro_batch: int, grad_accum: int, world_size: int,
              max_grad_norm: float, bf16: bool, on_gpu: bool) -> dict:
    """Return a copy of `config` with the run-dependent "auto" values resolved."""
    out = json.loads(json.dumps(config))
    values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in values.items():
        if out.get(key, "auto") == "auto":
            out[key] = value
    for section, enabled in (("bf16", bf16), ("fp16", False)):
        if isinstance(out.get(section), dict) and out[section].get("enabled") == "auto":
            out[section]["enabled"] = enabled
    zero = out.get("zero_optimization", {})
    for offload in ("offload_optimizer", "offload_param"):
        if isinstance(zero.get(offload), dict) and zero[offload].get("pin_memory") == "auto":
            zero[offload]["pin_memory"] = on_gpu
    return out

