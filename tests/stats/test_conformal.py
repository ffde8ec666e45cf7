"""Split-conformal intervals and the probabilistic metrics: the order statistics split conformal prescribes, CRPS /
WQL / coverage / MASE against a numpy computation, and calibrated coverage on a stationary panel."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from launching import cli

from llm4ts_scale.core.config import check_quantiles, load_config
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.stats.conformal import CRPS_LEVELS, ConformalTable, order_index, window_scale
from llm4ts_scale.stats.metrics import ProbabilisticAccumulator


def test_quantiles_are_the_split_conformal_order_statistics():
    g = torch.Generator().manual_seed(0)
    residuals = torch.randn(99, 3, generator=g, dtype=torch.float64)
    table = ConformalTable.from_residuals(residuals)
    ranked = np.sort(residuals.float().double().numpy(), axis=0)
    for level in (0.1, 0.5, 0.9):  # n = 99: k = ceil(100 tau) above 1/2, floor(100 tau) below
        k = math.ceil(100 * level) if level >= 0.5 else math.floor(100 * level)
        np.testing.assert_array_equal(table.offsets([level])[0].numpy(), ranked[k - 1])
    pred, x = torch.zeros(2, 3), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    q = table.quantiles(pred, window_scale(x), [0.1, 0.9])
    scale = np.sqrt(np.array([1.0, 0.0]) + 1e-5)
    np.testing.assert_allclose(q[:, :, 1].numpy(), scale[:, None] * ranked[89][None], rtol=1e-6)
    assert order_index(9, 0.1) == 0 and order_index(9, 0.9) == 8
    with pytest.raises(UserError, match="needs at least 199 calibration windows"):
        table.offsets([0.995])
    reloaded = ConformalTable.from_state(table.state())
    assert torch.equal(reloaded.residuals, table.residuals)  # saved in the precision it computes with


def test_crps_wql_coverage_and_mase_equal_a_numpy_computation():
    rng = np.random.default_rng(1)
    levels = CRPS_LEVELS
    y = rng.normal(size=(40, 6))
    point = y + rng.normal(scale=0.5, size=y.shape)
    q = np.sort(point[..., None] + rng.normal(scale=0.7, size=(40, 6, len(levels))), axis=-1)
    scale = rng.uniform(0.5, 2.0, size=40)
    scale[3] = np.nan  # a series without an in-sample scale: left out of MASE
    mask = np.ones(40, dtype=bool)
    mask[-5:] = False  # padding rows (ranks out of windows) are not scored
    acc = ProbabilisticAccumulator(levels)
    for part in (slice(0, 17), slice(17, 40)):
        acc.update(torch.tensor(q[part]), torch.tensor(point[part]), torch.tensor(y[part]), torch.tensor(scale[part]),
                   torch.tensor(mask[part]))
    got = acc.reduce().compute(levels)
    keep = mask
    yk, qk, pk, sk = y[keep], q[keep], point[keep], scale[keep]
    tau = np.array(levels)
    diff = yk[..., None] - qk
    pinball = np.maximum(tau * diff, (tau - 1) * diff)
    assert got["crps"] == pytest.approx(2 * pinball.sum() / (len(levels) * yk.size), rel=1e-12)
    assert got["wql"] == pytest.approx(2 * pinball.sum() / (len(levels) * np.abs(yk).sum()), rel=1e-12)
    lo, hi = qk[..., levels.index(0.1)], qk[..., levels.index(0.9)]
    assert got["coverage_80"] == pytest.approx(((yk >= lo) & (yk <= hi)).mean(), rel=1e-12)
    assert got["width_80"] == pytest.approx((hi - lo).mean(), rel=1e-12)
    valid = np.isfinite(sk)
    mase = (np.abs(pk - yk).mean(axis=1)[valid] / sk[valid]).mean()
    assert got["mase"] == pytest.approx(mase, rel=1e-12) and got["mase_windows"] == int(valid.sum())


def _ar1_panel(series: int = 200, length: int = 320, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(series):
        x = np.zeros(length)
        noise = rng.normal(size=length)
        for t in range(1, length):
            x[t] = 0.8 * x[t - 1] + noise[t]
        start = pd.Timestamp("2021-01-01") + pd.Timedelta(hours=int(rng.integers(0, 400)))
        frames.append(pd.DataFrame({"id": f"ar{i}", "timestamp": pd.date_range(start, periods=length, freq="h"),
                                    "target": 10.0 * (i % 7 + 1) + x * (1 + i % 3)}))
    return pd.concat(frames, ignore_index=True)


def test_conformal_80_percent_intervals_cover_80_percent_on_a_stationary_panel(tmp_path):
    path = tmp_path / "ar1.csv"
    _ar1_panel().to_csv(path, index=False)
    proc = cli(["evaluate", "--data", str(path), "--baseline", "rlinear", "--seq-len", "48", "--pred-len", "12"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.77 <= printed["coverage_80"] <= 0.83, printed
    assert printed["calibration_windows"] == 200 * (32 - 12 + 1)  # every series' 32 validation rows
    assert 0 < printed["crps"] < printed["mae"] and 0.5 < printed["mase"] < 2
    naive = cli(["evaluate", "--data", str(path), "--baseline", "naive", "--seq-len", "48", "--pred-len", "12"])
    assert naive.returncode == 0 and 0.77 <= json.loads(naive.stdout.strip().splitlines()[-1])["coverage_80"] <= 0.83


def test_quantile_levels_must_lie_strictly_between_0_and_1():
    assert check_quantiles([0.9, 0.1]) == [0.1, 0.9]
    for bad in ([0.5, 1.0], [0.0], [], [0.2, 0.2], ["a"]):
        with pytest.raises(UserError):
            check_quantiles(bad)
    with pytest.raises(UserError, match=r"1.5 is not a level in \(0, 1\)"):
        load_config(None, ["quantiles=[0.1, 1.5]"])
