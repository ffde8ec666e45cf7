"""Prepared stores on the real ETTh1 (hourly, ETT split) and national_illness (weekly, 70/10/20)
files, checked against independent pandas computations of the Time-Series-Library protocol."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.sources import open_store
from llm4ts_scale.data.store import SeriesStore
from llm4ts_scale.data.windows import WindowSpec, make_loader

# (fixture, L, H, TSLib borders computed by hand from docs/ARCHITECTURE.md section 4)
ETT = ("etth1", 336, 96, {"train": (0, 8640), "val": (8640 - 336, 11520), "test": (11520 - 336, 14400)})
ILI_N = 966
ILI_TRAIN, ILI_TEST = int(ILI_N * 0.7), int(ILI_N * 0.2)
ILI = ("ili", 36, 24, {"train": (0, ILI_TRAIN), "val": (ILI_TRAIN - 36, ILI_N - ILI_TEST),
                       "test": (ILI_N - ILI_TEST - 36, ILI_N)})


@pytest.fixture(params=[ETT, ILI], ids=["ETTh1", "ILI"])
def case(request, etth1_store, ili_store, etth1_csv, ili_csv):
    name, L, H, borders = request.param
    store, csv = (etth1_store, etth1_csv) if name == "etth1" else (ili_store, ili_csv)
    df = pd.read_csv(csv)
    return store, df, L, H, borders


def _scaled(df: pd.DataFrame, train_end: int) -> np.ndarray:
    values = df.drop(columns=["date"]).to_numpy(dtype=np.float64)
    train = pd.DataFrame(values[:train_end])
    return (values - train.mean().to_numpy()) / train.std(ddof=0).to_numpy()


def test_split_ranges_match_tslib_borders(case):
    store, df, L, H, borders = case
    for split, expected in borders.items():
        assert store.split_range(split, L) == expected
    assert store.n_rows == len(df)


def test_split_rule_and_frequency(etth1_store, ili_store):
    assert (etth1_store.split_rule, etth1_store.freq) == ("ett-hourly", "h")
    assert etth1_store.calendar_attrs == ["month", "day", "weekday", "hour"]
    assert ili_store.split_rule == "ratio"
    assert ili_store.freq.startswith("W-")
    assert ili_store.calendar_attrs == ["month", "day"]


def test_scaler_statistics_come_from_train_split_only(case):
    store, df, L, H, borders = case
    train = df.drop(columns=["date"]).iloc[: borders["train"][1]]
    np.testing.assert_allclose(store.mean, train.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(store.std, train.std(ddof=0).to_numpy(), rtol=1e-12)
    assert store.columns == list(df.columns[1:])


def test_window_counts_per_split(case):
    store, df, L, H, borders = case
    C = df.shape[1] - 1
    for split, (start, end) in borders.items():
        assert store.num_samples(split, L, H) == C * (end - start - L - H + 1)


def test_first_and_last_test_windows_equal_scaled_csv(case):
    store, df, L, H, borders = case
    scaled = _scaled(df, borders["train"][1])
    start, end = borders["test"]
    batches = list(make_loader(store, WindowSpec("test", L, H), 1000))
    got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    assert len(got["x"]) == store.num_samples("test", L, H)
    C = scaled.shape[1]
    # evaluation order: channel by channel, windows in time order
    for i, (channel, s) in ((0, (0, start)), (-1, (C - 1, end - L - H))):
        assert (got["channel"][i], got["start"][i]) == (channel, s)
        np.testing.assert_allclose(got["x"][i], scaled[s:s + L, channel], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["y"][i], scaled[s + L:s + L + H, channel], rtol=1e-5, atol=1e-5)
        stamps = pd.to_datetime(df["date"].iloc[s:s + L + H])
        marks = np.concatenate([got["x_mark"][i], got["y_mark"][i]])
        assert marks[:, 0].tolist() == stamps.dt.month.tolist()
        assert marks[:, 1].tolist() == stamps.dt.day.tolist()
    assert got["x"].dtype == np.float32 and got["x_mark"].dtype == np.int64


def test_few_shot_ten_percent_count(case):
    store, df, L, H, borders = case
    C = df.shape[1] - 1
    train_end = (borders["train"][1] - L) * 10 // 100 + L
    expected = C * (train_end - L - H + 1)
    assert store.split_range("train", L, 10) == (0, train_end)
    streamed = sum(len(b["x"]) for b in make_loader(store, WindowSpec("train", L, H, 10), 256))
    assert store.num_samples("train", L, H, 10) == expected == streamed
    assert store.num_samples("val", L, H, 10) == store.num_samples("val", L, H)  # val/test unchanged


@pytest.mark.parametrize("row", [0, 1, 23, 24, 11520, 17419])
def test_calendar_attributes_of_etth1_rows(etth1_store, etth1_csv, row):
    text = pd.read_csv(etth1_csv, usecols=["date"])["date"].iloc[row]
    stamp = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    _, marks, timestamps = etth1_store.read_rows(row, row + 1)
    assert marks[0].tolist() == [stamp.month, stamp.day, stamp.weekday(), stamp.hour]
    assert pd.Timestamp(timestamps[0]) == pd.Timestamp(stamp)


def test_ili_calendar_is_month_and_day(ili_store, ili_csv):
    text = pd.read_csv(ili_csv, usecols=["date"])["date"].iloc[500]
    stamp = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    assert ili_store.read_marks(500, 501)[0].tolist() == [stamp.month, stamp.day]


def test_unscaled_rows_and_inverse_transform(etth1_store, etth1_csv):
    raw = pd.read_csv(etth1_csv).drop(columns=["date"]).to_numpy()
    values = etth1_store.read_values(100, 110, scaled=False)
    np.testing.assert_allclose(values, raw[100:110], rtol=1e-6)
    scaled = etth1_store.read_values(100, 110)
    np.testing.assert_allclose(etth1_store.inverse_transform(scaled.astype(np.float64)), raw[100:110], rtol=1e-5)
    # per-sample channel ids, as windows carry them
    back = etth1_store.inverse_transform(scaled[:, [2]].T.astype(np.float64), channels=np.array([2]))
    np.testing.assert_allclose(back[0], raw[100:110, 2], rtol=1e-5)


def test_mase_scale_is_the_seasonal_naive_error_of_the_train_part(case):
    """MASE divides by the in-sample seasonal-naive MAE (hourly m=24, weekly m=1) of the standardized train rows."""
    store, df, L, H, borders = case
    m = 24 if store.freq.lower().startswith("h") else 1
    train = df.drop(columns=["date"]).iloc[: borders["train"][1]]
    z = (train - train.mean()) / train.std(ddof=0)
    expected = (z - z.shift(m)).abs().iloc[m:].mean().to_numpy()
    np.testing.assert_allclose(store.series.mase_scale, expected[[store.columns.index(t) for t in store.targets]],
                               rtol=1e-9)


def test_store_of_an_older_version_is_refused(tmp_path, etth1_store):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(etth1_store.path, old)
    meta = json.loads((old / "store.json").read_text())
    meta["version"] = 1
    (old / "store.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="v1, this version reads .* v2; prepare it again"):
        SeriesStore(old)


def test_store_json_provenance(etth1_store, etth1_csv):
    from llm4ts_scale.core.io import file_sha256

    meta = json.loads((etth1_store.path / "store.json").read_text())
    assert meta["source"]["sha256"] == file_sha256(etth1_csv)
    assert meta["source"]["rows"] == 17420
    assert meta["source"]["columns"] == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert meta["scaler"]["ddof"] == 0
    assert etth1_store.fingerprint == meta["fingerprint"]


def test_open_store_resolves_file_dir_and_name(tmp_path, monkeypatch, etth1_csv, etth1_store):
    monkeypatch.setenv("LLM4TS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLM4TS_DATA_PATH", str(etth1_csv.parent))
    by_file = open_store(etth1_csv)
    by_name = open_store("ETTh1")
    by_dir = open_store(etth1_store.path)
    assert by_file.path == by_name.path  # one cache entry, keyed by the file's hash
    assert by_file.path.parent == tmp_path / "cache" / "stores"
    assert by_file.fingerprint == by_name.fingerprint == by_dir.fingerprint
    assert isinstance(by_dir, SeriesStore)
    ratio = open_store(etth1_csv, split="ratio")
    assert ratio.fingerprint != by_file.fingerprint and ratio.split_rule == "ratio"
    with pytest.raises(UserError, match="prepared with split rule ett-hourly"):
        open_store(etth1_store.path, split="ratio")


def test_unknown_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM4TS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLM4TS_DATA_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as err:
        open_store("NoSuchSet")
    message = str(err.value)
    assert "tools/fetch_data.py NoSuchSet" in message and "LLM4TS_DATA_PATH" in message
    assert str(tmp_path / "nowhere") in message and str(tmp_path / "cache" / "data") in message


def test_parquet_source_gives_the_same_store(tmp_path, ili_csv, ili_store):
    from llm4ts_scale.data.prepare import prepare

    parquet = tmp_path / "national_illness.parquet"
    df = pd.read_csv(ili_csv)
    df["date"] = pd.to_datetime(df["date"])
    df.to_parquet(parquet)
    store = prepare(parquet, tmp_path / "store")
    np.testing.assert_array_equal(store.read_values(0, store.n_rows), ili_store.read_values(0, ili_store.n_rows))
    np.testing.assert_array_equal(store.mean, ili_store.mean)
    assert store.borders == ili_store.borders and store.calendar_attrs == ili_store.calendar_attrs


def test_too_short_split_names_the_split(ili_store):
    with pytest.raises(UserError, match=r"the test split is too short for seq_len=36 \+ pred_len=200: it spans 229 rows"):
        ili_store.num_samples("test", 36, 200)
    with pytest.raises(UserError, match=r"the train split is too short .* at 1% few-shot"):
        ili_store.num_samples("train", 36, 24, few_shot_percent=1)
    with pytest.raises(UserError, match="the val split starts at row 676, fewer than seq_len=700"):
        ili_store.num_samples("val", 700, 24)
