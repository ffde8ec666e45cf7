"""Build the one Accelerator of a run: DeepSpeed plugin from --ds, gloo on CPU-only hosts, nccl + bf16 on GPU.

On a host without GPUs Accelerate would report one process on every rank unless the process group is
created with backend="gloo" (see docs/ARCHITECTURE.md section 5), so the backend is always passed explicitly, with an
explicit collective timeout so that a dead rank makes the others fail instead of hanging.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, set_seed

from llm4ts_scale.core.config import RunConfig
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.precision import resolve_precision
from llm4ts_scale.train.ds_config import fill_auto, read_ds_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_single_process_env() -> None:
    """`python launch/train.py` (no launcher) still needs a rendezvous for DeepSpeed: make a world of one."""
    if "RANK" in os.environ or "LOCAL_RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))


# Set by `accelerate launch` from its own config file; --ds is the single source of truth for these, and
# Accelerate refuses a DeepSpeed config dict while they are set.
_LAUNCHER_DS_ENV = ("ACCELERATE_CONFIG_DS_FIELDS", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "ACCELERATE_GRADIENT_CLIPPING",
                    "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
                    "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH",
                    "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
                    "ACCELERATE_MIXED_PRECISION")


CPU_THREADS_ENV = "LLM4TS_CPU_THREADS"


def cpu_threads() -> int:
    """Intra-op threads for one process on a CPU host.

    `accelerate launch` without --cpu exports OMP_NUM_THREADS=1 to every process when the user set none (its
    --num_cpu_threads_per_process default), so the README's main command would train a 2-core laptop on
    one core. LLM4TS_CPU_THREADS pins the count; an OMP_NUM_THREADS the user chose (any value outside a
    launch, or other than 1 inside one) is kept; otherwise the cores this process may run on are shared
    among the node's processes (LOCAL_WORLD_SIZE)."""
    pinned = os.environ.get(CPU_THREADS_ENV)
    if pinned:
        if not pinned.isdigit() or int(pinned) < 1:
            raise UserError(f"{CPU_THREADS_ENV}={pinned!r} is not a positive integer; set it to a thread count "
                            "(e.g. 2) or unset it")
        return int(pinned)
    omp = os.environ.get("OMP_NUM_THREADS")
    by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ and omp == "1"
    if omp and not by_accelerate:
        return max(1, int(omp))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def build_accelerator(config: RunConfig, ds_config_path: str | None, project_dir: str) -> tuple[Accelerator, str, str]:
    """One Accelerator for all stages (`free_memory()` between stages drops the previous engine), with
    the run's precision ("bf16" or "no") and the reason it was chosen."""
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        torch.set_num_threads(cpu_threads())
    if ds_config_path is not None:
        ensure_single_process_env()
        for name in _LAUNCHER_DS_ENV:
            os.environ.pop(name, None)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    precision, reason = resolve_precision(config.train.mixed_precision, "cuda" if on_gpu else "cpu")
    plugin = None
    if ds_config_path is not None:
        ds = fill_auto(read_ds_config(ds_config_path), micro_batch=config.data.batch_size,
                       grad_accum=config.train.grad_accum, world_size=world_size,
                       max_grad_norm=config.train.max_grad_norm, bf16=precision == "bf16", on_gpu=on_gpu)
        plugin = DeepSpeedPlugin(hf_ds_config=ds)
    timeout = timedelta(seconds=config.train.collective_timeout_s)
    pg_kwargs = InitProcessGroupKwargs(backend="nccl" if on_gpu else "gloo", timeout=timeout)
    launched = "WORLD_SIZE" in os.environ  # by a launcher, or made a world of one above for DeepSpeed
    accelerator = Accelerator(
        deepspeed_plugin=plugin,
        mixed_precision=precision if plugin is None else None,
        gradient_accumulation_steps=config.train.grad_accum,
        log_with=None if config.train.log_with == "none" else config.train.log_with,
        project_dir=project_dir,
        kwargs_handlers=[pg_kwargs] if launched else [],
        cpu=not on_gpu and plugin is None,
    )
    set_seed(config.seed)
    return accelerator, precision, reason


def serving_engine(accelerator, model):
    """What runs forwards of `model` outside training on every rank: the module itself, or under ZeRO-3 a DeepSpeed
    engine without optimizer (the model arrives partitioned; the engine gathers each module's weights for its
    forward and releases them after)."""
    from llm4ts_scale.model.partitioned import zero3_enabled

    return accelerator.prepare(model) if zero3_enabled() else model.to(accelerator.device)


def release_engine(accelerator, *objects) -> None:
    """Drop a stage's model, optimizer and DeepSpeed engine, and give their memory back before the next model is built.

    Accelerate's `free_memory` destroys the engine and forgets it, but under ZeRO-3 DeepSpeed also pushes the top
    module onto a module-level stack (`deepspeed.runtime.zero.parameter_offload.FWD_MODULE_STACK`) that nothing pops:
    the module, its hooks and through them the engine and its shards stay alive for the rest of the process. Measured
    with a 7B-shaped backbone on 2 ranks: the next stage (or the export's scoring model) came on top of the whole
    previous one, and the run was killed for memory at its end. So the module leaves that stack here, and the
    parameter coordinator's method cache (an unbounded `functools.lru_cache` keyed by coordinator and submodule, which
    holds them for the life of the process) is cleared. The caller drops its own references, then returns the freed
    heap (core/heap.py)."""
    modules = {id(getattr(o, "module", o)) for o in objects if o is not None}
    accelerator.free_memory(*objects)
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    stack = getattr(offload, "FWD_MODULE_STACK", None)
    if isinstance(stack, list):
        stack[:] = [m for m in stack if id(m) not in modules]
    coordinator = getattr(sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator"),
                          "PartitionedParameterCoordinator", None)
    for attribute in vars(coordinator).values() if coordinator is not None else ():
        for function in [attribute, *_closure_values(attribute)]:  # the function under DeepSpeed's nvtx wrapper
            if hasattr(function, "cache_clear"):
                function.cache_clear()


def _closure_values(function) -> list:
    values = []
    for cell in getattr(function, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return values
