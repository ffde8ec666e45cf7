"""Training on panels end to end: a melted wide file trains to the same test MSE, a planted known covariate is
used (the test MSE falls by far more than half), 2 processes under ZeRO-2 give the 1-process metrics, a killed
run resumes to the same metrics, and predict forecasts every id of a long history with its future covariates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from backbones import tiny_llama
from launching import child_env, cli, launch_train

from llm4ts_scale.data.panels import melt, synthetic_panel

pytestmark = pytest.mark.slow
L, H = 48, 12


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), layers=2, hidden=32)


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """40 KernelSynth series with a planted known driver (target = 2 * driver + 0.1 * own series), plus one
    series too short for any window."""
    frame = synthetic_panel(40, min_length=200, max_length=400, driver=2.0, seed=1)
    short = pd.DataFrame({"id": "short", "timestamp": pd.date_range("2020-03-01", periods=30, freq="h"),
                          "driver": np.zeros(30), "target": np.arange(30.0)})
    path = tmp_path_factory.mktemp("panel") / "driver.csv"
    pd.concat([frame, short]).to_csv(path, index=False)
    return path


def _overrides(backbone, run_dir, data, **over) -> list[str]:
    values = {"run_dir": run_dir, "data.path": data, "data.seq_len": L, "data.pred_len": H, "data.few_shot_percent": 100,
              "data.batch_size": 32, "data.eval_batch_size": 512, "model.backbone": backbone, "model.layers": 2,
              "model.quantize": "none", "model.lora.r": 4, "model.dropout": 0.0, "train.limit_train_batches": 5,
              "train.compare_baselines": False, "train.log_with": "none", "train.checkpoint_every_steps": 2,
              "train.mixed_precision": "no", "stages.align.epochs": 1, "stages.align.lr": 3e-3, "stages.ft.epochs": 0,
              "data.covariates.known": "[driver]"}
    values.update(over)
    return [f"{k}={v}" for k, v in values.items()]


def _run(overrides, processes=1, ds=None, **env):
    result = launch_train(overrides, ds=ds, processes=processes, env=child_env(**env) if env else None)
    return result


def _test_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["test"]


@pytest.fixture(scope="module")
def with_driver(tmp_path_factory, backbone, panel):
    run_dir = tmp_path_factory.mktemp("driver") / "run"
    result = _run(_overrides(backbone, run_dir, panel))
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def test_a_melted_wide_file_trains_to_the_same_test_mse(tmp_path, backbone, etth1_csv):
    path = tmp_path / "etth1_long.csv"
    melt(pd.read_csv(etth1_csv)).to_csv(path, index=False)
    common = {"data.seq_len": 96, "data.pred_len": 24, "data.few_shot_percent": 10, "data.covariates.known": "[]"}
    wide = _run(_overrides(backbone, tmp_path / "wide", etth1_csv, **common))
    long = _run(_overrides(backbone, tmp_path / "long", path, **common, **{"data.split": "ett-hourly"}))
    assert wide.returncode == 0 and long.returncode == 0, (wide.stderr[-2000:], long.stderr[-2000:])
    a, b = _test_metrics(tmp_path / "wide"), _test_metrics(tmp_path / "long")
    assert a["samples"] == b["samples"] == 7 * (2880 - 24 + 1)
    for key in ("mse", "mae", "crps", "coverage_80"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key


def test_a_planted_known_covariate_is_used(tmp_path, backbone, panel, with_driver):
    blind = _run(_overrides(backbone, tmp_path / "blind", panel, **{"data.covariates.known": "[]"}))
    assert blind.returncode == 0, blind.stderr[-3000:]
    seen, unseen = _test_metrics(with_driver), _test_metrics(tmp_path / "blind")
    assert seen["mse"] < 0.5 * unseen["mse"], (seen["mse"], unseen["mse"])
    run = json.loads((with_driver / "run.json").read_text())
    assert run["series"]["series"] == 41 and run["series"]["skipped_too_short"] == 1
    assert run["stages"]["lp"]["history"][0]["covariate_features"] == L + H
    assert 0.7 < seen["coverage_80"] < 0.9 and seen["crps"] < seen["mae"] and "mase" in seen


def test_two_processes_under_zero2_give_the_one_process_metrics(tmp_path, backbone, panel):
    exact_only = {"stages.align.epochs": 0}  # exact LP is world-size independent; SGD batches differ by rank
    one = _run(_overrides(backbone, tmp_path / "one", panel, **exact_only), processes=1, ds="zero2")
    two = _run(_overrides(backbone, tmp_path / "two", panel, **exact_only), processes=2, ds="zero2")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-3000:])
    a, b = _test_metrics(tmp_path / "one"), _test_metrics(tmp_path / "two")
    assert a["samples"] == b["samples"] and a["calibration_windows"] == b["calibration_windows"]
    # to 1e-5: the driver explains the target almost exactly (MSE ~ 0.002), so the fp32 Gram sums, added in
    # another order when the rows are split over two ranks, move the test metrics by ~1e-7 (MSE) to ~7e-6
    # (MASE, divided by the smallest series' scale): up to 1e-4 of themselves; the selection agrees closer
    for key in ("mse", "mae", "crps", "wql", "coverage_80", "width_80", "mase"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    val = [json.loads((tmp_path / r / "run.json").read_text())["stages"]["lp"]["val"]["mse"] for r in ("one", "two")]
    assert val[1] == pytest.approx(val[0], rel=1e-5)


def test_a_killed_panel_run_resumes_to_the_same_metrics(tmp_path, backbone, panel, with_driver):
    run_dir = tmp_path / "run"
    for kill_at in ("align.step@3", "eval@1", "test@2"):  # validation is one batch here
        result = _run(_overrides(backbone, run_dir, panel), LLM4TS_KILL_AT=kill_at)
        assert result.returncode == -9, (kill_at, result.stderr[-3000:])
    result = _run(_overrides(backbone, run_dir, panel))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = _test_metrics(run_dir), _test_metrics(with_driver)
    for key in ("mse", "crps", "coverage_80"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5), key


def _future(panel_path, ids=None) -> pd.DataFrame:
    frame = pd.read_csv(panel_path, parse_dates=["timestamp"])
    rows = []
    for name, part in frame.groupby("id", sort=False):
        if ids is not None and name not in ids:
            continue
        stamps = pd.date_range(part["timestamp"].iloc[-1], periods=H + 1, freq="h")[1:]
        rows.append(pd.DataFrame({"id": name, "timestamp": stamps, "driver": np.sin(np.arange(H))}))
    return pd.concat(rows, ignore_index=True)


def test_predict_forecasts_every_id_with_its_future_covariates(tmp_path, with_driver, panel):
    history = pd.read_csv(panel)
    history = history[history["id"] != "short"]  # shorter than the look-back: refused, as tested below
    history.to_csv(tmp_path / "history.csv", index=False)
    future = _future(tmp_path / "history.csv")
    future.to_csv(tmp_path / "future.csv", index=False)
    out = tmp_path / "forecast.csv"
    proc = cli(["predict", str(with_driver), "--data", str(tmp_path / "history.csv"), "--future",
                str(tmp_path / "future.csv"), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    forecast = pd.read_csv(out, parse_dates=["timestamp"])
    assert list(forecast.columns) == ["id", "timestamp", "target", "target_q0.1", "target_q0.5", "target_q0.9"]
    assert len(forecast) == 40 * H and forecast["id"].nunique() == 40
    assert (forecast["target_q0.1"] <= forecast["target_q0.9"]).all()
    np.testing.assert_array_equal(forecast["timestamp"].to_numpy(), future["timestamp"].to_numpy())
    # the driver's future matters: the forecast follows 2 * driver
    shifted = future.assign(driver=future["driver"] + 1.0)
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    proc = cli(["predict", str(with_driver), "--data", str(tmp_path / "history.csv"), "--future",
                str(tmp_path / "shifted.csv"), "--out", str(tmp_path / "shifted_forecast.csv")])
    moved = pd.read_csv(tmp_path / "shifted_forecast.csv")["target"] - forecast["target"]
    assert proc.returncode == 0 and moved.mean() > 1.0

    from llm4ts_scale import Forecaster

    ours = Forecaster.from_pretrained(with_driver).predict(history, future=future, quantiles=[0.05, 0.95])
    np.testing.assert_allclose(ours["target"].to_numpy(), forecast["target"].to_numpy(), rtol=1e-6, atol=1e-6)
    assert list(ours.columns)[-2:] == ["target_q0.05", "target_q0.95"]

    for args, message in ((["--future", str(tmp_path / "missing.csv")], "does not exist"),
                          ([], "pass their values"), (["--future", str(tmp_path / "future.csv"), "--quantiles", "1.5"],
                                                      "not a level in (0, 1)")):
        bad = cli(["predict", str(with_driver), "--data", str(tmp_path / "history.csv"), *args, "--out",
                   str(tmp_path / "bad.csv")])
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr[-2000:]
        assert not (tmp_path / "bad.csv").exists()
    _future(tmp_path / "history.csv", ids={"s00000"}).to_csv(tmp_path / "partial.csv", index=False)
    bad = cli(["predict", str(with_driver), "--data", str(tmp_path / "history.csv"), "--future",
               str(tmp_path / "partial.csv"), "--out", str(tmp_path / "bad.csv")])
    assert bad.returncode == 2 and "no rows for series 's00001'" in bad.stderr
    bad = cli(["predict", str(with_driver), "--data", str(panel), "--future", str(tmp_path / "future.csv"), "--out",
               str(tmp_path / "bad.csv")])
    assert bad.returncode == 2 and "series 'short'" in bad.stderr and "looks back" in bad.stderr


def test_a_panel_without_a_long_enough_series_is_refused_before_anything_is_written(tmp_path, backbone, panel):
    run_dir = tmp_path / "run"
    result = _run(_overrides(backbone, run_dir, panel, **{"data.seq_len": 480}))
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "no series of driver has a train window" in lines[0]
    assert not run_dir.exists()
