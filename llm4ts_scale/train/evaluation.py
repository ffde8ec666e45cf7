"""Score a split with every (window, channel) pair counted exactly once across ranks.

Ranks hold different numbers of windows, but under ZeRO-3 every forward pass is a collective, so
all ranks must run the same number of batches: a rank that runs out feeds a masked copy of a batch
(its rows are not scored). Sums are reduced across ranks by the metric accumulator, never averaged.
"""

from __future__ import annotations

import contextlib
import math

import torch
from tqdm.auto import tqdm

from llm4ts_scale.data.windows import make_loader, rank_num_samples
from llm4ts_scale.metrics import MetricAccumulator
from llm4ts_scale.train.faults import maybe_die


def model_outputs(model, batch: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) flattened to [B, n] for the given task."""
    if task == "align":
        pred, target = model(batch["x"], batch["x_mark"], task="align")
        return pred.flatten(1), target.flatten(1)
    return model(batch["x"], batch["x_mark"], task="forecast"), batch["y"]


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate_split(model, store, split: str, *, seq_len: int, pred_len: int, batch_size: int, task: str,
                   rank: int, world_size: int, device: torch.device, bf16: bool = False,
                   show_progress: bool = False, num_workers: int = 0) -> dict:
    counts = [rank_num_samples(store, split, seq_len, pred_len, 100, r, world_size) for r in range(world_size)]
    steps = max(math.ceil(c / batch_size) for c in counts)
    loader = make_loader(store, split, seq_len, pred_len, batch_size, rank=rank, world_size=world_size,
                         num_workers=num_workers)
    was_training = model.training
    model.eval()
    metrics = MetricAccumulator()
    stream = iter(loader)
    filler = None
    if counts[rank] == 0 and steps > 0:  # more ranks than shards: run masked copies of some window
        filler = next(iter(make_loader(store, split, seq_len, pred_len, 1)))
    for _ in tqdm(range(steps), desc=f"eval {split}", disable=not show_progress, leave=False):
        batch = next(stream, None)
        if batch is None:  # this rank is done: run a masked batch so collectives stay in step
            batch, mask = filler, torch.zeros(filler["x"].shape[0], dtype=torch.bool)
        else:
            mask = None
            filler = batch if filler is None else filler
        batch = _to_device(batch, device)
        maybe_die("test" if split == "test" else "eval")
        with autocast(device, bf16):
            pred, target = model_outputs(model, batch, task)
        metrics.update(pred.float(), target.float(), mask.to(device) if mask is not None else None)
    model.train(was_training)
    metrics.reduce()
    return metrics.compute()
