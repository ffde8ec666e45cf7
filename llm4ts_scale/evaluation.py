"""Score a split with every (window, channel) pair counted exactly once across ranks.

Ranks hold different numbers of windows, but under ZeRO-3 every forward pass is a collective, so
all ranks must run the same number of batches: a rank that runs out feeds a masked copy of a batch
(its rows are not scored). Sums are reduced across ranks by the metric accumulator, never averaged.

Prediction intervals come from the same passes: `calibrate` keeps the normalized residuals of the
validation windows (gathered from every rank, so the table does not depend on the world size) and
`evaluate_split(conformal=...)` adds coverage, CRPS, WQL and MASE to the point metrics
(llm4ts_scale/stats/conformal.py). It gathers the split's forecasts, targets, series and origins from every
rank first, because adaptive intervals (llm4ts_scale/stats/adaptive.py) follow each series in origin order.
`FunctionModel` lets any batch -> forecast function (a baseline) go through these same passes.
"""

from __future__ import annotations

import contextlib
import math
import sys

import torch
from tqdm.auto import tqdm

from llm4ts_scale.core import heap
from llm4ts_scale.core.faults import maybe_die
from llm4ts_scale.core.precision import autocast
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import WindowSpec, make_loader, rank_num_samples
from llm4ts_scale.stats.conformal import ConformalTable, window_scale
from llm4ts_scale.stats.intervals import SplitRows, interval_metrics
from llm4ts_scale.stats.metrics import MetricAccumulator

# Eval windows per batch on a CPU when data.eval_batch_size is null: throughput is flat from ~128 on
# and larger batches only cost memory (benchmarks/bench_model.py); a GPU gets more rows per launch.
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


def _is_engine(model) -> bool:
    deepspeed = sys.modules.get("deepspeed")  # only an imported DeepSpeed can have built an engine
    return deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine)


def release_gathered(model) -> None:
    """After forwards outside training, a ZeRO-3 engine releases what its hooks gathered or prefetched for a next
    forward: held weights cost memory, and a parameter still in flight cannot be gathered by anything else
    (collecting the tunable weights to save them)."""
    if _is_engine(model) and model.zero_optimization_partition_weights():
        model.empty_partition_cache()
        heap.release()


@contextlib.contextmanager
def no_grad_mode(model):
    """inference_mode where the model is a plain module; no_grad under a DeepSpeed engine, whose ZeRO-3
    hooks write gathered weights into parameters (inference tensors would leak into training)."""
    with torch.no_grad() if _is_engine(model) else torch.inference_mode():
        yield
    release_gathered(model)


def evaluate_split(model, store, spec: WindowSpec, topology: Topology, *, batch_size: int, task: str,
                   cache=None, conformal: ConformalTable | None = None) -> dict:
    """Metrics of `spec`'s windows (forecast: H steps; align: next-patch, windows of L + stride).
    `cache`: a FeatureCache of this split's frozen features (linear probing); `spec.step` k scores
    every k-th window only (data.val_stride). With `conformal` (a forecasting task), the quantile
    forecasts it gives (split or adaptive, its `method`) are scored too: crps, wql, coverage_80, width_80,
    mase and the calibration figures; an adaptive table is left holding each series' state at the split's end."""
    was_training = model.training
    model.eval()
    metrics = MetricAccumulator()
    kept = []
    with no_grad_mode(model):
        for batch, mask in lockstep_batches(store, spec, batch_size, topology):
            maybe_die("test" if spec.split == "test" else "eval")
            hidden = cache.lookup(batch) if cache is not None else None
            with autocast(topology.device, topology.precision):
                pred, target = model_outputs(model, batch, task, hidden)
            metrics.update(pred.float(), target.float(), mask)
            if conformal is not None and mask is None:
                kept.append((pred.float().cpu(), target.float().cpu(), window_scale(batch["x"]).cpu(),
                             batch["channel"].cpu(), batch["start"].cpu() + spec.seq_len))
    model.train(was_training)
    metrics.reduce()
    out = metrics.compute()
    if conformal is not None:
        rows = gather_split_rows(kept, spec)
        out.update(interval_metrics(rows, conformal, torch.tensor(store.series.mase_scale)))
    return out


