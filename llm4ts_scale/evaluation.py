"""Score a split with every (window, channel) pair counted exactly once across ranks.

Ranks hold different numbers of windows, but under ZeRO-3 every forward pass is a collective, so
all ranks must run the same number of batches: a rank that runs out feeds a masked copy of a batch
(its rows are not scored). Sums are reduced across ranks by the metric accumulator, never averaged.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from llm4ts_scale.core.faults import maybe_die
from llm4ts_scale.core.metrics import MetricAccumulator
from llm4ts_scale.core.precision import autocast
from llm4ts_scale.data.windows import make_loader, rank_num_samples

# Eval windows per batch on a CPU when data.eval_batch_size is null: throughput is flat from ~128 on
# and larger batches only cost memory (tools/bench_model.py); a GPU gets more rows per launch.
CPU_EVAL_BATCH = 256
GPU_EVAL_BATCH_FACTOR = 4  # inference keeps no activations: 4x the training batch fits where training fits


def eval_batch_size(requested: int | None, train_batch: int, device_type: str) -> int:
    if requested is not None:
        return requested
    if device_type == "cpu":
        return CPU_EVAL_BATCH
    return GPU_EVAL_BATCH_FACTOR * train_batch


def model_outputs(model, batch: dict, task: str, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) flattened to [B, n] for the given task; `hidden`: cached LP features."""
    if task == "align":
        pred, target = model(batch["x"], batch["x_mark"], task="align", future=batch["y"])
        return pred.flatten(1), target.flatten(1)
    return model(batch["x"], batch["x_mark"], task="forecast", hidden=hidden), batch["y"]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def lockstep_batches(store, split: str, seq_len: int, pred_len: int, batch_size: int, *, rank: int, world_size: int,
                     device: torch.device, few_shot_percent: int = 100, num_workers: int = 0,
                     desc: str | None = None, show_progress: bool = False, window_step: int = 1):
    """Yield (batch on device, mask or None) for this rank's windows, in a fixed order, the same number
    of times on every rank; a rank that ran out yields masked copies (mask all False)."""
    counts = [rank_num_samples(store, split, seq_len, pred_len, few_shot_percent, r, world_size, window_step)
              for r in range(world_size)]
    steps = max(math.ceil(c / batch_size) for c in counts)
    loader = make_loader(store, split, seq_len, pred_len, batch_size, few_shot_percent=few_shot_percent, rank=rank,
                         world_size=world_size, num_workers=num_workers, window_step=window_step)
    stream = iter(loader)
    filler = None
    if counts[rank] == 0 and steps > 0:  # more ranks than shards: run masked copies of some window
        filler = next(iter(make_loader(store, split, seq_len, pred_len, 1)))
    for _ in tqdm(range(steps), desc=desc or f"eval {split}", disable=not show_progress, leave=False):
        batch = next(stream, None)
        if batch is None:  # this rank is done: run a masked batch so collectives stay in step
            batch, mask = filler, torch.zeros(filler["x"].shape[0], dtype=torch.bool)
        else:
            mask = None
            filler = batch if filler is None else filler
        yield _to_device(batch, device), (mask.to(device) if mask is not None else None)


def no_grad_mode(inference: bool):
    """inference_mode where the model is a plain module; no_grad under a DeepSpeed engine, whose ZeRO-3
    hooks write gathered weights into parameters (inference tensors would leak into training)."""
    return torch.inference_mode() if inference else torch.no_grad()


def evaluate_split(model, store, split: str, *, seq_len: int, pred_len: int, batch_size: int, task: str,
                   rank: int, world_size: int, device: torch.device, precision: str = "no",
                   show_progress: bool = False, num_workers: int = 0, cache=None, inference: bool = True,
                   window_step: int = 1) -> dict:
    """Metrics of `split` (forecast: H steps; align: next-patch, windows of L + stride).
    `cache`: a FeatureCache of this split's frozen features (linear probing); `window_step` k scores
    every k-th window only (data.val_stride)."""
    was_training = model.training
    model.eval()
    metrics = MetricAccumulator()
    with no_grad_mode(inference):
        for batch, mask in lockstep_batches(store, split, seq_len, pred_len, batch_size, rank=rank, world_size=world_size,
                                            device=device, num_workers=num_workers, show_progress=show_progress,
                                            window_step=window_step):
            maybe_die("test" if split == "test" else "eval")
            hidden = cache.lookup(batch) if cache is not None else None
            with autocast(device, precision):
                pred, target = model_outputs(model, batch, task, hidden)
            metrics.update(pred.float(), target.float(), mask)
    model.train(was_training)
    metrics.reduce()
    return metrics.compute()
