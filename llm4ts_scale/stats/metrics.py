"""Forecast metrics aggregated exactly: float64 sums and counts, reducible across ranks.

A mean of per-batch means is wrong whenever the last batch is short (and across ranks with
unequal shares); summing errors and counting elements is exact, and sums all_reduce.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from llm4ts_scale.core.io import atomic_write_json

# Order of the sums in the state vector.
_FIELDS = ("samples", "count", "sse", "sae", "sum_y", "sum_y2", "ape", "ape_count")


def _sums_torch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p, y = pred.to(torch.float64), target.to(torch.float64)
    err = p - y
    nonzero = y != 0
    safe_y = torch.where(nonzero, y.abs(), torch.ones_like(y))
    return torch.stack([
        torch.tensor(float(p.shape[0]) if p.ndim else 1.0, dtype=torch.float64, device=p.device),
        torch.tensor(float(p.numel()), dtype=torch.float64, device=p.device),
        (err * err).sum(),
        err.abs().sum(),
        y.sum(),
        (y * y).sum(),
        torch.where(nonzero, err.abs() / safe_y, torch.zeros_like(y)).sum(),
        nonzero.sum().to(torch.float64),
    ])


def _sums_numpy(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """CPU path in numpy: same sums, but no intra-op thread pool (torch's OpenMP threads spin
    for hundreds of ms per op on a busy 2-core machine; these ops are memory-bound anyway)."""
    p = pred.numpy().astype(np.float64).ravel()
    y = target.numpy().astype(np.float64).ravel()
    err = p - y
    abs_err = np.abs(err)
    nonzero = y != 0
    ape = abs_err[nonzero] / np.abs(y[nonzero])
    return np.array([
        float(pred.shape[0]) if pred.ndim else 1.0, float(p.size), float(err @ err), float(abs_err.sum()),
        float(y.sum()), float(y @ y), float(ape.sum()), float(nonzero.sum()),
    ], dtype=np.float64)


class MetricAccumulator:
    """Accumulates prediction errors over batches of [B, H] forecasts.

    `samples` counts (window, channel) rows scored; MAPE skips targets equal to 0 (their
    number is reported as `mape_zero_targets` when there are any).
    """

    def __init__(self):
        self._state: torch.Tensor | None = None  # float64 [len(_FIELDS)], on the device of the data
        self._reduced = False

    def _buffer(self, device) -> torch.Tensor:
        if self._state is None:
            self._state = torch.zeros(len(_FIELDS), dtype=torch.float64, device=device)
        return self._state

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, weight_mask: torch.Tensor | None = None) -> None:
        """Add a batch. pred/target: [B, H] (any trailing shape); weight_mask: [B] bool, False rows
        (padding) are skipped."""
        if self._reduced:
            raise RuntimeError("MetricAccumulator was already reduced; create a new one for new data")
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        if weight_mask is not None:
            mask = weight_mask.to(device=pred.device, dtype=torch.bool).reshape(-1)
            if mask.numel() != pred.shape[0]:
                raise ValueError(f"weight_mask has {mask.numel()} entries for a batch of {pred.shape[0]}")
            pred, target = pred[mask], target[mask]
        if pred.device.type == "cpu":
            stats = torch.from_numpy(_sums_numpy(pred.detach(), target.detach()))
        else:
            stats = _sums_torch(pred.detach(), target.detach())
        buf = self._buffer(pred.device)
        buf += stats.to(buf.device)

    @torch.no_grad()
    def reduce(self) -> MetricAccumulator:
        """Sum the state over all ranks when torch.distributed is initialized. Every rank must call
        it, even with no data; call it once."""
        if self._reduced:
            raise RuntimeError("MetricAccumulator.reduce() called twice; it would count every rank again")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = self._state.device if self._state is not None else torch.device("cpu")
            if torch.distributed.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            state = self._buffer(device).to(device)
            torch.distributed.all_reduce(state, op=torch.distributed.ReduceOp.SUM)
            self._state = state
        self._reduced = True
        return self

    def totals(self) -> dict[str, float]:
        """The raw sums, by name."""
        if self._state is None:
            return {name: 0.0 for name in _FIELDS}
        return dict(zip(_FIELDS, self._state.cpu().tolist()))

    def compute(self) -> dict:
        """mse, mae, rmse, rse (when targets vary), mape (over nonzero targets), samples."""
        t = self.totals()
        n = t["count"]
        if n == 0:
            return {"samples": 0}
        mse = t["sse"] / n
        out = {"mse": mse, "mae": t["sae"] / n, "rmse": math.sqrt(mse)}
        spread = t["sum_y2"] - t["sum_y"] ** 2 / n  # sum of (y - mean(y))^2
        if spread > 0:
            out["rse"] = math.sqrt(t["sse"]) / math.sqrt(spread)
        if t["ape_count"] > 0:
            out["mape"] = t["ape"] / t["ape_count"]
        zero_targets = int(round(n - t["ape_count"]))
        if zero_targets:
            out["mape_zero_targets"] = zero_targets
        out["samples"] = int(round(t["samples"]))
        return out


def write_metrics_json(path: str | os.PathLike, metrics_by_split: dict) -> Path:
    """Write {split: metrics} atomically (temp file + os.replace)."""
    return atomic_write_json(path, metrics_by_split)


# ---------------------------------------------------------------- probabilistic forecasts

# Order of the sums of ProbabilisticAccumulator's state: the pinball loss of each CRPS level, then the rest.
_PROB_FIELDS = ("points", "abs_y", "covered", "width", "mase_sum", "mase_count")


def central_pairs(levels) -> list[tuple[float, float]]:
    """The central intervals (tau, 1 - tau) among `levels`, widest first: (0.1, 0.9) is the 80 % interval."""
    present = {round(q, 10) for q in levels}
    return [(q, round(1 - q, 10)) for q in sorted(levels) if q < 0.5 and round(1 - q, 10) in present]


class ProbabilisticAccumulator:
    """Exact sums for quantile forecasts [B, H, Q] at `levels` (which hold 0.1 and 0.9), reducible across ranks:

    - crps: the quantile-averaged CRPS, 2/Q * sum over levels of the pinball loss, averaged over points
      (standardized units), the approximation GIFT-Eval and Chronos report;
    - wql: the same sum over levels divided by the sum of |y| (their weighted quantile loss, scale-free);
    - coverage_80 / width_80: share of points inside [q_0.1, q_0.9], and that interval's mean width;
    - quantile_coverage: for each level tau, the share of points at or below q_tau (tau when calibrated: the
      reliability diagram); intervals: coverage and mean width of every central interval (tau, 1 - tau);
    - coverage_80_by_step (with `horizon`): the 80 % interval's coverage at each forecast step;
    - mase: each window's MAE over its series' in-sample seasonal-naive MAE (data/store.py:SeriesIndex.mase_scale),
      averaged over windows (series with no finite scale are left out and counted).
    """

    def __init__(self, levels, horizon: int = 0):
        self.levels = tuple(float(q) for q in levels)
        if 0.1 not in self.levels or 0.9 not in self.levels:
            raise ValueError("levels must include 0.1 and 0.9 (the 80 % interval)")
        self.pairs = central_pairs(self.levels)
        self.horizon = horizon
        self._state: torch.Tensor | None = None
        self._reduced = False

    def _size(self) -> int:
        return 2 * len(self.levels) + len(_PROB_FIELDS) + 2 * len(self.pairs) + self.horizon

    @torch.no_grad()
    def update(self, quantiles: torch.Tensor, point: torch.Tensor, target: torch.Tensor, mase_scale: torch.Tensor,
               weight_mask: torch.Tensor | None = None) -> None:
        """quantiles [B, H, Q] at self.levels, point [B, H], target [B, H], mase_scale [B] (NaN: no scale)."""
        if weight_mask is not None:
            keep = weight_mask.to(device=quantiles.device, dtype=torch.bool).reshape(-1)
            quantiles, point, target, mase_scale = quantiles[keep], point[keep], target[keep], mase_scale[keep]
        q, y = quantiles.double(), target.double().unsqueeze(-1)
        levels = torch.tensor(self.levels, dtype=torch.float64, device=q.device)
        diff = y - q
        pinball = torch.maximum(levels * diff, (levels - 1) * diff).sum(dim=(0, 1))  # [Q]
        lo, hi = q[..., self.levels.index(0.1)], q[..., self.levels.index(0.9)]
        yy = target.double()
        inside = (yy >= lo) & (yy <= hi)
        window_mae = (point.double() - yy).abs().mean(dim=1)
        scale = mase_scale.double().to(q.device)
        valid = torch.isfinite(scale) & (scale > 0)
        rest = torch.stack([
            torch.tensor(float(yy.numel()), dtype=torch.float64, device=q.device), yy.abs().sum(),
            inside.sum().double(), (hi - lo).sum(),
            (window_mae[valid] / scale[valid]).sum(), valid.sum().double()])
        below = (y <= q).sum(dim=(0, 1)).double()  # [Q]
        pair_in, pair_width = [], []
        for a, b in self.pairs:
            qa, qb = q[..., self.levels.index(a)], q[..., self.levels.index(b)]
            pair_in.append(((yy >= qa) & (yy <= qb)).sum().double())
            pair_width.append((qb - qa).sum())
        by_step = inside.sum(dim=0).double() if self.horizon else yy.new_zeros(0)
        stats = torch.cat([pinball, rest, below, torch.stack(pair_in + pair_width) if self.pairs else below[:0],
                           by_step])
        if self._state is None:
            self._state = torch.zeros_like(stats)
        self._state += stats

    @torch.no_grad()
    def reduce(self) -> ProbabilisticAccumulator:
        """Sum over ranks (every rank calls it once, even with no data)."""
        if self._reduced:
            raise RuntimeError("ProbabilisticAccumulator.reduce() called twice")
        if self._state is None:
            self._state = torch.zeros(self._size(), dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = self._state.device
            if torch.distributed.get_backend() == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            state = self._state.to(device)
            torch.distributed.all_reduce(state, op=torch.distributed.ReduceOp.SUM)
            self._state = state
        self._reduced = True
        return self

    def compute(self, crps_levels) -> dict:
        """crps and wql over `crps_levels` (a subset of the levels), coverage_80, width_80, mase, and the
        calibration figures: quantile_coverage, intervals, coverage_80_by_step."""
        if self._state is None:
            return {}
        state = self._state.cpu().tolist()
        nq, npairs = len(self.levels), len(self.pairs)
        pinball = dict(zip(self.levels, state[:nq]))
        rest = dict(zip(_PROB_FIELDS, state[nq:nq + len(_PROB_FIELDS)]))
        tail = state[nq + len(_PROB_FIELDS):]
        n = rest["points"]
        if n == 0:
            return {}
        total = sum(pinball[float(q)] for q in crps_levels)
        out = {"crps": 2 * total / (len(crps_levels) * n),
               "wql": 2 * total / (len(crps_levels) * rest["abs_y"]) if rest["abs_y"] > 0 else float("nan"),
               "coverage_80": rest["covered"] / n, "width_80": rest["width"] / n}
        if rest["mase_count"] > 0:
            out["mase"] = rest["mase_sum"] / rest["mase_count"]
            out["mase_windows"] = int(round(rest["mase_count"]))
        out["quantile_coverage"] = {f"{q:g}": round(c / n, 5) for q, c in zip(self.levels, tail[:nq])}
        inside, width = tail[nq:nq + npairs], tail[nq + npairs:nq + 2 * npairs]
        out["intervals"] = {f"{round(100 * (b - a)):d}": {"levels": [a, b], "coverage": round(c / n, 5),
                                                         "width": round(w / n, 5)}
                            for (a, b), c, w in zip(self.pairs, inside, width)}
        if self.horizon:
            per_step = n / self.horizon
            out["coverage_80_by_step"] = [round(c / per_step, 4) for c in tail[nq + 2 * npairs:]]
        return out
