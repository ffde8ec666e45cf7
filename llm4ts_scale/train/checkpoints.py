"""Mid-stage checkpoints: Accelerate's `save_state` (model, optimizer, scheduler, RNG) plus our progress.

A checkpoint is written under a temporary name, its progress file last, then renamed to `step-N`; the
`latest` pointer is rewritten atomically afterwards, so a crash at any moment leaves the previous
checkpoint usable. Only the tunable parameters are stored: the frozen (possibly 4-bit) backbone comes
back from the backbone id on resume.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate.utils import DistributedType

from llm4ts_scale.errors import UserError
from llm4ts_scale.io import atomic_write_json, atomic_write_text
from llm4ts_scale.train.weights import tunable_parameters

KEEP = 2


def _is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def save_checkpoint(accelerator, model, ckpt_root: Path, progress: dict) -> None:
    """Every rank calls this (DeepSpeed writes one shard per rank)."""
    name = f"step-{progress['global_step']:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if _is_deepspeed(accelerator):
        accelerator.save_state(str(tmp), exclude_frozen_parameters=True)
    else:
        unwrapped = accelerator.unwrap_model(model)
        keep = set(tunable_parameters(unwrapped))

        def only_tunable(models, weights, output_dir):
            for i, state in enumerate(weights):
                weights[i] = {k: v for k, v in state.items() if k in keep}

        handle = accelerator.register_save_state_pre_hook(only_tunable)
        try:
            accelerator.save_state(str(tmp))
        finally:
            handle.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "progress.json", progress)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(ckpt_root / "latest", name + "\n")
        older = sorted(p for p in ckpt_root.glob("step-*") if p.name != name)
        for stale in older[:-(KEEP - 1) or None]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest"
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / "progress.json").is_file() else None


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model/optimizer/scheduler/RNG from `path`; returns its progress dict."""
    progress = json.loads((path / "progress.json").read_text())
    if progress.get("world_size") != accelerator.num_processes:
        raise UserError(
            f"checkpoint {path} was written by {progress.get('world_size')} processes but this run has "
            f"{accelerator.num_processes}; relaunch with {progress.get('world_size')} processes to resume mid-stage "
            "(stage boundaries resume with any count), or pass --restart")
    if _is_deepspeed(accelerator):
        accelerator.load_state(str(path), load_module_strict=False)
    else:
        accelerator.load_state(str(path), strict=False)
    return progress
