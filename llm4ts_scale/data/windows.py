"""Channel-independent windows streamed from a store through a `datasets.IterableDataset`.

Every window belongs to one series of the store (data/store.py:SeriesIndex): a channel of a wide table, or
one id of a panel, with its own rows, split borders and scaler; a series too short for a split gives none.

Sharding: a split's windows are cut into shards of (series, block of consecutive windows);
rank r takes the shards at positions r, r + world_size, ... of a fixed plan, and datasets splits
those across DataLoader workers, so every window is produced exactly once per epoch. Each shard
reads its rows once from the memory-mapped store and yields numpy views, so memory stays bounded
by the shuffle buffer, not the dataset.

A rank's SET of windows never changes (so `rank_num_samples` is exact for every epoch and seed, and
ranks run in lockstep), but for training its shards are small (8 windows) and datasets reshuffles
their order every epoch before the seeded shuffle buffer: a batch then mixes windows from about as
many (channel, time) places as an i.i.d. shuffle would, even on series far longer than the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm4ts_scale.data.store import SeriesStore

WINDOWS_PER_SHARD = 512  # evaluation: order does not matter, big shards read least
TRAIN_WINDOWS_PER_SHARD = 8  # training: a 10k-window buffer then spans ~1,250 places of the series
MIN_SHARDS_PER_RANK = 8  # so DataLoader workers on each rank get shards too
_SHARD_ORDER_SEED = 20231  # fixed: which rank gets which shard must not depend on the run's seed or epoch
# datasets shuffles and splits a Python list of shards; past this many a rank's shards go in groups of
# consecutive plan entries (already in random order for training), so the list stays small for any panel
MAX_SHARD_GROUPS = 16384


@dataclass(frozen=True)
class WindowSpec:
    """Which windows of a store: a split, their geometry (look-back L, horizon H), the share of the training
    split a few-shot run keeps, and the step between window starts (`step` k: every k-th window)."""

    split: str
    seq_len: int
    pred_len: int
    few_shot_percent: int = 100
    step: int = 1

    def __post_init__(self):
        if self.step < 1:
            raise ValueError(f"window step must be >= 1, got {self.step}")


@dataclass(frozen=True)
class Shuffle:
    """A training order: datasets reshuffles the rank's shards every epoch, then a seeded buffer shuffle."""

    seed: int = 0
    epoch: int = 0
    buffer: int = 10000


def plan_shards(store: SeriesStore, spec: WindowSpec, world_size: int = 1) -> np.ndarray:
    """Shards as int64 rows (series, first_window, end_window), in the order datasets deals them out.

    Blocks within a series differ by at most one window; train shards are interleaved
    pseudo-randomly (fixed order); empty shards pad the plan to a multiple of world_size.
    With `spec.step` k, window indices count every k-th window (window i starts k*i rows in).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    counts = store.series_windows(spec.split, spec.seq_len, spec.pred_len, spec.few_shot_percent)  # UserError if none
    per_series = -(-counts // spec.step)
    size = TRAIN_WINDOWS_PER_SHARD if spec.split == "train" else WINDOWS_PER_SHARD
    blocks = np.maximum(-(-per_series // size), -(-MIN_SHARDS_PER_RANK * world_size // store.n_series))
    blocks = np.minimum(blocks, per_series)
    series = np.repeat(np.arange(len(blocks)), blocks)
    k = np.arange(len(series)) - np.repeat(np.cumsum(blocks) - blocks, blocks)  # block index within its series
    n, b = per_series[series], blocks[series]
    shards = np.stack([series, k * n // b, (k + 1) * n // b], axis=1).astype(np.int64)
    if spec.split == "train":
        shards = shards[np.random.default_rng(_SHARD_ORDER_SEED).permutation(len(shards))]
    pad = -len(shards) % world_size
    return np.concatenate([shards, np.zeros((pad, 3), dtype=np.int64)]) if pad else shards


def rank_num_samples(store: SeriesStore, spec: WindowSpec, rank: int = 0, world_size: int = 1) -> int:
    """Exactly how many samples `rank` streams per epoch (the same for every epoch and seed)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    shards = plan_shards(store, spec, world_size)[rank::world_size]
    return int((shards[:, 2] - shards[:, 1]).sum())


