"""Adaptive conformal intervals (llm4ts_scale/stats/adaptive.py): they match split conformal when the future looks
like validation, recover their 80 % after a level shift where split conformal does not, never use a target
before it is observed, carry their state into an export, and reach metrics.json through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from launching import cli

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.stats.adaptive import ADAPTIVE_GAMMA, ETA, FACTOR_BOUND, GAMMAS, AciSettings, adaptive_run
from llm4ts_scale.stats.conformal import INTERVAL_80, ConformalTable
from llm4ts_scale.stats.intervals import SplitRows, adaptive_state, interval_metrics

S, T, H = 4, 2000, 12  # streams, origins per stream, horizon
FIRST_ORIGIN = 5000
RECOVERY_ORIGINS = 400  # adaptive (gamma 0.01): after a 2-sigma level shift the 80 % interval covers 0.80 +- 0.03 again
AGGREGATED_RECOVERY_ORIGINS = 50  # aggregated (GAMMAS, ETA): the same within 50 origins (0.80 at 25)


def _panel(seed: int, shift: float = 0.0) -> tuple[ConformalTable, SplitRows, torch.Tensor]:
    """A zero forecast of i.i.d. N(0, 1) series (exchangeable errors), validation drawn from the same law; with
    `shift`, every value from the middle of the test split on is `shift` higher (a level shift)."""
    g = torch.Generator().manual_seed(seed)
    table = ConformalTable.from_residuals(torch.randn(S * 250, H, generator=g, dtype=torch.float64), "adaptive")
    origin = torch.arange(T).repeat(S) + FIRST_ORIGIN
    series = torch.arange(S).repeat_interleave(T) * 3 + 1  # series ids need not be 0..S-1
    target_rows = origin[:, None] + torch.arange(H)[None]
    y = torch.randn(S * T, H, generator=g, dtype=torch.float64) + shift * (target_rows >= FIRST_ORIGIN + T // 2)
    rows = SplitRows(torch.zeros(S * T, H), y.float(), torch.ones(S * T, 1, dtype=torch.float64), series, origin)
    return table, rows, origin


def _covered(table: ConformalTable, rows: SplitRows, method: str) -> torch.Tensor:
    """[N] share of each window's H targets inside its 80 % interval."""
    table.method = method
    run = adaptive_state(rows, table)
    adapt = (run.factor, run.shift) if run is not None else None
    q = table.quantiles(rows.pred.double(), rows.scale, INTERVAL_80, adapt)
    y = rows.target.double()
    return ((y >= q[..., 0]) & (y <= q[..., 1])).double().mean(dim=1)


@pytest.mark.parametrize("method", ["adaptive", "aggregated"])
def test_adaptive_matches_split_conformal_on_an_exchangeable_series(method):
    table, rows, _ = _panel(seed=0)
    split = _covered(table, rows, "split").mean().item()
    adaptive = _covered(table, rows, method).mean().item()
    assert abs(adaptive - split) <= 0.02, (split, adaptive)
    assert 0.78 <= adaptive <= 0.82
    # the rows' order (ranks, batches) does not matter: each stream is replayed in origin order
    perm = torch.randperm(len(rows.origin), generator=torch.Generator().manual_seed(1))
    shuffled = SplitRows(rows.pred[perm], rows.target[perm], rows.scale[perm], rows.series[perm], rows.origin[perm])
    a = interval_metrics(rows, ConformalTable(table.residuals, "adaptive"), torch.ones(20))
    b = interval_metrics(shuffled, ConformalTable(table.residuals, "adaptive"), torch.ones(20))
    assert a["coverage_80"] == pytest.approx(b["coverage_80"], abs=1e-12) and a["crps"] == pytest.approx(b["crps"])


