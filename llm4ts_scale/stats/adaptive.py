"""Adaptive conformal intervals for test origins that arrive in order: ACI on the width, alone or aggregated.

Split conformal (llm4ts_scale/stats/conformal.py) promises its coverage only when the test windows look like the
validation windows. When the future is more volatile (ILI's test years hold bigger flu seasons than its
validation years) its intervals cover far less than they say. Here each stream (one series or channel) carries
one width factor f, 1 at the first origin of a split (split conformal exactly); the quantile tau of step h of
the window at origin t is

    m_h + f_t * (r_tau,h - m_h)         r_tau,h: the split table's quantile tau of step h, m_h its median

so the table's per-step shape (and its scaling by the window's std) is kept and only the spread adapts. After
each origin, every forecast of the stream whose step-h target is the value just observed (the window at origin
t - h, for every h: feedback delayed by the horizon, nothing used before it is observed) reports whether its
80 % interval missed. One ACI run (Gibbs & Candes 2021, on log f) with step gamma moves

    log f_gamma  +=  gamma * (miss rate of those forecasts - 0.2).

No single gamma suits every data set: a weekly series with 170 test origins needs a fast one, an hourly series
with 2,800 origins and correlated errors drifts into huge widths with it. So several runs (GAMMAS, gamma 0 is
split conformal) go side by side and the issued log f is their weighted mean; each run's weight is multiplied
by exp(-ETA * its interval score on the forecasts just observed), the score in units of the table's own mean
score on validation (the aggregated ACI of Zaffran et al. 2022, with exponential weights as in Gibbs & Candes
2022): `calibration: aggregated`. A single gamma (`gammas=(g,)`) is plain ACI: `calibration: adaptive`, the
default, which the validation protocol preferred by a hair (docs/PROTOCOL.md, "Prediction intervals"). Each run's f
is kept within [1/FACTOR_BOUND, FACTOR_BOUND]:
on ETTh1's validation an unbounded fast run drifted far enough for the weighted mean to double a baseline's
widths (DLinear, H=336), and a factor of 4 is already far past anything the slow runs reach.

The formula above is written for a centre m_h; the centre can move too, by b * (r_0.9,h - r_0.1,h) / 2
(b: a second state of the stream, in units of each step's half-width), b += shift_gamma * (mean sign of the
observed errors about their centres). Validation preferred it off (SHIFT_GAMMA = 0: on ETTh1 the sign of
correlated errors makes b wander, widening intervals by 10 % and CRPS by 12 %; on ILI it changed nothing).

Every forecast of the latest observed value reports at once, so the feedback is current at every horizon (a
one-step-ahead forecast alone would tell only about step 1). Under exchangeability the misses average 0.2 and
f stays near 1; when errors grow, the runs' f grow until the 80 % intervals miss 20 % of the time again. ETA and
the bound were chosen on validation (benchmarks/bench_intervals.py, docs/PROTOCOL.md, "Prediction intervals").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm4ts_scale.stats.conformal import INTERVAL_80

ADAPTIVE_GAMMA = 0.01  # `calibration: adaptive`: one ACI run, its step chosen on the validation splits of ETTh1 and ILI
GAMMAS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # `calibration: aggregated`: the ACI runs (steps of log f per origin)
ETA = 0.3  # aggregated: weight learning rate per unit of interval score
FACTOR_BOUND = 4.0  # aggregated: each run's f stays within [1 / bound, bound], so a fast run cannot drift to absurd widths
SEQUENTIAL = ("adaptive", "aggregated")  # the calibrations that replay a split in origin order
SHIFT_GAMMA = 0.0  # step of the centre shift b per origin (half-widths): off, chosen on the same splits
TARGET_MISS = 1.0 - (INTERVAL_80[1] - INTERVAL_80[0])  # 0.2: the 80 % interval should miss one point in five


def stream_positions(series: torch.Tensor, origin: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(stream index [N] in 0..S-1, position of each window in its stream [N], S) with windows ordered by origin;
    consecutive windows of a stream must be `step` rows apart (as data/windows.py cuts them)."""
    series, origin = series.long().cpu(), origin.long().cpu()
    keys, stream = torch.unique(series, return_inverse=True)
    order = torch.argsort(stream * (origin.max() + 1 if len(origin) else 1) + origin)
    s_sorted, o_sorted = stream[order], origin[order]
    first = torch.ones_like(s_sorted, dtype=torch.bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    gaps = (o_sorted[1:] - o_sorted[:-1])[~first[1:]]
    if len(gaps) and not bool((gaps == step).all()):
        raise ValueError(f"windows of a stream must be {step} rows apart, found gaps {sorted(set(gaps.tolist()))[:3]}")
    starts = torch.cumsum(first.long(), 0) - 1  # run index of every sorted window
    run_start = torch.nonzero(first).flatten()
    pos_sorted = torch.arange(len(order)) - run_start[starts]
    position = torch.empty_like(pos_sorted)
    position[order] = pos_sorted
    return stream, position, len(keys)


@dataclass
class AdaptiveRun:
    """What the sequential run gave: the (width factor, shift) each window's intervals were issued with [N], and
    each stream's state once every target of the split is observed [S], for the series ids `keys` [S]."""

    factor: torch.Tensor
    shift: torch.Tensor
    end_factor: torch.Tensor
    end_shift: torch.Tensor
    keys: torch.Tensor


@dataclass(frozen=True)
class AciSettings:
    """The ACI runs (their steps), the weights' learning rate, the bound on each run's f (None: unbounded) and
    the centre shift's step."""

    gammas: tuple[float, ...] = GAMMAS
    eta: float = ETA
    bound: float | None = FACTOR_BOUND
    shift_gamma: float = SHIFT_GAMMA


def run_settings(method: str) -> AciSettings:
    """What a calibration method runs with: `adaptive` one unbounded run at ADAPTIVE_GAMMA, `aggregated` the
    defaults."""
    return AciSettings((ADAPTIVE_GAMMA,), bound=None) if method == "adaptive" else AciSettings()


def interval_score(dev: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The 80 % interval's score (width plus 10x every miss's distance: Gneiting & Raftery 2007), elementwise."""
    penalty = 2.0 / TARGET_MISS
    return (hi - lo) + penalty * ((lo - dev).clamp(min=0) + (dev - hi).clamp(min=0))


def adaptive_run(residuals: torch.Tensor, series: torch.Tensor, origin: torch.Tensor, spread80: torch.Tensor, *,
                 step: int = 1, settings: AciSettings = AciSettings(), score_unit: float = 1.0) -> AdaptiveRun:
    """The sequential aggregated-ACI run over one split.

    residuals [N, H]: (y - forecast) / window scale, the split-conformal table's units, minus the table's
    per-step median; series [N], origin [N]: each window's stream and first forecast row; spread80 [2, H]: the
    table's 0.1 and 0.9 quantiles minus that median; score_unit: the table's mean interval score, what the
    runs' scores are divided by before they weigh them."""
    n, horizon = residuals.shape
    stream, position, n_streams = stream_positions(series, origin, step)
    keys = torch.unique(series.long().cpu())
    length = int(position.max()) + 1 if n else 0
    r = torch.zeros(n_streams, length, horizon, dtype=torch.float64)
    valid = torch.zeros(n_streams, length, dtype=torch.bool)
    r[stream, position] = residuals.double().cpu()
    valid[stream, position] = True
    lo, hi = spread80[0].double().cpu(), spread80[1].double().cpu()
    half = ((hi - lo) / 2).clamp(min=1e-12)  # the unit of the shift at each step
    steps = torch.arange(horizon)
    lag = torch.tensor([math.ceil((i + 1) / step) for i in range(horizon)])  # positions until step i is observed
    gammas, eta, bound, shift_gamma = settings.gammas, settings.eta, settings.bound, settings.shift_gamma
    gamma = torch.tensor(gammas, dtype=torch.float64)
    log_f = torch.zeros(n_streams, len(gammas), dtype=torch.float64)  # every run's state
    weight = torch.full((n_streams, len(gammas)), 1.0 / len(gammas), dtype=torch.float64)
    b = torch.zeros(n_streams, dtype=torch.float64)
    issued_runs = torch.ones(n_streams, length, len(gammas), dtype=torch.float64)
    issued_f = torch.ones(n_streams, length, dtype=torch.float64)
    issued_b = torch.zeros(n_streams, length, dtype=torch.float64)
    for k in range(1, length + int(lag.max()) if horizon else 0):
        j = k - lag
        ok = (j >= 0) & (j < length)
        if bool(ok.any()):
            jj, ii = j[ok], steps[ok]
            seen = valid[:, jj]  # [S, n] the windows whose step-ii target is the latest observed row
            count = seen.sum(dim=1).clamp(min=1).unsqueeze(-1)
            some = seen.any(dim=1).unsqueeze(-1)
            dev = (r[:, jj, ii] - issued_b[:, jj] * half[ii]).unsqueeze(-1)  # from each interval's issued centre
            f = issued_runs[:, jj]  # [S, n, runs]
            low, high = f * lo[ii].view(1, -1, 1), f * hi[ii].view(1, -1, 1)
            mask = seen.unsqueeze(-1)
            rate = (((dev < low) | (dev > high)) & mask).sum(dim=1) / count
            score = (interval_score(dev, low, high) * mask).sum(dim=1) / count / score_unit
            log_f += torch.where(some, gamma * (rate - TARGET_MISS), torch.zeros_like(rate))
            if bound is not None:
                log_f.clamp_(-math.log(bound), math.log(bound))
            moved = weight * torch.exp(-eta * (score - score.min(dim=1, keepdim=True).values))
            weight = torch.where(some, moved / moved.sum(dim=1, keepdim=True), weight)
            above = torch.where(seen, torch.sign(dev.squeeze(-1)), torch.zeros_like(dev.squeeze(-1)))
            b += shift_gamma * above.sum(dim=1) / count.squeeze(-1)
        if k < length:
            issued_runs[:, k] = torch.exp(log_f)
            issued_f[:, k], issued_b[:, k] = torch.exp((weight * log_f).sum(dim=1)), b
    end = torch.exp((weight * log_f).sum(dim=1))
    return AdaptiveRun(issued_f[stream, position], issued_b[stream, position], end, b.clone(), keys)
