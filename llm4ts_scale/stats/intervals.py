"""Interval metrics of a whole split at once, split-conformal or adaptive, from its gathered forecasts.

An adaptive interval at origin t depends on the errors of earlier origins of its stream, so a split is
scored only once all its (forecast, target, scale, series, origin) rows are in one place, gathered from every
rank in any order: the numbers do not depend on the world size or the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm4ts_scale.stats import adaptive
from llm4ts_scale.stats.adaptive import AciSettings, AdaptiveRun, adaptive_run
from llm4ts_scale.stats.conformal import CRPS_LEVELS, INTERVAL_80, ConformalTable
from llm4ts_scale.stats.metrics import ProbabilisticAccumulator

CHUNK_ROWS = 2048  # rows of [rows, H, Q] quantiles held at once (ETTh1 H=720: 100 MB)


@dataclass
class SplitRows:
    """Every window of a split: point forecasts and targets [N, H], window scales [N, 1], series [N], origin [N]
    (the first forecast row), `step` rows between consecutive windows of a series."""

    pred: torch.Tensor
    target: torch.Tensor
    scale: torch.Tensor
    series: torch.Tensor
    origin: torch.Tensor
    step: int = 1

    def residuals(self) -> torch.Tensor:
        """[N, H] in the conformal table's units: (y - forecast) / window scale."""
        return (self.target.double() - self.pred.double()) / self.scale.double()


def adaptive_state(rows: SplitRows, table: ConformalTable, settings: AciSettings | None = None) -> AdaptiveRun | None:
    """The sequential run of an adaptive table over the split (None for split conformal); `settings`: the ACI
    runs to use instead of the table method's own (studies of other constants, benchmarks/bench_intervals.py)."""
    if table.method not in adaptive.SEQUENTIAL:
        return None
    centre = table.median
    spread = table.offsets(INTERVAL_80) - centre
    unit = float(adaptive.interval_score(table.residuals - centre, spread[0], spread[1]).mean().clamp(min=1e-12))
    return adaptive_run(rows.residuals().cpu() - centre, rows.series, rows.origin, spread, step=rows.step,
                        settings=settings or adaptive.run_settings(table.method), score_unit=unit)


def interval_metrics(rows: SplitRows, table: ConformalTable, mase_scale: torch.Tensor,
                     settings: AciSettings | None = None) -> dict:
    """crps, wql, coverage_80, width_80, mase, the calibration figures (llm4ts_scale/stats/metrics.py), and which
    calibration made them. An adaptive table is left holding the streams' state at the end of the split."""
    run = adaptive_state(rows, table, settings)
    if run is not None:
        table.factors, table.shifts, table.factor_keys = run.end_factor, run.end_shift, run.keys
    prob = ProbabilisticAccumulator(CRPS_LEVELS, horizon=rows.pred.shape[1])
    for a in range(0, rows.pred.shape[0], CHUNK_ROWS):
        part = slice(a, a + CHUNK_ROWS)
        pred = rows.pred[part].double().cpu()
        adapt = (run.factor[part], run.shift[part]) if run is not None else None
        quantiles = table.quantiles(pred, rows.scale[part].cpu(), CRPS_LEVELS, adapt)
        prob.update(quantiles, pred, rows.target[part].double().cpu(), mase_scale[rows.series[part].long().cpu()])
    out = prob.compute(CRPS_LEVELS)  # every rank holds every row: no reduce
    out.update(calibration=table.method, calibration_windows=table.size)
    if run is not None:
        out["adaptive_end"] = {name: {"min": round(float(v.min()), 4), "median": round(float(v.median()), 4),
                                      "max": round(float(v.max()), 4)}
                               for name, v in (("width_factor", run.end_factor), ("shift", run.end_shift))}
    return out
