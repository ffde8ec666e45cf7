"""Long-format panels: a melted wide file is the same data (same windows, same rlinear test MSE), every series is
split and scaled on its own train part, short series are skipped and counted, and bad panels are refused in
one line (exit 2) with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from launching import cli

from llm4ts_scale.baselines.rlinear import fit_rlinear
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.frame import Schema
from llm4ts_scale.data.panels import demo_panel, melt, synthetic_panel
from llm4ts_scale.data.prepare import prepare
from llm4ts_scale.data.windows import WindowSpec, make_loader

L, H, FEW_SHOT = 96, 24, 10


@pytest.fixture(scope="module")
def melted(tmp_path_factory, etth1_csv):
    path = tmp_path_factory.mktemp("panels") / "etth1_long.csv"
    melt(pd.read_csv(etth1_csv)).to_csv(path, index=False)
    return path


def _windows(store, split):
    batches = list(make_loader(store, WindowSpec(split, L, H, FEW_SHOT if split == "train" else 100), 8192))
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("x", "y", "x_mark", "channel")}


def test_a_melted_wide_file_gives_the_same_windows_and_test_mse(tmp_path, melted, etth1_store):
    long = prepare(melted, tmp_path / "long", split="ett-hourly")
    assert long.layout == "panel" and long.n_series == 7 and long.series.ids == list(etth1_store.columns)
    np.testing.assert_allclose(long.mean, etth1_store.mean, rtol=1e-12)
    np.testing.assert_allclose(long.std, etth1_store.std, rtol=1e-12)
    for split in ("train", "val", "test"):
        a, b = _windows(etth1_store, split), _windows(long, split)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], atol=1e-6, err_msg=f"{split} {key}")
    wide_fit = fit_rlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT)
    long_fit = fit_rlinear(long, L, H, few_shot_percent=FEW_SHOT)
    assert long_fit.test["samples"] == wide_fit.test["samples"]
    assert long_fit.test["mse"] == pytest.approx(wide_fit.test["mse"], abs=1e-6)


def test_each_series_is_scaled_from_its_own_train_rows_only(tmp_path):
    frame = synthetic_panel(5, min_length=150, max_length=300, seed=3)
    base = prepare(_csv(frame, tmp_path / "a.csv"), tmp_path / "a")
    lengths = frame.groupby("id", sort=False).size().to_numpy()
    third = frame.index[frame["id"] == "s00002"]
    test_row, train_row = third[-1], third[0]  # the last row is in the series' test part, the first in its train part
    changed = frame.copy()
    changed.loc[test_row, "target"] += 1000.0
    after = prepare(_csv(changed, tmp_path / "b.csv"), tmp_path / "b")
    np.testing.assert_array_equal(after.mean, base.mean)
    np.testing.assert_array_equal(after.std, base.std)
    np.testing.assert_array_equal(after.series.mase_scale, base.series.mase_scale)
    changed.loc[train_row, "target"] += 1000.0
    moved = prepare(_csv(changed, tmp_path / "c.csv"), tmp_path / "c")
    assert moved.mean[2] != base.mean[2] and (np.delete(moved.mean, 2) == np.delete(base.mean, 2)).all()
    # each series keeps its own borders: 70/10/20 of its own length
    np.testing.assert_array_equal(base.series.borders[:, 2], lengths)
    np.testing.assert_array_equal(base.series.borders[:, 0], (lengths * 0.7).astype(int))


def test_short_series_are_skipped_and_counted_and_the_rest_stream(tmp_path, etth1_csv):
    frame = demo_panel(pd.read_csv(etth1_csv).iloc[:3000], "ETTh1", seed=1)
    tiny = pd.DataFrame({"id": "tiny", "timestamp": pd.date_range("2016-07-01", periods=50, freq="h"),
                         "target": np.arange(50.0)})
    store = prepare(_csv(pd.concat([frame, tiny]), tmp_path / "demo.csv"), tmp_path / "store")
    report = store.series_report(L, H)
    assert report["series"] == 8 and report["skipped_too_short"] == 1 and report["with_windows"]["train"] == 7
    windows = _windows(store, "test")
    assert set(windows["channel"].tolist()) == set(range(7))  # the short series (index 7) gives no window
    expected = store.series_windows("test", L, H).sum()
    assert len(windows["x"]) == expected == store.num_samples("test", L, H)


def _csv(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def _bad(frame: pd.DataFrame, tmp_path, *flags):
    path = _csv(frame, tmp_path / "bad.csv")
    proc = cli(["prepare", str(path), "--out", str(tmp_path / "store"), *flags])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "store").exists()
    return lines[0]


def test_bad_panels_are_refused_in_one_line(tmp_path):
    good = synthetic_panel(3, min_length=40, max_length=60, seed=0)
    duplicated = pd.concat([good, good.iloc[[5]]]).sort_index(kind="stable")
    assert "duplicate (id, timestamp) ('s00000'" in _bad(duplicated, tmp_path)
    swapped = good.copy()
    swapped.iloc[[3, 4]] = swapped.iloc[[4, 3]].to_numpy()
    assert "series 's00000' has unsorted timestamps" in _bad(swapped, tmp_path)
    assert "no column 'driver'" in _bad(good, tmp_path, "--known", "driver")
    assert "no column 'value'" in _bad(good, tmp_path, "--target", "value")
    holes = good.copy()
    holes.loc[7, "target"] = np.nan
    assert "of series 's00000' has a missing value" in _bad(holes, tmp_path)
    store = prepare(_csv(good, tmp_path / "ok.csv"), tmp_path / "ok")
    with pytest.raises(UserError, match="no series of ok has a train window"):
        store.num_samples("train", 96, 24)


def test_prepare_cli_reports_a_panel(tmp_path, melted):
    proc = cli(["prepare", str(melted), "--out", str(tmp_path / "store"), "--split", "ett-hourly"])
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["layout"] == "panel" and printed["series"] == 7 and printed["series_rows"]["longest"] == 17420
    wide = Schema(format="wide")
    assert wide.resolve(["id", "timestamp"]) == "wide" and Schema().resolve(["id", "timestamp"]) == "long"
