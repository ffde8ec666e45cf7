"""Turn a CSV/Parquet file into an on-disk Arrow store (HF `datasets.save_to_disk` + `store.json`).

The store holds what every later step needs and must agree on: float32 values, timestamps,
integer calendar attributes, split borders, train-only scaler statistics and provenance.
Everything is validated before anything is written, and the store appears atomically
(temp dir next to the target, then one rename): a failed prepare leaves nothing behind.
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
from llm4ts_scale.data.calendar import calendar_attributes, calendar_marks, infer_freq, normalize_freq
from llm4ts_scale.data.frame import check_fill, load_frame
from llm4ts_scale.data.splits import resolve_split_rule, split_borders
from llm4ts_scale.data.store import META_FILE, STORE_FORMAT, STORE_VERSION, SeriesStore, store_fingerprint


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
):
    """Validate `source` and write a store at `out`; returns the opened SeriesStore.

    An `out` that already holds the same store (same source bytes and parameters) is reused;
    any other non-empty `out` is refused.
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

    timestamps, values, columns = load_frame(source, fill=fill)
    used_freq, inferred = resolve_freq(timestamps, freq)
    fingerprint = store_fingerprint(sha, rule, used_freq if freq is not None else None, fill)
    if out.exists() and not _is_empty_dir(out):
        if _existing_store_matches(out, fingerprint):
            return SeriesStore(out)
        raise UserError(f"output directory {out} exists and holds other content; choose a new --out or remove it")

    attrs = calendar_attributes(used_freq)
    borders = split_borders(rule, len(timestamps))
    train = values[borders["train"][0]:borders["train"][1]]
    mean = train.mean(axis=0)
    std = train.std(axis=0, ddof=0)
    std = np.where(std == 0, 1.0, std)  # scikit-learn's scale_: constant channels are left unscaled
    stored = values.astype(np.float32)
    if not np.isfinite(stored).all():
        row, j = (int(v[0]) for v in np.nonzero(~np.isfinite(stored)))
        raise UserError(f"column {columns[j]!r} row {row} holds {values[row, j]!r}, too large for float32; rescale it")
    marks = calendar_marks(timestamps, attrs)

    meta = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "name": name,
        "fingerprint": fingerprint,
        "source": {"file": source.name, "sha256": sha, "bytes": source.stat().st_size,
                   "rows": int(len(timestamps)), "columns": columns},
        "n_rows": int(len(timestamps)),
        "columns": columns,
        "n_channels": len(columns),
        "freq": used_freq,
        "freq_inferred": inferred,
        "freq_override": freq is not None,
        "calendar_attrs": attrs,
        "start": str(pd.Timestamp(timestamps[0])),
        "end": str(pd.Timestamp(timestamps[-1])),
        "split_rule": rule,
        "borders": borders,
        "scaler": {"mean": mean.tolist(), "std": std.tolist(), "ddof": 0, "fit_rows": borders["train"]},
        "fill": fill,
        "created_with": {"llm4ts_scale": __version__, **_library_versions()},
    }
    table = _build_table(timestamps, stored, marks, attrs)
    _write_atomically(out, table, meta, fingerprint)
    return SeriesStore(out)


def _library_versions() -> dict:
    import datasets
    import pyarrow

    return {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "pandas": pd.__version__}


def _write_atomically(out: Path, table, meta: dict, fingerprint: str) -> None:
    from datasets import Dataset, DatasetInfo, Features
    from datasets.table import InMemoryTable

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        dataset = Dataset(InMemoryTable(table), info=DatasetInfo(features=Features.from_arrow_schema(table.schema)))
        with _quiet_datasets(), _large_record_batches():
            dataset.save_to_disk(str(tmp))
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
