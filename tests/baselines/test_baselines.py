"""Baselines: forecasts by hand, and the naive baseline's ETTh1 test score equal to a direct
numpy computation, through the Python API and the `llm4ts-scale evaluate` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from llm4ts_scale.baselines.simple import baseline_forecast
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.windows import WindowSpec, make_loader
from llm4ts_scale.stats.metrics import MetricAccumulator

L, H = 336, 96


def test_forecasts_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert baseline_forecast("naive", x, 3).tolist() == [[6.0, 6.0, 6.0]]
    assert baseline_forecast("mean", x, 2).tolist() == [[3.5, 3.5]]
    assert baseline_forecast("seasonal", x, 5, period=3).tolist() == [[4.0, 5.0, 6.0, 4.0, 5.0]]
    with pytest.raises(UserError, match="needs --period"):
        baseline_forecast("seasonal", x, 5)
    with pytest.raises(UserError, match="between 1 and seq_len=6"):
        baseline_forecast("seasonal", x, 5, period=7)


@pytest.fixture(scope="module")
def naive_direct(etth1_csv):
    """Naive MSE/MAE on ETTh1 test, straight from the CSV with numpy (TSLib borders, train-only scaler)."""
    values = pd.read_csv(etth1_csv).drop(columns=["date"]).to_numpy(np.float64)
    train = values[:8640]
    scaled = (values - train.mean(0)) / train.std(0)
    test = scaled[11520 - L:14400]
    windows = np.lib.stride_tricks.sliding_window_view(test, L + H, axis=0)  # [W, C, L+H]
    last = windows[:, :, L - 1:L]
    err = windows[:, :, L:] - last
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))), "samples": err.shape[0] * err.shape[1]}


def test_naive_on_etth1_test_equals_numpy(etth1_store, naive_direct):
    acc = MetricAccumulator()
    for batch in make_loader(etth1_store, WindowSpec("test", L, H), 1000):
        acc.update(baseline_forecast("naive", batch["x"], H), batch["y"])
    got = acc.compute()
    assert got["samples"] == naive_direct["samples"] == 19495
    assert got["mse"] == pytest.approx(naive_direct["mse"], rel=1e-5)
    assert got["mae"] == pytest.approx(naive_direct["mae"], rel=1e-5)


def test_naive_cli_prints_and_writes_the_same(tmp_path, etth1_csv, naive_direct):
    out = tmp_path / "metrics.json"
    env = {**os.environ, "LLM4TS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "llm4ts_scale.cli", "evaluate", "--data", str(etth1_csv), "--baseline", "naive",
         "--seq-len", str(L), "--pred-len", str(H), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    written = json.loads(out.read_text())["test"]
    for metrics in (printed, written):
        assert metrics["samples"] == naive_direct["samples"]
        assert metrics["mse"] == pytest.approx(naive_direct["mse"], rel=1e-5)
        assert metrics["mae"] == pytest.approx(naive_direct["mae"], rel=1e-5)
        assert {"rmse", "rse", "mape"} <= set(metrics)