def test_adaptive_recovers_80_percent_after_a_level_shift_where_split_conformal_does_not():
    assert ADAPTIVE_GAMMA == 0.01  # RECOVERY_ORIGINS is stated for this gamma
    table, rows, origin = _panel(seed=2, shift=2.0)
    before = origin < FIRST_ORIGIN + T // 2 - H
    after = origin >= FIRST_ORIGIN + T // 2 + RECOVERY_ORIGINS
    split, adaptive = _covered(table, rows, "split"), _covered(table, rows, "adaptive")
    assert 0.78 <= adaptive[before].mean().item() <= 0.82
    assert 0.77 <= adaptive[after].mean().item() <= 0.83, adaptive[after].mean()
    assert split[after].mean().item() < 0.5  # split conformal keeps its validation width: about 0.24


def test_aggregating_runs_recovers_faster_than_one_slow_run_and_one_run_is_plain_aci():
    """Plain ACI at gamma 0.01 is still short of 0.80 fifty origins after the shift; the aggregate is there. With
    one run the issued log f is exactly the sum of gamma * (miss rate - 0.2) so far."""
    assert GAMMAS == (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2) and ETA == 0.3  # the recovery is stated for these
    table, rows, origin = _panel(seed=2, shift=2.0)
    after = origin >= FIRST_ORIGIN + T // 2 + AGGREGATED_RECOVERY_ORIGINS
    slow, aggregated = _covered(table, rows, "adaptive")[after].mean(), _covered(table, rows, "aggregated")[after].mean()
    assert slow.item() < 0.77 <= aggregated.item() <= 0.83, (slow, aggregated)
    centre = table.median
    spread = table.offsets(INTERVAL_80) - centre
    # one run, first stream, H=1 view: log f at position k = 0.05 * sum over k' < k of (miss_k' - 0.2)
    one = SplitRows(rows.pred[:T, :1], rows.target[:T, :1], rows.scale[:T], rows.series[:T], rows.origin[:T])
    run = adaptive_run(one.residuals() - centre[:1], one.series, one.origin, spread[:, :1], settings=AciSettings(gammas=(0.05,)))
    dev = (one.residuals() - centre[:1])[:, 0]
    f = run.factor
    miss = ((dev < f * spread[0, 0]) | (dev > f * spread[1, 0])).double()
    expected = torch.exp(torch.cat([torch.zeros(1), torch.cumsum(0.05 * (miss - 0.2), 0)[:-1]]).double())
    assert torch.allclose(f, expected, atol=1e-9)


def test_no_run_drifts_past_the_factor_bound():
    """A 20-sigma shift would drive the fastest runs' f without limit; each stays within [1/4, 4]."""
    table, rows, _ = _panel(seed=7, shift=20.0)
    centre = table.median
    spread = table.offsets(INTERVAL_80) - centre
    run = adaptive_run(rows.residuals() - centre, rows.series, rows.origin, spread, settings=AciSettings(gammas=(0.2,)))
    assert FACTOR_BOUND == 4.0 and float(run.factor.max()) == pytest.approx(4.0)
    free = adaptive_run(rows.residuals() - centre, rows.series, rows.origin, spread,
                        settings=AciSettings(gammas=(0.2,), bound=None))
    assert float(free.factor.max()) > 4.0


def test_a_target_is_used_only_once_it_is_observed():
    """The interval issued at position k uses the step-i error of window j only when origin_j + i < origin_k."""
    table, rows, _ = _panel(seed=3)
    j, i = 100, 7  # window 100 of the first stream; its step-7 target is row origin_100 + 7
    rows.target[j, i] = 0.0  # inside its interval; below, far outside
    centre = table.median
    spread = table.offsets(INTERVAL_80) - centre
    base = adaptive_run(rows.residuals() - centre, rows.series, rows.origin, spread)
    changed = rows.target.clone()
    changed[j, i] += 50.0
    moved = SplitRows(rows.pred, changed, rows.scale, rows.series, rows.origin)
    other = adaptive_run(moved.residuals() - centre, rows.series, rows.origin, spread)
    first_stream = slice(0, T)
    diff = (base.factor[first_stream] != other.factor[first_stream]).nonzero().flatten()
    assert int(diff.min()) == j + i + 1  # the first origin after the target's row
    assert torch.equal(base.factor[T:], other.factor[T:])  # other streams never see it


