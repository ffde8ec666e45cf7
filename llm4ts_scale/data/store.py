"""A prepared series on disk (`SeriesStore`) and its format (written by llm4ts_scale/data/prepare.py).

The store is memory-mapped Arrow: reading a block of rows touches only those rows, so the
training path never holds a whole dataset in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.splits import num_windows, split_rows

STORE_FORMAT = "llm4ts-scale-store"
STORE_VERSION = 1
META_FILE = "store.json"
# Pages of a memory map stay in the process's resident set once touched. After this many bytes
# read the map is dropped and reopened on the next read (pages stay in the OS page cache), so a
# full pass over a large store does not grow RSS with the store's size.
REMAP_AFTER_BYTES = 8 << 20
_FAULT_AROUND = 64 << 10  # the kernel maps up to 64 KiB around each page fault
_OPEN_LOCK = threading.Lock()  # one load_from_disk at a time in this process (see SeriesStore.table)


def store_fingerprint(source_sha256: str, split_rule: str, freq: str | None, fill: str) -> str:
    """Identity of a store: the source bytes plus the prepare parameters that change its content."""
    payload = {"source_sha256": source_sha256, "split_rule": split_rule, "freq": freq, "fill": fill,
               "version": STORE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
        self.mean = np.asarray(m["scaler"]["mean"], dtype=np.float64)
        self.std = np.asarray(m["scaler"]["std"], dtype=np.float64)
        self.fingerprint: str = m["fingerprint"]
        self._table = None
        self._bytes_read = 0

    def __repr__(self) -> str:
        return f"SeriesStore({str(self.path)!r}, rows={self.n_rows}, channels={self.n_channels}, freq={self.freq!r})"

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
        """Rows [start, end) of a split's windows; val/test start `seq_len` rows before their border."""
        return split_rows(self.borders, split, seq_len, few_shot_percent)

    def num_windows(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        """Windows per channel: rows - L - H + 1 (UserError naming the split when too short)."""
        return num_windows(self.borders, split, seq_len, pred_len, few_shot_percent)

    def num_samples(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        """(window, channel) pairs in a split: C * (rows - L - H + 1)."""
        return self.n_channels * self.num_windows(split, seq_len, pred_len, few_shot_percent)

    # ------------------------------------------------------------------ reading
    def _check_rows(self, start: int, end: int) -> None:
        if not 0 <= start <= end <= self.n_rows:
            raise IndexError(f"rows [{start}, {end}) outside the store's [0, {self.n_rows})")

    def read_values(self, start: int, end: int, scaled: bool = True) -> np.ndarray:
        """float32 [n, C]; standardized with the train statistics when `scaled`."""
        self._check_rows(start, end)
        column = self.table.column("values").slice(start, end - start).combine_chunks()
        raw = column.flatten().to_numpy(zero_copy_only=False).reshape(end - start, self.n_channels)
        out = np.array(raw, dtype=np.float32) if not scaled else ((raw - self.mean) / self.std).astype(np.float32)
        self._count_read(raw.nbytes)
        return out

    def read_channel(self, start: int, end: int, channel: int, scaled: bool = True) -> np.ndarray:
        """float32 [n] of one channel; the windows' hot path."""
        self._check_rows(start, end)
        column = self.table.column("values").slice(start, end - start).combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        raw = flat[channel::self.n_channels]
        if scaled:
            out = ((raw - self.mean[channel]) / self.std[channel]).astype(np.float32)
        else:
            out = raw.astype(np.float32)  # a copy: nothing returned points into the memory map
        self._count_read(flat.nbytes)
        return out

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

    @property
    def last_timestamp(self) -> np.datetime64:
        return self.read_timestamps(self.n_rows - 1, self.n_rows)[0]

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
