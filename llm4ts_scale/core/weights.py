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


def is_partitioned(p: torch.Tensor) -> bool:
    """A ZeRO-3 parameter (deepspeed.zero.Init gave it an id; its data is this rank's shard until gathered)."""
    return hasattr(p, "ds_id")


def full_shape(p: torch.Tensor) -> torch.Size:
    """The parameter's shape as the model declares it, gathered or not."""
    return getattr(p, "ds_shape", p.shape)


def gathered(params: list[torch.nn.Parameter], modifier_rank=None):
    """Full tensors inside the block on every rank (ZeRO-3; a no-op otherwise). With `modifier_rank`, that rank's
    values are what every rank keeps afterwards. Every rank of the group must enter it."""
    if any(is_partitioned(p) for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)
    return contextlib.nullcontext()


# Parameters are gathered at most this many elements at a time, so that collecting or loading the tunable state
# never gathers a whole backbone on every rank (the scratch ablation trains every backbone weight).
GATHER_CHUNK_ELEMENTS = 50_000_000


def chunks(params: list, max_elements: int = GATHER_CHUNK_ELEMENTS):
    """Consecutive runs of `params` of at most `max_elements` elements each (a larger parameter alone)."""
    run, size = [], 0
    for p in params:
        n = full_shape(p[1] if isinstance(p, tuple) else p).numel()
        if run and size + n > max_elements:
            yield run
            run, size = [], 0
        run.append(p)
        size += n
    if run:
        yield run


def collect_tunable_state(model, keep: bool = True) -> dict[str, torch.Tensor]:
    """Full CPU fp32 copies of the tunable parameters; under ZeRO-3 they are gathered a chunk at a time (every rank
    must call) and only ranks with `keep` hold the copies (the others get {})."""
    state = {}
    for run in chunks(list(tunable_parameters(model).items())):
        with gathered([p for _, p in run]):
            if keep:
                state.update({name: p.detach().to("cpu", torch.float32).clone() for name, p in run})
    return state


def load_tunable_state(model, state: dict[str, torch.Tensor], *, source: str = "weights") -> None:
    """Copy `state` into the model's tunable parameters (partitioned ZeRO-3 parameters too: rank 0's values win)."""
    params = tunable_parameters(model)
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise UserError(f"{source} holds parameter {unknown[0]} that this model does not have; "
                        "it was written with another model config: pass --restart or the matching config")
    for name, tensor in state.items():
        if tuple(full_shape(params[name])) != tuple(tensor.shape):
            raise UserError(f"{source}: parameter {name} has shape {tuple(tensor.shape)}, the model expects "
                            f"{tuple(full_shape(params[name]))}; it was written with another config")
    for run in chunks([(name, params[name]) for name in state]):
        with gathered([p for _, p in run], modifier_rank=0), torch.no_grad():
            for name, p in run:
                p.copy_(state[name].to(p.device, p.dtype))


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
