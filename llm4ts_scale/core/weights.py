"""Consolidated, world-size-independent weight files: every tunable (non-frozen) parameter, as safetensors.

Under ZeRO-3 each rank holds a shard of every parameter; `GatheredParameters` assembles the full
tensors before they are copied, so the file never depends on how many ranks wrote it (a shard-sized
or empty adapter is a bug this module exists to prevent).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_bytes

FROZEN_GROUP = "frozen"


def tunable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Parameters of every group but the frozen backbone weights (the ones a stage may train)."""
    return {name: p for group, params in model.param_groups().items() if group != FROZEN_GROUP for name, p in params}


def _gathered(params: list[torch.nn.Parameter], modifier_rank=None):
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)
    return contextlib.nullcontext()


def collect_tunable_state(model) -> dict[str, torch.Tensor]:
    """Full CPU copies of the tunable parameters, gathered across ranks under ZeRO-3 (call on every rank)."""
    params = tunable_parameters(model)
    with _gathered(list(params.values())):
        return {name: p.detach().to("cpu", torch.float32).clone() for name, p in params.items()}


def load_tunable_state(model, state: dict[str, torch.Tensor], *, source: str = "weights") -> None:
    """Copy `state` into the model's tunable parameters (works on partitioned ZeRO-3 parameters too)."""
    params = tunable_parameters(model)
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise UserError(f"{source} holds parameter {unknown[0]} that this model does not have; "
                        "it was written with another model config: pass --restart or the matching config")
    targets = [params[name] for name in state]
    with _gathered(targets, modifier_rank=0), torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise UserError(f"{source}: parameter {name} has shape {tuple(tensor.shape)}, the model expects "
                                f"{tuple(params[name].shape)}; it was written with another config")
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write safetensors atomically (llm4ts_scale/core/io.py)."""
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} is missing; re-run training for this run_dir or pass --restart")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated headers/data
        raise UserError(f"weights file {path} is corrupted ({type(err).__name__}); re-run that stage with --restart") from None