def gather_split_rows(kept: list, spec: WindowSpec) -> SplitRows:
    """This rank's (pred, target, scale, series, origin) batches -> every rank's rows, on every rank."""
    fields = [torch.cat(parts) if parts else None for parts in zip(*kept)] if kept else [None] * 5
    empty = (torch.zeros(0, spec.pred_len), torch.zeros(0, spec.pred_len), torch.zeros(0, 1, dtype=torch.float64),
             torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    fields = [f if f is not None else e for f, e in zip(fields, empty)]
    return SplitRows(*(gather_rows(f) for f in fields), step=spec.step)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order, on every rank (ranks may hold different counts)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
            torch.distributed.get_world_size() == 1:
        return t
    import torch.distributed as dist

    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    local = t.to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=device))
    most = int(max(s.item() for s in sizes))
    padded = torch.cat([local, local.new_zeros(most - local.shape[0], *local.shape[1:])])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:int(n.item())] for part, n in zip(parts, sizes)]).to(t.device)


def calibrate(model, store, spec: WindowSpec, topology: Topology, *, batch_size: int,
              method: str = "split") -> ConformalTable:
    """The conformal table of a forecaster: its residuals on `spec`'s (validation) windows, each divided
    by its window's scale, gathered from every rank; `method` (config `calibration`): split | adaptive | aggregated."""
    was_training = model.training
    model.eval()
    residuals = []
    with no_grad_mode(model):
        for batch, mask in lockstep_batches(store, spec, batch_size, topology, desc="calibrating intervals"):
            with autocast(topology.device, topology.precision):
                pred, target = model_outputs(model, batch, "forecast")
            if mask is None:
                residuals.append(((target.double() - pred.double()) / window_scale(batch["x"])).cpu())
    model.train(was_training)
    local = torch.cat(residuals) if residuals else torch.zeros(0, spec.pred_len, dtype=torch.float64)
    return ConformalTable.from_residuals(gather_rows(local), method)


class FunctionModel(torch.nn.Module):
    """A batch -> forecast function ([B, H], the batch's units) as a model `evaluate_split` and `calibrate` take:
    how the baselines get the same windows, metrics and intervals as the LLM."""

    def __init__(self, forecast):
        super().__init__()
        self.fn = forecast

    def forward(self, x, x_mark, task: str = "forecast", hidden=None, known=None, past=None):
        return self.fn({"x": x, "x_mark": x_mark, "known": known, "past": past}).float()


def score_with_intervals(forecast, store, val: WindowSpec, test: WindowSpec, batch_size: int = 4096,
                         method: str = "split") -> dict:
    """Test metrics of a single-process forecaster (batch -> [B, H]) with conformal intervals calibrated on
    `val` (`method`: split | adaptive | aggregated): the point metrics, then crps, wql, coverage_80, width_80, mase, ..."""
    model, topology = FunctionModel(forecast), Topology()
    table = calibrate(model, store, val, topology, batch_size=batch_size, method=method)
    return evaluate_split(model, store, test, topology, batch_size=batch_size, task="forecast", conformal=table)


def forecast_rows(forecast, store, spec: WindowSpec, batch_size: int = 4096) -> SplitRows:
    """Every window of `spec` forecast by a single-process forecaster (batch -> [B, H]): forecasts, targets,
    scales, series and origins, what interval studies (benchmarks/bench_intervals.py) re-calibrate offline."""
    model, kept = FunctionModel(forecast), []
    with torch.inference_mode():
        for batch, _ in lockstep_batches(store, spec, batch_size, Topology()):
            pred = model(batch["x"], batch["x_mark"], known=batch.get("known"), past=batch.get("past"))
            kept.append((pred.float().cpu(), batch["y"].float().cpu(), window_scale(batch["x"]).cpu(),
                         batch["channel"].cpu(), batch["start"].cpu() + spec.seq_len))
    return gather_split_rows(kept, spec)