def test_the_adaptive_state_is_saved_and_a_new_series_starts_from_the_median():
    table, rows, _ = _panel(seed=4, shift=1.0)
    interval_metrics(rows, table, torch.ones(20))
    assert table.factors is not None and len(table.factors) == S and bool((table.factors > 1).all())
    reloaded = ConformalTable.from_state(table.state())
    assert reloaded.method == "adaptive" and torch.equal(reloaded.factors, table.factors)
    table.method = "aggregated"
    assert ConformalTable.from_state(table.state()).method == "aggregated"
    factor, shift = reloaded.stream_state([1, 4, 999])
    assert factor[0] == table.factors[0] and factor[1] == table.factors[1]
    assert factor[2] == table.factors.median() and shift[2] == table.shifts.median()
    old = {"residuals": table.residuals.float()}  # an export written before adaptive calibration: split
    assert ConformalTable.from_state(old).method == "split" and ConformalTable.from_state(old).stream_state([1]) is None


def test_a_bad_calibration_value_is_refused_in_one_line():
    assert load_config(None, ["calibration=split"]).calibration == "split"
    assert load_config(None, []).calibration == "adaptive"
    assert load_config(None, ["calibration=aggregated"]).calibration == "aggregated"
    with pytest.raises(UserError, match="config key 'calibration' must be one of split, adaptive, aggregated; got 'aci'"):
        load_config(None, ["calibration=aci"])
    proc = cli(["describe", "calibration=aci"], timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "calibration" in proc.stderr and "split, adaptive, aggregated" in proc.stderr


def test_metrics_json_holds_coverage_and_width_per_level_and_per_step(tmp_path):
    g = np.random.default_rng(0)
    n = 700
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="h"),
                          "a": np.cumsum(g.normal(size=n)) * 0.1 + g.normal(size=n),
                          "b": np.sin(np.arange(n) / 6) + 0.3 * g.normal(size=n)})
    frame.loc[n - 70:, "b"] += 3 * g.normal(size=70)  # the test's last part is far noisier than validation
    path = tmp_path / "noisy.csv"
    frame.to_csv(path, index=False)
    out = {}
    for method in ("split", "adaptive", "aggregated"):
        proc = cli(["evaluate", "--data", str(path), "--split-rule", "ratio", "--baseline", "naive", "--seq-len", "24",
                    "--pred-len", "12", "--calibration", method, "--out", str(tmp_path / f"{method}.json")])
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[method] = json.loads((tmp_path / f"{method}.json").read_text())["test"]
    for method, m in out.items():
        assert m["calibration"] == method
        assert sorted(m["intervals"]) == ["20", "40", "60", "80"]  # metrics.json sorts its keys
        assert m["intervals"]["80"]["coverage"] == pytest.approx(m["coverage_80"], abs=1e-5)
        assert m["intervals"]["80"]["width"] == pytest.approx(m["width_80"], abs=1e-5)
        widths = [m["intervals"][k]["width"] for k in ("20", "40", "60", "80")]
        assert widths == sorted(widths) and m["intervals"]["20"]["levels"] == [0.4, 0.6]
        assert sorted(m["quantile_coverage"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
        assert len(m["coverage_80_by_step"]) == 12
        assert np.mean(m["coverage_80_by_step"]) == pytest.approx(m["coverage_80"], abs=1e-3)
    assert "adaptive_end" in out["adaptive"] and "adaptive_end" in out["aggregated"] and "adaptive_end" not in out["split"]
    assert out["adaptive"]["adaptive_end"]["width_factor"]["max"] > 1  # it widened for the noisy end
    assert out["adaptive"]["coverage_80"] > out["split"]["coverage_80"]
