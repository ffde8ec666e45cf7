"""Prediction intervals by split conformal prediction, per horizon step, from validation residuals.

The cheap honest route to calibrated quantiles: keep the residuals of the finished forecaster on the
validation windows, each divided by its window's scale (the look-back's std, as RevIN computes it), so that
one table serves quiet and volatile series alike. A quantile tau of step h of a new window is then

    forecast[h] + scale * r_(k)[h],   k = ceil((n + 1) tau) for tau >= 1/2, floor((n + 1) tau) below,

r_(k)[h] the k-th smallest of the n residuals of step h. If the new window is exchangeable with the
validation windows, P(y[h] <= q_tau) >= tau for tau >= 1/2 and P(y[h] < q_tau) <= tau below (the finite-sample
guarantee of split conformal), so [q_0.1, q_0.9] covers at least 80 %. Any model gets the same treatment:
the LLM, and the baselines it is compared with. A level too extreme for n (k outside 1..n) is refused.
When test origins do not look like validation, `method="adaptive"` keeps this table's per-step shape and lets
its spread follow the errors as origins arrive (llm4ts_scale/stats/adaptive.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm4ts_scale.core.errors import UserError

REVIN_EPS = 1e-5  # the window scale is sqrt(var + eps), as RevIN (llm4ts_scale/model/encoder.py) computes it
# The levels CRPS is averaged over (the weighted quantile loss of GIFT-Eval and Chronos), and the 80 % interval.
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
INTERVAL_80 = (0.1, 0.9)
METHOD_CODES = ("split", "adaptive", "aggregated")  # how an export's conformal state names its method
MAX_CALIBRATION_ROWS = 200_000  # more validation windows than this: an evenly spaced subset calibrates


def window_scale(x: torch.Tensor) -> torch.Tensor:
    """[B, 1] the look-back's std (population, with RevIN's epsilon): what residuals are divided by."""
    x = x.double()
    return torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)


def order_index(n: int, level: float) -> int:
    """0-based index of the order statistic split conformal uses for quantile `level` among n residuals."""
    k = math.ceil((n + 1) * level - 1e-12) if level >= 0.5 else math.floor((n + 1) * level + 1e-12)
    if not 1 <= k <= n:
        need = math.ceil(1 / min(level, 1 - level)) - 1
        raise UserError(f"quantile {level} needs at least {need} calibration windows, this model has {n}; choose a "
                        f"level between {1 / (n + 1):.4g} and {n / (n + 1):.4g}")
    return k - 1


@dataclass
class ConformalTable:
    """Sorted normalized validation residuals [n, H] (each column sorted): every quantile of every step.

    `method` is how test origins use it: "split" (the table as is), "adaptive" or "aggregated" (each stream's spread scaled by
    a width factor and its centre shifted, both following the errors as origins arrive,
    llm4ts_scale/stats/adaptive.py). `factors` and `shifts` [S] are that state for the streams `factor_keys` [S]
    (series ids) once the last split scored with the table was observed to its end: where a new forecast after
    the known data (predict) starts from."""

    residuals: torch.Tensor
    method: str = "split"
    factors: torch.Tensor | None = None
    shifts: torch.Tensor | None = None
    factor_keys: torch.Tensor | None = None

    @classmethod
    def from_residuals(cls, residuals: torch.Tensor, method: str = "split") -> ConformalTable:
        r = residuals.float().double()  # the precision the table is saved in: a reloaded table gives the same quantiles
        if r.shape[0] > MAX_CALIBRATION_ROWS:
            r = r[torch.linspace(0, r.shape[0] - 1, MAX_CALIBRATION_ROWS).round().long()]
        if r.shape[0] == 0:
            raise UserError("no validation window to calibrate prediction intervals on; the validation split is empty")
        return cls(torch.sort(r, dim=0).values, method)

    @property
    def size(self) -> int:
        return self.residuals.shape[0]

    @property
    def median(self) -> torch.Tensor:
        """[H] the step-wise median residual: the centre the adaptive width factor scales around."""
        return self.residuals[order_index(self.size, 0.5)]

    def half_width(self) -> torch.Tensor:
        """[H] half the width of the 80 % interval at each step: the unit the adaptive centre shift is in."""
        index = [order_index(self.size, q) for q in (0.1, 0.9)]
        return ((self.residuals[index[1]] - self.residuals[index[0]]) / 2).clamp(min=1e-12)

    def offsets(self, levels, adapt: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """[Q, H]: the normalized residual quantile of each level and step; with `adapt` = (width factor [B], centre
        shift [B]) of each window, [B, Q, H]: m + shift * half-width + factor * (r_tau - m)."""
        index = torch.tensor([order_index(self.size, float(q)) for q in levels], dtype=torch.long)
        base = self.residuals[index]
        if adapt is None:
            return base
        factor, shift = (a.double().cpu().reshape(-1, 1, 1) for a in adapt)
        centre = self.median
        return centre + shift * self.half_width() + factor * (base - centre)

    def quantiles(self, pred: torch.Tensor, scale: torch.Tensor, levels,
                  adapt: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, H, Q] quantile forecasts from point forecasts [B, H] and window scales [B, 1], in pred's units;
        `adapt`: each window's adaptive (width factor [B], centre shift [B]) (None: split conformal)."""
        offsets = self.offsets(levels, adapt).to(pred.device, torch.float64)
        offsets = offsets.transpose(-1, -2) if adapt is not None else offsets.T.unsqueeze(0)  # [B or 1, H, Q]
        return (pred.double().unsqueeze(-1) + scale.double().unsqueeze(-1) * offsets).to(pred.dtype)

    def stream_state(self, series) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(width factor [B], centre shift [B]) a forecast after the known data starts from, for series ids [B]: the
        stream's own where the table has it, the median over streams for a series it never saw; None for split."""
        if self.method == "split" or self.factors is None or len(self.factors) == 0:
            return None
        series = torch.as_tensor(series, dtype=torch.long).reshape(-1)
        keys = self.factor_keys.long()
        where = torch.searchsorted(keys, series).clamp(max=len(keys) - 1)
        known = keys[where] == series
        return tuple(torch.where(known, v.double()[where], v.double().median()) for v in (self.factors, self.shifts))

    def state(self) -> dict[str, torch.Tensor]:
        out = {"residuals": self.residuals.float().contiguous(),
               "adaptive": torch.tensor([METHOD_CODES.index(self.method)], dtype=torch.int64)}
        if self.factors is not None:
            out.update(factors=self.factors.double().contiguous(), shifts=self.shifts.double().contiguous(),
                       factor_keys=self.factor_keys.long().contiguous())
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ConformalTable:
        code = int(state["adaptive"].item()) if "adaptive" in state else 0  # exports before adaptive: split
        return cls(state["residuals"].double(), METHOD_CODES[code], state.get("factors"), state.get("shifts"),
                   state.get("factor_keys"))
