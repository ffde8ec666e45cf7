"""`llm4ts-scale predict` on a run trained by the tests: H rows, timestamps continuing the data's
frequency, values in original units, a readable plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ILI_H, ILI_L
from launching import cli, data_dir
from PIL import Image


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    frame = pd.read_csv(data_dir() / "national_illness.csv").iloc[:300]
    path = tmp_path_factory.mktemp("history") / "history.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_predict_continues_the_series_in_original_units(ili_run_dir, history, tmp_path):
    path, frame = history
    out, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    result = cli(["predict", str(ili_run_dir), "--data", str(path), "--out", str(out), "--plot", str(plot)])
    assert result.returncode == 0, result.stderr[-3000:]
    forecast = pd.read_csv(out, parse_dates=["date"])
    assert len(forecast) == ILI_H
    channels = [c for c in frame.columns if c != "date"]
    quantile_columns = [f"{c}_q{q}" for c in channels for q in ("0.1", "0.5", "0.9")]
    assert list(forecast.columns) == list(frame.columns) + quantile_columns  # the run's quantiles follow the points
    lo, mid, hi = (forecast[[f"{c}_q{q}" for c in channels]].to_numpy() for q in ("0.1", "0.5", "0.9"))
    assert (lo <= mid).all() and (mid <= hi).all() and (lo < hi).any()
    last = pd.Timestamp(frame["date"].iloc[-1])
    expected_dates = pd.date_range(last, periods=ILI_H + 1, freq="7D")[1:]
    assert (forecast["date"].values == expected_dates.values).all()

    # the same forecast computed by hand on the standardized scale, then inverse-scaled with the train stats
    from llm4ts_scale.data.calendar import calendar_marks
    from llm4ts_scale.inference.export import load_exported_model

    model, config, data, _precision = load_exported_model(ili_run_dir)
    mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    values = frame.drop(columns="date").to_numpy(dtype=np.float64)
    x = torch.tensor(((values[-ILI_L:] - mean) / std).T, dtype=torch.float32)
    marks = torch.from_numpy(calendar_marks(pd.to_datetime(frame["date"]).values[-ILI_L:], data["calendar_attrs"]))
    with torch.no_grad():
        scaled = model(x, marks.unsqueeze(0).expand(x.shape[0], -1, -1)).numpy().T
    got = forecast[channels].to_numpy()
    np.testing.assert_allclose((got - mean) / std, scaled, rtol=1e-4, atol=1e-4)
    assert np.abs(got).max() > 10  # original units (ILI counts are in the thousands), not standardized

    # the intervals start from each channel's adaptive state at the end of the test split (calibration: adaptive)
    from llm4ts_scale.inference.export import CONFORMAL_FILE, export_dir_of, read_extras
    from llm4ts_scale.stats.conformal import window_scale

    table = read_extras(export_dir_of(ili_run_dir))[CONFORMAL_FILE]
    assert table.method == "adaptive" and len(table.factors) == len(channels)
    expected = table.quantiles(torch.from_numpy(scaled.T).double(), window_scale(x), [0.1, 0.5, 0.9],
                               table.stream_state(np.arange(len(channels))))
    for q, band in enumerate((lo, mid, hi)):
        np.testing.assert_allclose((band - mean) / std, expected[:, :, q].numpy().T, rtol=1e-4, atol=1e-4)

    with Image.open(plot) as image:
        image.verify()
    with Image.open(plot) as image:
        assert image.size[0] > 600 and image.size[1] > 400
    assert plot.stat().st_size > 20_000


def test_predict_writes_parquet_and_refuses_short_history(ili_run_dir, history, tmp_path):
    path, frame = history
    out = tmp_path / "forecast.parquet"
    result = cli(["predict", str(ili_run_dir), "--data", str(path), "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_parquet(out)) == ILI_H
    short = tmp_path / "short.csv"
    frame.iloc[:ILI_L - 1].to_csv(short, index=False)
    result = cli(["predict", str(ili_run_dir), "--data", str(short), "--out", str(tmp_path / "x.csv")])
    assert result.returncode == 2 and "looks back" in result.stderr and not (tmp_path / "x.csv").exists()
    renamed = tmp_path / "renamed.csv"
    frame.rename(columns={"OT": "target"}).to_csv(renamed, index=False)
    result = cli(["predict", str(ili_run_dir), "--data", str(renamed), "--out", str(tmp_path / "y.csv")])
    assert result.returncode == 2 and "columns" in result.stderr and not (tmp_path / "y.csv").exists()


def test_backtest_covers_the_test_split_next_to_the_actual_values(ili_run_dir, tmp_path):
    source = data_dir() / "national_illness.csv"
    frame = pd.read_csv(source, parse_dates=["date"])
    out, plot = tmp_path / "backtest.csv", tmp_path / "backtest.png"
    result = cli(["predict", str(ili_run_dir), "--data", str(source), "--out", str(out), "--plot", str(plot), "--backtest"])
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out, parse_dates=["date"])
    n = len(frame)
    test_border = n - int(n * 0.2)  # docs/ARCHITECTURE.md section 4: 70/10/20
    blocks = (n - test_border) // ILI_H
    assert len(table) == blocks * ILI_H
    assert table["date"].iloc[0] == frame["date"].iloc[test_border]
    actual = frame.set_index("date").loc[table["date"], "OT"].to_numpy()
    np.testing.assert_allclose(table["OT_actual"].to_numpy(), actual, rtol=1e-5)
    assert table["OT"].notna().all() and not np.allclose(table["OT"], table["OT_actual"])
    assert plot.stat().st_size > 20_000
