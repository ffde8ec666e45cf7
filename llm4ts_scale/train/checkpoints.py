"""Mid-stage checkpoints: Accelerate's `save_state` (model, optimizer, RNG) plus our progress (with the LR scheduler).

Written under a temporary name; then a sha256 manifest of every file and the progress file; then one
rename to `step-N`; then the `latest` pointer is rewritten atomically. A crash at any moment leaves
the previous checkpoint usable, and a checkpoint whose files no longer match their manifest (bit rot,
truncation) is reported in one line and skipped for the previous good one. Only the tunable parameters
are stored: the frozen (possibly 4-bit) backbone comes back from the backbone id on resume.
The run directory must be on storage every rank can read (a shared file system on several nodes).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

from accelerate.utils import DistributedType

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.faults import maybe_die, maybe_fail_write
from llm4ts_scale.core.io import atomic_write_json, atomic_write_text, file_sha256
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.core.weights import tunable_parameters

log = get_logger(__name__)

KEEP = 2
MANIFEST = "manifest.json"
PROGRESS = "progress.json"


def _is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _manifest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, PROGRESS)}


def _save_state(accelerator, model, directory: Path) -> None:
    if _is_deepspeed(accelerator):
        accelerator.save_state(str(directory), exclude_frozen_parameters=True)
        return
    keep = set(tunable_parameters(accelerator.unwrap_model(model)))

    def only_tunable(models, weights, output_dir):
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k in keep}

    handle = accelerator.register_save_state_pre_hook(only_tunable)
    try:
        accelerator.save_state(str(directory))
    finally:
        handle.remove()


def save_checkpoint(accelerator, model, ckpt_root: Path, progress: dict) -> None:
    """Every rank calls this (DeepSpeed writes one shard per rank). Out of disk space: exit 2, the
    previous checkpoint untouched."""
    name = f"step-{progress['global_step']:08d}"
    final, tmp = ckpt_root / name, ckpt_root / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        ckpt_root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    failure = None
    try:
        maybe_fail_write("checkpoint")
        _save_state(accelerator, model, tmp)
    except OSError as err:
        failure = err
    failed = accelerator.reduce(_flag(accelerator, failure is not None), "sum").item() > 0
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_name(ckpt_root)
        reason = "no space left on device" if failure is not None and failure.errno == errno.ENOSPC else (
            f"{failure.strerror or failure}" if failure is not None else "another rank failed to write")
        raise UserError(f"could not write checkpoint {tmp} ({reason}); free space under {ckpt_root.parent.parent} "
                        f"and re-run the same command to resume from {previous or 'the stage start'}")
    maybe_die("checkpoint")
    if accelerator.is_main_process:
        atomic_write_json(tmp / MANIFEST, _manifest(tmp))
        atomic_write_json(tmp / PROGRESS, progress)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(ckpt_root / "latest", name + "\n")
        for stale in sorted(p for p in ckpt_root.glob("step-*") if p.name != name)[:-(KEEP - 1) or None]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def _flag(accelerator, value: bool):
    import torch

    return torch.tensor([int(value)], device=accelerator.device)


def latest_name(ckpt_root: Path) -> str | None:
    pointer = ckpt_root / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def verify(path: Path) -> str | None:
    """None if every file of the checkpoint matches its manifest, else the first file that does not."""
    try:
        expected = json.loads((path / MANIFEST).read_text())
        json.loads((path / PROGRESS).read_text())
    except (OSError, ValueError):
        return f"{path / MANIFEST} or {path / PROGRESS}"
    for rel, digest in expected.items():
        file = path / rel
        if not file.is_file() or file_sha256(file) != digest:
            return str(file)
    return None


def usable_checkpoint(ckpt_root: Path, main_process: bool = True) -> Path | None:
    """The newest checkpoint whose files match their manifest; corrupted ones are reported and skipped."""
    candidates = sorted(ckpt_root.glob("step-*"), reverse=True) if ckpt_root.is_dir() else []
    for path in candidates:
        bad = verify(path)
        if bad is None:
            return path
        if main_process:
            log.warning(f"warning: checkpoint file {bad} is corrupted (checksum mismatch or missing); "
                        "falling back to the previous checkpoint")
    if candidates:
        raise UserError(f"every checkpoint under {ckpt_root} is corrupted (first: {candidates[0]}); "
                        "delete that stage directory to retrain the stage, or pass --restart")
    return None


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore model/optimizer/RNG from `path`; returns its progress dict (which holds the scheduler state)."""
    progress = json.loads((path / PROGRESS).read_text())
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