def _groups(n: int) -> list[tuple[int, int]]:
    """[start, end) ranges of a rank's plan, one shard each, or consecutive runs of them past MAX_SHARD_GROUPS."""
    size = max(1, -(-n // MAX_SHARD_GROUPS))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _generate_windows(groups, plan, store: SeriesStore, row_starts, seq_len: int, pred_len: int, window_step: int = 1):
    """Yield (key, window) for the shards of `plan` in the given groups; key = (series, start row), unique."""
    total = seq_len + pred_len
    known = len(store.known)
    covariates = known + len(store.past)
    for a, b_ in groups:
        for series, first, end in plan[a:b_].tolist():
            if end <= first:
                continue
            a_row = int(row_starts[series]) + first * window_step
            b_row = a_row + (end - 1 - first) * window_step + total
            values = store.read_target(series, a_row, b_row)
            marks = store.read_marks(a_row, b_row)
            cov = store.read_covariates(series, a_row, b_row) if covariates else None
            for w in range(0, (end - first) * window_step, window_step):
                window = {
                    "x": values[w:w + seq_len],
                    "y": values[w + seq_len:w + total],
                    "x_mark": marks[w:w + seq_len],
                    "y_mark": marks[w + seq_len:w + total],
                    "channel": series,
                    "start": a_row + w,
                }
                if cov is not None:  # known covariates over the look-back and the horizon, past ones over the look-back
                    if known:
                        window["known"] = cov[w:w + total, :known]
                    if covariates > known:
                        window["past"] = cov[w:w + seq_len, known:]
                yield (series, a_row + w), window


def window_dataset(store: SeriesStore, spec: WindowSpec, *, shuffle: Shuffle | None = None, rank: int = 0,
                   world_size: int = 1):
    """`datasets.IterableDataset` of this rank's dicts: x float32 [L] (scaled), y float32 [H],
    x_mark int64 [L, A], y_mark int64 [H, A], channel (the series), start (first row of the window in the
    store), and with covariates known float32 [L + H, K_known], past float32 [L, K_past] (standardized).

    Call `.set_epoch(epoch)` for a new shuffle order each epoch (shard order and buffer);
    evaluation (shuffle=None) always yields the same order.
    """
    from datasets import IterableDataset
    from datasets.iterable_dataset import ExamplesIterable

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    plan = np.ascontiguousarray(plan_shards(store, spec, world_size)[rank::world_size])
    row_starts = store.series_starts(spec.split, spec.seq_len, spec.few_shot_percent)
    # Built from an ExamplesIterable rather than IterableDataset.from_generator: the latter goes
    # through a dataset builder that hashes the arguments and leaves a lock file per dataset in
    # HF_DATASETS_CACHE (it fails where $HOME is read-only). Sharding is the same: the list in
    # the kwargs (`groups`, ranges of this rank's plan) is what datasets splits across workers and reorders
    # every epoch; the plan itself is an array, passed whole.
    examples = ExamplesIterable(
        _generate_windows,
        {"groups": _groups(len(plan)), "plan": plan, "store": store, "row_starts": row_starts, "seq_len": spec.seq_len,
         "pred_len": spec.pred_len, "window_step": spec.step},
    )
    ds = IterableDataset(examples)
    if shuffle is not None:  # reshuffles the order of this rank's shards every epoch, then a buffer shuffle
        ds = ds.shuffle(seed=shuffle.seed, buffer_size=shuffle.buffer)
    return ds


COVARIATE_KEYS = ("known", "past")


def collate_windows(items: list[dict]) -> dict:
    """Stack window dicts into B-first tensors: one concatenate per key (cheaper than np.stack,
    which makes a new view per item), no per-item tensors."""
    import torch

    n = len(items)

    def stacked(key):
        first = items[0][key]
        return torch.from_numpy(np.concatenate([it[key] for it in items]).reshape((n,) + first.shape))

    batch = {
        "x": stacked("x"),
        "y": stacked("y"),
        "x_mark": stacked("x_mark"),
        "y_mark": stacked("y_mark"),
        "channel": torch.tensor([it["channel"] for it in items], dtype=torch.int64),
        "start": torch.tensor([it["start"] for it in items], dtype=torch.int64),
    }
    for key in COVARIATE_KEYS:
        if key in items[0]:
            batch[key] = stacked(key)
    return batch


def make_loader(store: SeriesStore, spec: WindowSpec, batch_size: int, *, shuffle: Shuffle | None = None,
                rank: int = 0, world_size: int = 1, num_workers: int = 0):
    """DataLoader of batched windows (keys as window_dataset, tensors B first). No batch is dropped:
    the last one may be short. `loader.dataset.set_epoch(e)` switches to epoch e's order."""
    import torch
    from torch.utils.data import DataLoader

    ds = window_dataset(store, spec, shuffle=shuffle, rank=rank, world_size=world_size)
    order = shuffle or Shuffle()
    if shuffle is not None:  # (datasets reorders shards for any non-zero epoch, so evaluation never sets one)
        ds.set_epoch(order.epoch)
    # Own generator: creating the loader must not draw from torch's global RNG, or a resumed run
    # (RNG restored from a checkpoint, then a new loader) would see different dropout masks.
    generator = torch.Generator().manual_seed(order.seed * 1_000_003 + order.epoch)
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_windows,
                      drop_last=False, generator=generator)
