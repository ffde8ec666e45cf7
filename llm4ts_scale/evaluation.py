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
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import WindowSpec, make_loader, rank_num_samples

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
    return model(batch["x"], batch["x_mark"], task="forecast", hidden=hidden, known=batch.get("known"),
                 past=batch.get("past")), batch["y"]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def lockstep_batches(store, spec: WindowSpec, batch_size: int, topology: Topology, desc: str | None = None):
    """Yield (batch on device, mask or None) for this rank's windows, in a fixed order, the same number
    of times on every rank; a rank that ran out yields masked copies (mask all False)."""
    rank, world_size, device = topology.rank, topology.world_size, topology.device
    counts = [rank_num_samples(store, spec, r, world_size) for r in range(world_size)]
    steps = max(math.ceil(c / batch_size) for c in counts)
    loader = make_loader(store, spec, batch_size, rank=rank, world_size=world_size, num_workers=topology.num_workers)
    stream = iter(loader)
    filler = None
    if counts[rank] == 0 and steps > 0:  # more ranks than shards: run masked copies of some window
        filler = next(iter(make_loader(store, spec, 1)))
    for _ in tqdm(range(steps), desc=desc or f"eval {spec.split}", disable=not topology.progress, leave=False):
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


def evaluate_split(model, store, spec: WindowSpec, topology: Topology, *, batch_size: int, task: str,
                   cache=None, inference: bool = True) -> dict:
    """Metrics of `spec`'s windows (forecast: H steps; align: next-patch, windows of L + stride).
    `cache`: a FeatureCache of this split's frozen features (linear probing); `spec.step` k scores
    every k-th window only (data.val_stride)."""
    was_training = model.training
    model.eval()
    metrics = MetricAccumulator()
    with no_grad_mode(inference):
        for batch, mask in lockstep_batches(store, spec, batch_size, topology):
            maybe_die("test" if spec.split == "test" else "eval")
            hidden = cache.lookup(batch) if cache is not None else None
            with autocast(topology.device, topology.precision):
                pred, target = model_outputs(model, batch, task, hidden)
            metrics.update(pred.float(), target.float(), mask)
    model.train(was_training)
    metrics.reduce()
    return metrics.compute()
