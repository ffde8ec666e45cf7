"""Adaptive conformal intervals for test origins that arrive in order: ACI (Gibbs & Candès 2021) on the width.

Split conformal (llm4ts_scale/core/conformal.py) promises its coverage only when the test windows look like the
validation windows. When the future is more volatile (ILI's test years hold bigger flu seasons than its
validation years) its intervals cover far less than they say. Here each stream (one series or channel) carries
one width factor f, 1 at the first origin of a split (split conformal exactly); the quantile tau of step h of
the window at origin t is

    m_h + f_t * (r_tau,h - m_h)         r_tau,h: the split table's quantile tau of step h, m_h its median

so the table's per-step shape (and its scaling by the window's std) is kept and only the spread adapts. After
each origin, every forecast of the stream whose step-h target is the value just observed (the window at origin
t - h, for every h: feedback delayed by the horizon, nothing used before it is observed) reports whether its
80 % interval missed, and

    log f  +=  gamma * (miss rate of those forecasts - 0.2).

The quantile formula above is written for a centre m_h; the centre moves too, by b * (r_0.9,h - r_0.1,h) / 2
(b: a second state of the stream, in units of each step's half-width), b += gamma * (mean sign of the
observed errors about their centres): a forecaster that turned biased gets its intervals moved instead of only
widened. Validation preferred it off (SHIFT_GAMMA = 0: on ETTh1 the sign of correlated errors makes b wander,
widening intervals by 10 % and CRPS by 12 %; on ILI it changed nothing), so by default only the width adapts.

Every forecast of the latest observed value reports at once, so the feedback is current at every horizon (a
one-step-ahead forecast alone would tell only about step 1). Under exchangeability the misses average 0.2 and
f stays near 1; when errors grow, f grows until the 80 % intervals miss 20 % of the time again; the long-run
miss rate of the issued intervals tends to 0.2 whatever the data (the ACI argument, on log f). gamma was
chosen on validation (tools/bench_intervals.py --tune, README "Prediction intervals").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm4ts_scale.core.conformal import INTERVAL_80

ADAPTIVE_GAMMA = 0.01  # step of log f per origin, chosen on the validation splits of ETTh1 and ILI
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


def adaptive_run(residuals: torch.Tensor, series: torch.Tensor, origin: torch.Tensor, spread80: torch.Tensor, *,
                 step: int = 1, gamma: float = ADAPTIVE_GAMMA, shift_gamma: float = SHIFT_GAMMA) -> AdaptiveRun:
    """The sequential ACI run over one split.

    residuals [N, H]: (y - forecast) / window scale, the split-conformal table's units, minus the table's
    per-step median; series [N], origin [N]: each window's stream and first forecast row; spread80 [2, H]: the
    table's 0.1 and 0.9 quantiles minus that median."""
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
    log_f = torch.zeros(n_streams, dtype=torch.float64)
    b = torch.zeros(n_streams, dtype=torch.float64)
    issued_f = torch.ones(n_streams, length, dtype=torch.float64)
    issued_b = torch.zeros(n_streams, length, dtype=torch.float64)
    for k in range(1, length + int(lag.max()) if horizon else 0):
        j = k - lag
        ok = (j >= 0) & (j < length)
        if bool(ok.any()):
            jj, ii = j[ok], steps[ok]
            seen = valid[:, jj]  # [S, n] the windows whose step-ii target is the latest observed row
            count = seen.sum(dim=1)
            dev = r[:, jj, ii] - issued_b[:, jj] * half[ii]  # from the centre each interval was issued with
            f = issued_f[:, jj]
            miss = ((dev < f * lo[ii]) | (dev > f * hi[ii])) & seen
            above = torch.where(seen, torch.sign(dev), torch.zeros_like(dev))
            some = count > 0
            rate = miss.sum(dim=1) / count.clamp(min=1)
            log_f += torch.where(some, gamma * (rate - TARGET_MISS), torch.zeros_like(rate))
            b += shift_gamma * above.sum(dim=1) / count.clamp(min=1)
        if k < length:
            issued_f[:, k], issued_b[:, k] = torch.exp(log_f), b
    return AdaptiveRun(issued_f[stream, position], issued_b[stream, position], torch.exp(log_f), b.clone(), keys)
