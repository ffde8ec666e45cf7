"""Prediction intervals by split conformal prediction, per horizon step, from validation residuals.

The cheap honest route to calibrated quantiles: keep the residuals of the finished forecaster on the
validation windows, each divided by its window's scale (the look-back's std, as RevIN computes it), so that
one table serves quiet and volatile series alike. A quantile tau of step h of a new window is then

    forecast[h] + scale * r_(k)[h],   k = ceil((n + 1) tau) for tau >= 1/2, floor((n + 1) tau) below,

r_(k)[h] the k-th smallest of the n residuals of step h. If the new window is exchangeable with the
validation windows, P(y[h] <= q_tau) >= tau for tau >= 1/2 and P(y[h] < q_tau) <= tau below (the finite-sample
guarantee of split conformal), so [q_0.1, q_0.9] covers at least 80 %. Any model gets the same treatment:
the LLM, and the baselines it is compared with. A level too extreme for n (k outside 1..n) is refused.
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
    """Sorted normalized validation residuals [n, H] (each column sorted): every quantile of every step."""

    residuals: torch.Tensor

    @classmethod
    def from_residuals(cls, residuals: torch.Tensor) -> ConformalTable:
        r = residuals.float().double()  # the precision the table is saved in: a reloaded table gives the same quantiles
        if r.shape[0] > MAX_CALIBRATION_ROWS:
            r = r[torch.linspace(0, r.shape[0] - 1, MAX_CALIBRATION_ROWS).round().long()]
        if r.shape[0] == 0:
            raise UserError("no validation window to calibrate prediction intervals on; the validation split is empty")
        return cls(torch.sort(r, dim=0).values)

    @property
    def size(self) -> int:
        return self.residuals.shape[0]

    def offsets(self, levels) -> torch.Tensor:
        """[Q, H]: the normalized residual quantile of each level and step."""
        index = torch.tensor([order_index(self.size, float(q)) for q in levels], dtype=torch.long)
        return self.residuals[index]

    def quantiles(self, pred: torch.Tensor, scale: torch.Tensor, levels) -> torch.Tensor:
        """[B, H, Q] quantile forecasts from point forecasts [B, H] and window scales [B, 1], in pred's units."""
        offsets = self.offsets(levels).to(pred.device, torch.float64)  # [Q, H]
        return (pred.double().unsqueeze(-1) + scale.double().unsqueeze(-1) * offsets.T.unsqueeze(0)).to(pred.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        return {"residuals": self.residuals.float().contiguous()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ConformalTable:
        return cls(state["residuals"].double())
