"""A prepared dataset on disk (`SeriesStore`) and its format (written by llm4ts_scale/data/prepare.py).

The store is memory-mapped Arrow: reading a block of rows touches only those rows, so the
training path never holds a whole dataset in memory.

Two layouts, one view. A *wide* store is one table whose target columns are channels of one series
on a shared time axis; a *panel* store holds many series one after another (rows grouped by series),
each with its own length, start, split borders and scaler. The window stream sees both as a list of
series (`SeriesIndex`): series i is a target column over the shared rows (wide) or a block of rows
(panel), with the train/val/test borders and the train-part statistics that belong to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.splits import num_windows, series_rows, series_windows, split_rows

STORE_FORMAT = "llm4ts-scale-store"
STORE_VERSION = 2  # 2: the series index carries mase_scale (stores of v1 lack it)
META_FILE = "store.json"
SERIES_FILE = "series.arrow"  # panel stores: one row per series (id, rows, borders, scaler)
# Pages of a memory map stay in the process's resident set once touched. After this many bytes
# read the map is dropped and reopened on the next read (pages stay in the OS page cache), so a
# full pass over a large store does not grow RSS with the store's size.
REMAP_AFTER_BYTES = 8 << 20
_FAULT_AROUND = 64 << 10  # the kernel maps up to 64 KiB around each page fault
_OPEN_LOCK = threading.Lock()  # one load_from_disk at a time in this process (see SeriesStore.table)


def store_fingerprint(source_sha256: str, split_rule: str, freq: str | None, fill: str, schema: dict | None = None) -> str:
    """Identity of a store: the source bytes plus the prepare parameters that change its content (`schema`:
    data/frame.py:Schema.identity(), empty for a plain wide table, so older stores keep their fingerprint)."""
    payload = {"source_sha256": source_sha256, "split_rule": split_rule, "freq": freq, "fill": fill,
               "version": STORE_VERSION, **({"schema": schema} if schema else {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class SeriesIndex:
    """Every series of a store, as numpy arrays (S series): where its rows are, where its splits end, and its
    train-part statistics. The one description windows, scaling and metrics read, whatever the layout."""

    ids: list[str]  # series names: the target columns (wide) or the id values (panel)
    offset: np.ndarray  # int64 [S]: the series' first row in the table
    borders: np.ndarray  # int64 [S, 3]: train end, val end, test end, relative to `offset`
    column: np.ndarray  # int64 [S]: the values column holding the target
    mean: np.ndarray  # float64 [S]: the target's train-part mean
    std: np.ndarray  # float64 [S]
    cov_mean: np.ndarray  # float64 [S, K]: the covariates' train-part statistics (K = known + past)
    cov_std: np.ndarray
    mase_scale: np.ndarray  # float64 [S]: mean |y_t - y_(t-m)| over the train part, standardized (m: seasonality)

    def __len__(self) -> int:
        return len(self.offset)


class SeriesStore:
    """Read access to one prepared store: metadata, split ranges, scaled blocks of rows."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_FILE
        try:
            self.meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} is not a prepared store (no {META_FILE}); run `llm4ts-scale prepare`") from None
        except ValueError:
            raise UserError(f"{meta_path} is corrupt; prepare the store again") from None
        if self.meta.get("format") != STORE_FORMAT or self.meta.get("version") != STORE_VERSION:
            raise UserError(
                f"{self.path} holds store format {self.meta.get('format')} v{self.meta.get('version')}, "
                f"this version reads {STORE_FORMAT} v{STORE_VERSION}; prepare it again"
            )
        m = self.meta
        self.name: str = m["name"]
        self.columns: list[str] = list(m["columns"])
        self.n_channels: int = int(m["n_channels"])
        self.n_rows: int = int(m["n_rows"])
        self.freq: str = m["freq"]
        self.calendar_attrs: list[str] = list(m["calendar_attrs"])
        self.split_rule: str = m["split_rule"]
        self.borders: dict[str, list[int]] = {k: list(v) for k, v in m["borders"].items()}
        # per values column (wide; a panel's scaler is per series, in its series table)
        self.column_mean = np.asarray(m["scaler"].get("mean", []), dtype=np.float64)
        self.column_std = np.asarray(m["scaler"].get("std", []), dtype=np.float64)
        self.fingerprint: str = m["fingerprint"]
        self.layout: str = m.get("layout", "wide")
        self.targets: list[str] = list(m.get("targets", self.columns))
        covariates = m.get("covariates", {})
        self.known: list[str] = list(covariates.get("known", []))
        self.past: list[str] = list(covariates.get("past", []))
        self.seasonality: int = int(m.get("seasonality", 1))
        self.series = self._series_index()
        self.n_series = len(self.series)
        # per series: what `inverse_transform` maps a window's `channel` (its series) back with
        self.mean, self.std = self.series.mean, self.series.std
        self._table = None
        self._bytes_read = 0

    def __repr__(self) -> str:
        return (f"SeriesStore({str(self.path)!r}, layout={self.layout}, rows={self.n_rows}, series={self.n_series}, "
                f"freq={self.freq!r})")

    def _series_index(self) -> SeriesIndex:
        if self.layout == "panel":
            return _read_series_file(self.path / SERIES_FILE, len(self.known) + len(self.past))
        m = self.meta
        cols = [self.columns.index(t) for t in self.targets]
        cov_cols = [self.columns.index(c) for c in (*self.known, *self.past)]
        b = self.borders
        borders = np.array([[b["train"][1], b["val"][1], b["test"][1]]] * len(cols), dtype=np.int64)
        mase = np.asarray(m["scaler"]["mase_scale"], dtype=np.float64)
        return SeriesIndex(ids=list(self.targets), offset=np.zeros(len(cols), dtype=np.int64), borders=borders,
                           column=np.asarray(cols, dtype=np.int64), mean=self.column_mean[cols],
                           std=self.column_std[cols], cov_mean=np.tile(self.column_mean[cov_cols], (len(cols), 1)),
                           cov_std=np.tile(self.column_std[cov_cols], (len(cols), 1)), mase_scale=mase[cols])

    @property
    def covariate_columns(self) -> list[int]:
        """Values columns of the covariates, known first (wide: the table's; panel: after the target)."""
        names = [*self.known, *self.past]
        return [self.columns.index(c) for c in names]

    # Pickled into DataLoader workers: drop the memory map, reopen lazily there.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_table"] = None
        state["_bytes_read"] = 0
        return state

    @property
    def table(self):
        """The memory-mapped pyarrow Table (opened on first use, per process). `datasets` reads shards
        from several threads, and concurrent `load_from_disk` calls race on tqdm's lock: open under one."""
        if self._table is None:
            with _OPEN_LOCK:
                if self._table is None:
                    import datasets

                    self._table = datasets.load_from_disk(str(self.path)).data.table
        return self._table

    def release(self) -> None:
        """Drop the memory map (the next read maps the file again). Reads return copies, so
        nothing handed out keeps the map alive."""
        self._table = None
        self._bytes_read = 0

    def _count_read(self, nbytes: int, columns: int = 1) -> None:
        # estimate of newly resident bytes: each column slice maps at least a fault-around window
        self._bytes_read += max(nbytes, _FAULT_AROUND * columns)
        if self._bytes_read > REMAP_AFTER_BYTES:
            self.release()

    # ------------------------------------------------------------------ splits
    def split_range(self, split: str, seq_len: int, few_shot_percent: int = 100) -> tuple[int, int]:
        """Rows [start, end) of a split's windows; val/test start `seq_len` rows before their border (a wide store:
        a panel's splits are per series, see series_starts)."""
        self._check_wide("split_range")
        return split_rows(self.borders, split, seq_len, few_shot_percent)

    def num_windows(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        """Windows per channel: rows - L - H + 1 (UserError naming the split when too short); a wide store."""
        self._check_wide("num_windows")
        return num_windows(self.borders, split, seq_len, pred_len, few_shot_percent)

    def _check_wide(self, what: str) -> None:
        if self.layout != "wide":
            raise ValueError(f"{what} is per channel of a wide store; a panel's series have their own windows "
                             "(series_windows, series_starts)")

    def num_samples(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        """(window, series) pairs in a split: S * (rows - L - H + 1) for a wide store, the sum over series for a
        panel (UserError when no series is long enough)."""
        return int(self.series_windows(split, seq_len, pred_len, few_shot_percent).sum())

    def series_windows(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> np.ndarray:
        """int64 [S]: windows of every series in `split`. A wide store refuses a split too short (one line, as
        ever); in a panel a short series contributes none, and only a split where no series has a window is
        refused."""
        if self.layout == "wide":
            return np.full(self.n_series, self.num_windows(split, seq_len, pred_len, few_shot_percent), dtype=np.int64)
        counts = series_windows(self.series.borders, split, seq_len, pred_len, few_shot_percent)
        if not counts.any():
            longest = int(self.series.borders[:, 2].max()) if self.n_series else 0
            shot = f" at {few_shot_percent}% few-shot" if split == "train" and few_shot_percent < 100 else ""
            raise UserError(f"no series of {self.name} has a {split} window of seq_len={seq_len} + pred_len={pred_len}"
                            f"{shot} ({self.n_series} series, the longest {longest} rows, split {self.split_rule} per "
                            "series); lower seq_len/pred_len or use longer series")
        return counts

    def series_starts(self, split: str, seq_len: int, few_shot_percent: int = 100) -> np.ndarray:
        """int64 [S]: the table row where each series' first `split` window starts."""
        if self.layout == "wide":
            return np.full(self.n_series, self.split_range(split, seq_len, few_shot_percent)[0], dtype=np.int64)
        start, _ = series_rows(self.series.borders, split, seq_len, few_shot_percent)
        return self.series.offset + start

    def series_report(self, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> dict:
        """How many series feed each split, and how many are too short for any (run.json records it)."""
        counts = {}
        for split in ("train", "val", "test"):
            shot = few_shot_percent if split == "train" else 100
            if self.layout == "wide":
                counts[split] = np.full(self.n_series, self.num_windows(split, seq_len, pred_len, shot))
            else:
                counts[split] = series_windows(self.series.borders, split, seq_len, pred_len, shot)
        used = {split: int((c > 0).sum()) for split, c in counts.items()}
        skipped = int(((counts["train"] == 0) & (counts["val"] == 0) & (counts["test"] == 0)).sum())
        return {"series": self.n_series, "layout": self.layout, "with_windows": used, "skipped_too_short": skipped,
                "without_train_windows": self.n_series - used["train"]}

    # ------------------------------------------------------------------ reading
    def _check_rows(self, start: int, end: int) -> None:
        if not 0 <= start <= end <= self.n_rows:
            raise IndexError(f"rows [{start}, {end}) outside the store's [0, {self.n_rows})")

    def read_values(self, start: int, end: int, scaled: bool = True) -> np.ndarray:
        """float32 [n, C]; standardized with the train statistics when `scaled`."""
        self._check_rows(start, end)
        self._check_column_scaling(scaled)
        column = self.table.column("values").slice(start, end - start).combine_chunks()
        raw = column.flatten().to_numpy(zero_copy_only=False).reshape(end - start, self.n_channels)
        out = np.array(raw, dtype=np.float32) if not scaled else ((raw - self.column_mean) / self.column_std).astype(np.float32)
        self._count_read(raw.nbytes)
        return out

    def read_channel(self, start: int, end: int, channel: int, scaled: bool = True) -> np.ndarray:
        """float32 [n] of one channel; the windows' hot path."""
        self._check_rows(start, end)
        self._check_column_scaling(scaled)
        column = self.table.column("values").slice(start, end - start).combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        raw = flat[channel::self.n_channels]
        if scaled:
            out = ((raw - self.column_mean[channel]) / self.column_std[channel]).astype(np.float32)
        else:
            out = raw.astype(np.float32)  # a copy: nothing returned points into the memory map
        self._count_read(flat.nbytes)
        return out

    def read_target(self, series: int, start: int, end: int, scaled: bool = True) -> np.ndarray:
        """float32 [n]: rows [start, end) (table rows) of one series' target, standardized with its train part."""
        column = int(self.series.column[series])
        if self.layout == "wide" and self.targets == self.columns:
            return self.read_channel(start, end, column, scaled)
        raw = self.read_channel(start, end, column, scaled=False)
        if not scaled:
            return raw
        return ((raw - self.series.mean[series]) / self.series.std[series]).astype(np.float32)

    def read_covariates(self, series: int, start: int, end: int) -> np.ndarray:
        """float32 [n, K]: the covariates (known first) of one series over table rows [start, end), standardized
        with that series' train-part statistics."""
        columns = self.covariate_columns
        raw = self.read_values(start, end, scaled=False)[:, columns]
        return ((raw - self.series.cov_mean[series]) / self.series.cov_std[series]).astype(np.float32)

    def _check_column_scaling(self, scaled: bool) -> None:
        if scaled and self.layout == "panel":
            raise ValueError("a panel is standardized per series: read it with read_target / read_covariates")

    def read_marks(self, start: int, end: int) -> np.ndarray:
        """int64 [n, A] calendar attributes (A may be 0 for yearly data)."""
        self._check_rows(start, end)
        out = np.empty((end - start, len(self.calendar_attrs)), dtype=np.int64)
        for j, name in enumerate(self.calendar_attrs):
            out[:, j] = self.table.column(name).slice(start, end - start).to_numpy()
        self._count_read(out.shape[0] * len(self.calendar_attrs), columns=len(self.calendar_attrs))
        return out

    def read_timestamps(self, start: int, end: int) -> np.ndarray:
        """datetime64[ns] [n]."""
        self._check_rows(start, end)
        column = self.table.column("timestamp").slice(start, end - start)
        out = np.array(column.to_numpy(), dtype="datetime64[ns]")  # copy, see read_channel
        self._count_read(out.nbytes)
        return out

    def read_rows(self, start: int, end: int, scaled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values float32 [n, C], marks int64 [n, A], timestamps datetime64[ns] [n]) of rows [start, end)."""
        return self.read_values(start, end, scaled), self.read_marks(start, end), self.read_timestamps(start, end)

    def tail(self, n: int, scaled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last `n` rows (what predict feeds the model), as read_rows returns them."""
        if not 0 < n <= self.n_rows:
            raise UserError(f"the store has {self.n_rows} rows, cannot take the last {n}")
        return self.read_rows(self.n_rows - n, self.n_rows, scaled)

    # ------------------------------------------------------------------ scaling
    def _stats(self, like, channels):
        mean, std = self.mean, self.std
        if channels is not None:
            idx = np.asarray(channels.cpu() if hasattr(channels, "cpu") else channels, dtype=np.int64)
            if like.ndim == 0 or (idx.ndim == 1 and len(idx) != like.shape[0]):
                raise ValueError(f"{len(idx)} channel ids for values of shape {tuple(like.shape)}")
            mean, std = mean[idx], std[idx]
            if idx.ndim == 1:  # one channel per sample: broadcast over the sample's trailing dims
                shape = (-1,) + (1,) * (like.ndim - 1)
                mean, std = mean.reshape(shape), std.reshape(shape)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(like, torch.Tensor):
            return (torch.as_tensor(mean, dtype=like.dtype, device=like.device),
                    torch.as_tensor(std, dtype=like.dtype, device=like.device))
        return mean, std

    def transform(self, values, channels=None):
        """Standardize with the train statistics; see inverse_transform for `channels`."""
        mean, std = self._stats(values, channels)
        return (values - mean) / std

    def inverse_transform(self, values, channels=None):
        """Back to the original scale. values: [..., C] when `channels` is None; otherwise `channels`
        is one channel id (int) or one per sample ([B], as windows' `channel`) for values [B, ...].
        Works on numpy arrays and torch tensors."""
        mean, std = self._stats(values, channels)
        return values * std + mean


def _read_series_file(path: Path, n_covariates: int) -> SeriesIndex:
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid):
        raise UserError(f"{path} is missing or corrupt; prepare the store again") from None

    def col(name, dtype=np.int64):
        return np.asarray(table.column(name).to_numpy(), dtype=dtype)

    def matrix(name):
        return np.asarray(table.column(name).combine_chunks().flatten().to_numpy(), dtype=np.float64).reshape(
            table.num_rows, -1)

    mean, std = matrix("mean"), matrix("std")  # [S, 1 + K]: the target, then the covariates
    return SeriesIndex(ids=table.column("id").to_pylist(), offset=col("offset"),
                       borders=np.stack([col("train_end"), col("val_end"), col("test_end")], axis=1),
                       column=np.zeros(table.num_rows, dtype=np.int64), mean=mean[:, 0], std=std[:, 0],
                       cov_mean=mean[:, 1:1 + n_covariates], cov_std=std[:, 1:1 + n_covariates],
                       mase_scale=col("mase_scale", np.float64))


def write_series_file(path: Path, index: SeriesIndex, lengths: np.ndarray) -> None:
    """The panel's series table (ids, rows, borders, scaler), as an Arrow IPC file read by memory map."""
    import pyarrow as pa

    def fixed(values: np.ndarray):
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float64()), values.shape[1])

    table = pa.table({
        "id": pa.array(index.ids, type=pa.string()), "offset": pa.array(index.offset, type=pa.int64()),
        "length": pa.array(lengths, type=pa.int64()), "train_end": pa.array(index.borders[:, 0], type=pa.int64()),
        "val_end": pa.array(index.borders[:, 1], type=pa.int64()), "test_end": pa.array(index.borders[:, 2], type=pa.int64()),
        "mean": fixed(np.column_stack([index.mean, index.cov_mean])), "std": fixed(np.column_stack([index.std, index.cov_std])),
        "mase_scale": pa.array(index.mase_scale, type=pa.float64()),
    })
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
