"""In-process units of llm4ts_scale/inference on a finished tiny ILI run: loading, re-scoring, forecasting
(batched = one by one), back-testing and the report, without a subprocess in between."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.inference.evaluate_run import evaluate_loaded
from llm4ts_scale.inference.loading import load_model, open_checked_store
from llm4ts_scale.inference.predict import backtest, forecast_histories, forecast_history
from llm4ts_scale.inference.report import read_run, write_report


@pytest.fixture(scope="module")
def loaded(ili_run_dir):
    return load_model(ili_run_dir)


def test_re_scoring_the_loaded_model_gives_the_runs_test_metrics(ili_run_dir, loaded):
    recorded = json.loads((ili_run_dir / "metrics.json").read_text())["test"]
    scored = evaluate_loaded(loaded)
    assert scored["samples"] == recorded["samples"]
    assert scored["mse"] == pytest.approx(recorded["mse"], rel=1e-6)
    assert evaluate_loaded(loaded, split="val")["samples"] != scored["samples"]


def test_batched_forecasts_equal_one_by_one_and_continue_the_timestamps(loaded, ili_csv):
    frame = pd.read_csv(ili_csv, parse_dates=["date"])
    columns = list(loaded.data["columns"])
    histories = [(frame["date"].to_numpy()[:end], frame[columns].to_numpy()[:end]) for end in (300, 420)]
    batched = forecast_histories(loaded, histories, columns)
    H = loaded.config.data.pred_len
    for (ts, values), result in zip(histories, batched):
        future, forecast = result.timestamps, result.point
        single_future, single = (lambda r: (r.timestamps, r.point))(forecast_history(loaded, ts, values, columns))
        np.testing.assert_allclose(forecast, single, rtol=1e-4)  # fp32 sums of a batch of 2 vs 1
        assert forecast.shape == (H, len(columns)) and np.isfinite(forecast).all()
        assert future[0] == pd.Timestamp(ts[-1]) + pd.Timedelta(weeks=1) and (future == single_future).all()
    with pytest.raises(UserError, match="looks back"):
        forecast_history(loaded, histories[0][0][:10], histories[0][1][:10], columns)


def test_backtest_covers_the_test_split_in_horizon_blocks(loaded):
    store = open_checked_store(loaded)
    timestamps, forecast, actual = backtest(loaded, store)
    H = loaded.config.data.pred_len
    assert forecast.shape == actual.shape and len(timestamps) == len(forecast) and len(forecast) % H == 0
    assert np.isfinite(forecast).all()


def test_report_writes_its_sections_and_refuses_corrupted_metrics(ili_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ili_run_dir, run)
    path = write_report(run)
    text = path.read_text()
    assert path.name == "report.md" and "naive" in text and (run / "report_loss.png").is_file()
    assert read_run(run)[1]["test"]["samples"] > 0
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupted"):
        read_run(run)
