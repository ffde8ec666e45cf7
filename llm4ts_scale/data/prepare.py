"""Turn a CSV/Parquet file into an on-disk Arrow store (HF `datasets.save_to_disk` + `store.json`).

The store holds what every later step needs and must agree on: float32 values, timestamps,
integer calendar attributes, split borders, train-only scaler statistics and provenance.
Everything is validated before anything is written, and the store appears atomically
(temp dir next to the target, then one rename): a failed prepare leaves nothing behind.

A long table (many series: id, timestamp, target, covariates) becomes a panel store: the rows grouped by
series, and `series.arrow` with each series' rows, its own split borders (the same rule, applied to each
series) and its own scaler from its train part only (llm4ts_scale/data/store.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from llm4ts_scale import __version__
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json, file_sha256
from llm4ts_scale.data.calendar import calendar_attributes, calendar_marks, infer_freq, normalize_freq, seasonality
from llm4ts_scale.data.frame import Panel, Schema, check_fill, frame_arrays, panel_arrays, read_table
from llm4ts_scale.data.splits import resolve_split_rule, series_borders, split_borders
from llm4ts_scale.data.store import (
    META_FILE,
    SERIES_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    SeriesIndex,
    SeriesStore,
    store_fingerprint,
    write_series_file,
)


def resolve_freq(timestamps: np.ndarray, freq: str | None) -> tuple[str, str | None]:
    """(frequency used, frequency inferred or None). An explicit `freq` overrides the inferred one,
    but the timestamps must still lie on a regular grid."""
    if freq is None:
        inferred = infer_freq(timestamps)
        return normalize_freq(inferred), inferred
    wanted = normalize_freq(freq)
    try:
        return wanted, infer_freq(timestamps)
    except UserError:
        grid = pd.date_range(pd.Timestamp(timestamps[0]), periods=len(timestamps), freq=wanted).as_unit("ns")
        off = np.flatnonzero(grid.to_numpy() != timestamps)
        if not len(off):
            return wanted, None
        row = int(off[0])
        raise UserError(
            f"timestamps do not follow --freq {wanted}: row {row} is {pd.Timestamp(timestamps[row])}, "
            f"expected {grid[row]}; resample the data to a regular grid"
        ) from None


def _build_table(timestamps: np.ndarray, values: np.ndarray, marks: np.ndarray, attrs: list[str]):
    import pyarrow as pa

    columns = {
        "timestamp": pa.array(timestamps, type=pa.timestamp("ns")),
        "values": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), values.shape[1]),
    }
    for j, name in enumerate(attrs):  # all calendar values fit in int8 (max 59)
        columns[name] = pa.array(marks[:, j].astype(np.int8), type=pa.int8())
    return pa.table(columns)


@contextlib.contextmanager
def _quiet_datasets():
    """`save_to_disk` draws a progress bar on stderr; the CLI promises one-line output."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _large_record_batches(rows: int = 1 << 16):
    """Write the Arrow file in record batches of `rows` rows instead of datasets' 1000.

    Opening a memory-mapped Arrow stream reads every batch header; with 1000-row batches the
    headers are ~40 KB apart and the kernel's fault-around maps the pages between them, so
    merely opening a store made the whole file resident. With large batches opening touches a
    few pages and reads map only the rows they need. datasets has no argument for this, so its
    default is swapped for the duration of the save.
    """
    from datasets import config

    previous = getattr(config, "DEFAULT_MAX_BATCH_SIZE", None)
    if previous is None:  # a datasets version without the knob: keep its default
        yield
        return
    config.DEFAULT_MAX_BATCH_SIZE = max(previous, rows)
    try:
        yield
    finally:
        config.DEFAULT_MAX_BATCH_SIZE = previous


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _existing_store_matches(out: Path, fingerprint: str) -> bool:
    try:
        meta = json.loads((out / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("fingerprint") == fingerprint


def prepare(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "auto",
    freq: str | None = None,
    fill: str = "none",
    name: str | None = None,
    source_sha256: str | None = None,
    schema: Schema = Schema(),
):
    """Validate `source` and write a store at `out`; returns the opened SeriesStore.

    `schema` says which columns are what (data/frame.py:Schema): a wide table by default, a long one (many
    series) when it has the id column or `schema.format` says so. An `out` that already holds the same store
    (same source bytes and parameters) is reused; any other non-empty `out` is refused.
    """
    source, out = Path(source), Path(out)
    check_fill(fill)
    name = name or source.stem
    rule = resolve_split_rule(split, name)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory; choose another --out")
    if not source.is_file():
        raise UserError(f"data file {source} does not exist")
    sha = source_sha256 or file_sha256(source)
    table = read_table(source)
    is_csv = source.suffix.lower() == ".csv"
    layout = schema.resolve(table.columns)
    fingerprint = store_fingerprint(sha, rule, normalize_freq(freq) if freq is not None else None, fill,
                                    schema.identity())
    if out.exists() and not _is_empty_dir(out):
        if _existing_store_matches(out, fingerprint):
            return SeriesStore(out)
        raise UserError(f"output directory {out} exists and holds other content; choose a new --out or remove it")
    if layout == "long":
        panel = panel_arrays(table, schema, source.name, fill, is_csv)
        meta, arrow_table, index = _panel_store(panel, schema, rule, freq)
    else:
        timestamps, values, columns = frame_arrays(table, source.name, fill, is_csv, time_column=schema.time("wide"))
        meta, arrow_table = _wide_store(timestamps, values, columns, schema, rule, freq)
        index = None
    del table
    meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "name": name, "fingerprint": fingerprint,
            "source": {"file": source.name, "sha256": sha, "bytes": source.stat().st_size, "rows": meta["n_rows"],
                       "columns": meta["columns"]},
            **meta, "split_rule": rule, "fill": fill, "created_with": {"llm4ts_scale": __version__, **_library_versions()}}
    _write_atomically(out, arrow_table, meta, fingerprint, index)
    return SeriesStore(out)


def _roles(columns: list[str], schema: Schema) -> tuple[list[str], dict]:
    """(target columns, {"known": [...], "past": [...]}) of a wide table; UserError naming a column it lacks."""
    for column in (*schema.covariates, *(schema.target or ())):
        if column not in columns:
            setting = "data.target" if column in (schema.target or ()) else "data.covariates"
            raise UserError(f"{setting} names column {column!r}, which the data does not have (columns: "
                            f"{', '.join(columns[:8])}{', ...' if len(columns) > 8 else ''}); fix the name")
    targets = list(schema.target) if schema.target else [c for c in columns if c not in schema.covariates]
    if not targets:
        raise UserError("every column is a covariate, none is left to forecast; set data.target")
    return targets, {"known": list(schema.known), "past": list(schema.past)}


def _calendar(timestamps: np.ndarray, freq: str | None) -> tuple[str, str | None, list[str], np.ndarray]:
    used_freq, inferred = resolve_freq(timestamps, freq)
    attrs = calendar_attributes(used_freq)
    return used_freq, inferred, attrs, calendar_marks(timestamps, attrs)


def _float32(values: np.ndarray, columns: list[str]) -> np.ndarray:
    stored = values.astype(np.float32)
    if not np.isfinite(stored).all():
        row, j = (int(v[0]) for v in np.nonzero(~np.isfinite(stored)))
        raise UserError(f"column {columns[j]!r} row {row} holds {values[row, j]!r}, too large for float32; rescale it")
    return stored


def _mase_scale(z: np.ndarray, lag: int) -> np.ndarray:
    """Mean |z_t - z_(t-lag)| per column over rows z [n, C] (NaN where the part is not longer than the lag)."""
    if len(z) <= lag:
        return np.full(z.shape[1], np.nan)
    return np.abs(z[lag:] - z[:-lag]).mean(axis=0)


def _wide_store(timestamps, values, columns, schema: Schema, rule: str, freq: str | None):
    targets, covariates = _roles(columns, schema)
    used_freq, inferred, attrs, marks = _calendar(timestamps, freq)
    borders = split_borders(rule, len(timestamps))
    train = values[borders["train"][0]:borders["train"][1]]
    mean = train.mean(axis=0)
    std = train.std(axis=0, ddof=0)
    std = np.where(std == 0, 1.0, std)  # scikit-learn's scale_: constant channels are left unscaled
    lag = seasonality(used_freq)
    meta = {
        "layout": "wide", "n_rows": int(len(timestamps)), "columns": columns, "n_channels": len(columns),
        "targets": targets, "covariates": covariates, "freq": used_freq, "freq_inferred": inferred,
        "freq_override": freq is not None, "calendar_attrs": attrs, "seasonality": lag,
        "start": str(pd.Timestamp(timestamps[0])), "end": str(pd.Timestamp(timestamps[-1])), "borders": borders,
        "scaler": {"mean": mean.tolist(), "std": std.tolist(), "ddof": 0, "fit_rows": borders["train"],
                   "mase_scale": _mase_scale((train - mean) / std, lag).tolist()},
    }
    return meta, _build_table(timestamps, _float32(values, columns), marks, attrs)


def _panel_freq(panel: Panel, freq: str | None) -> tuple[str, str | None]:
    """The one frequency every series follows: given, or inferred from the longest series; UserError naming a
    series whose timestamps are off that grid."""
    lengths = panel.lengths
    longest = int(np.argmax(lengths))
    a, b = panel.offsets[longest], panel.offsets[longest + 1]
    used, inferred = resolve_freq(panel.timestamps[a:b], freq)
    for i in np.flatnonzero(lengths > 1):
        a, b = panel.offsets[i], panel.offsets[i + 1]
        stamps = panel.timestamps[a:b]
        grid = pd.date_range(pd.Timestamp(stamps[0]), periods=len(stamps), freq=used).as_unit("ns").to_numpy()
        off = np.flatnonzero(grid != stamps)
        if len(off):
            row = int(off[0])
            raise UserError(f"series {panel.ids[i]!r} is not on the data's {used} grid: its row {row} is "
                            f"{pd.Timestamp(stamps[row])}, expected {pd.Timestamp(grid[row])}; resample it (every "
                            "series of a panel shares one frequency)")
    return used, inferred


def _group_stats(values: np.ndarray, group: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean and population std [n, V] of values [N, V] over the rows where `rows` is True."""
    count = np.bincount(group[rows], minlength=n).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean = np.stack([np.bincount(group[rows], weights=values[rows, j], minlength=n) for j in range(values.shape[1])], 1)
    mean /= safe[:, None]
    centred = values[rows] - mean[group[rows]]
    var = np.stack([np.bincount(group[rows], weights=centred[:, j] ** 2, minlength=n)
                    for j in range(values.shape[1])], 1) / safe[:, None]
    std = np.sqrt(var)
    std = np.where((std == 0) | (count[:, None] == 0), 1.0, std)
    return np.where(count[:, None] == 0, 0.0, mean), std


def _panel_store(panel: Panel, schema: Schema, rule: str, freq: str | None):
    used_freq, inferred = _panel_freq(panel, freq)
    attrs = calendar_attributes(used_freq)
    lengths = panel.lengths
    n = len(panel.ids)
    borders = series_borders(rule, lengths)
    group = np.repeat(np.arange(n), lengths)
    position = np.arange(len(group)) - panel.offsets[:-1][group]
    train = position < borders[group, 0]
    mean, std = _group_stats(panel.values, group, train, n)  # [S, V]: each series' own train part
    lag = seasonality(used_freq)
    z = (panel.values[:, 0] - mean[group, 0]) / std[group, 0]
    lagged = train & (position >= lag)
    diffs = np.abs(z[lagged] - z[np.flatnonzero(lagged) - lag])
    counts = np.bincount(group[lagged], minlength=n)
    mase = np.where(counts > 0, np.bincount(group[lagged], weights=diffs, minlength=n) / np.maximum(counts, 1), np.nan)
    index = SeriesIndex(ids=panel.ids, offset=panel.offsets[:-1].copy(), borders=borders,
                        column=np.zeros(n, dtype=np.int64), mean=mean[:, 0], std=std[:, 0], cov_mean=mean[:, 1:],
                        cov_std=std[:, 1:], mase_scale=mase)
    meta = {
        "layout": "panel", "n_rows": int(len(group)), "columns": panel.columns, "n_channels": len(panel.columns),
        "targets": panel.columns[:1], "covariates": {"known": list(schema.known), "past": list(schema.past)},
        "freq": used_freq, "freq_inferred": inferred, "freq_override": freq is not None, "calendar_attrs": attrs,
        "seasonality": lag, "start": str(pd.Timestamp(panel.timestamps.min())),
        "end": str(pd.Timestamp(panel.timestamps.max())), "borders": {},
        "scaler": {"per_series": True, "ddof": 0, "file": SERIES_FILE},
        "series": {"count": n, "shortest": int(lengths.min()), "longest": int(lengths.max()),
                   "id_column": schema.id_column, "first_ids": panel.ids[:5]},
    }
    marks = calendar_marks(panel.timestamps, attrs)
    return meta, _build_table(panel.timestamps, _float32(panel.values, panel.columns), marks, attrs), index


def _library_versions() -> dict:
    import datasets
    import pyarrow

    return {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "pandas": pd.__version__}


def _write_atomically(out: Path, table, meta: dict, fingerprint: str, index: SeriesIndex | None = None) -> None:
    from datasets import Dataset, DatasetInfo, Features
    from datasets.table import InMemoryTable

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        dataset = Dataset(InMemoryTable(table), info=DatasetInfo(features=Features.from_arrow_schema(table.schema)))
        with _quiet_datasets(), _large_record_batches():
            dataset.save_to_disk(str(tmp))
        if index is not None:
            write_series_file(tmp / SERIES_FILE, index, np.diff(np.append(index.offset, meta["n_rows"])))
        atomic_write_json(tmp / META_FILE, meta)
        try:
            os.replace(tmp, out)  # replaces a missing or empty `out` in one step
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not _existing_store_matches(out, fingerprint):  # someone else wrote there meanwhile
                raise UserError(f"output directory {out} exists and holds other content; choose a new --out") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
