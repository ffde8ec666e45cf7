"""An alignment corpus: the training windows of several sources, mixed by weight in one stream.

`stages.align.data` lists sources; each is a dataset name, a CSV/Parquet file, a prepared store, a
directory or glob of those, or `synthetic:kernelsynth` (llm4ts_scale/data/synthetic.py), given as a string
or as a mapping `{path, split, weight}` (synthetic sources also take `series`, `length`, `seed`). Only a
source's TRAIN split is read; the run's own target contributes only its few-shot training windows, so no
validation or test row of the target reaches alignment.

Weights: a source of weight w contributes w times its windows per epoch: w = 1, every window once;
w = 2, every window twice; w = 0.25, a quarter of them, a different quarter every epoch. The counts are
exact and the same every epoch (the fractional part is allotted to shards by largest remainder), so every
rank knows beforehand how many windows it streams and ranks stay in lockstep, as for a single store.

Sharding follows llm4ts_scale/data/windows.py: each source's windows are cut into shards of
CORPUS_WINDOWS_PER_SHARD (channel, block of windows); the shards of every source go into one fixed plan, dealt to ranks as
plan[rank::world] and by `datasets` to DataLoader workers, then shuffled every epoch (shard order and
buffer) by `datasets`. Windows carry a global channel id (the source's channel offset + channel), so a
window's (channel, start) is unique across the corpus.
"""

from __future__ import annotations

import glob
import inspect
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import IterableDataset

from llm4ts_scale.core.config import check_sources
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.windows import Shuffle, WindowSpec, collate_windows

_PLAN_SEED = 20232  # fixed: which rank gets which shard never depends on the run's seed or epoch
# Windows per shard: a corpus holds far more shards than one series (every source, every channel), so its
# shuffled shard order already mixes well with bigger shards, and the plan stays small (RSS flat in size).
CORPUS_WINDOWS_PER_SHARD = 32
# datasets >= 5 feeds the shuffle buffer from several shards at once through a thread pool, one future per
# example: a third of the stream's time here. The plan's shard order is shuffled already, so one input shard
# at a time loses no mixing (older versions have neither the pool nor the argument).
ONE_INPUT_SHARD = ({"max_buffer_input_shards": 1}
                   if "max_buffer_input_shards" in inspect.signature(IterableDataset.shuffle).parameters else {})


@dataclass(frozen=True)
class CorpusSource:
    store: object  # SeriesStore or SyntheticStore
    few_shot_percent: int
    weight: float
    label: str
    is_target: bool = False


def _expand(path: str) -> list[str]:
    """A directory or glob of files/stores -> its members (sorted); anything else as is."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "store.json").is_file():
        members = sorted(str(c) for c in p.iterdir() if c.suffix.lower() in (".csv", ".parquet", ".pq")
                         or (c / "store.json").is_file())
        if not members:
            raise UserError(f"stages.align.data: directory {p} holds no CSV/Parquet file or prepared store")
        return members
    if any(ch in path for ch in "*?["):
        members = sorted(glob.glob(os.path.expanduser(path)))
        if not members:
            raise UserError(f"stages.align.data: the pattern {path!r} matches no file")
        return members
    return [path]


def open_corpus(entries: list, target, target_few_shot: int, *, seed: int, fill: str = "none") -> list[CorpusSource]:
    """Resolve stages.align.data into sources; the target (same data fingerprint) keeps its few-shot split."""
    from llm4ts_scale.data.sources import open_store
    from llm4ts_scale.data.synthetic import SyntheticStore, parse_synthetic

    check_sources(entries)
    sources = []
    for entry in entries:
        spec = {"path": entry} if isinstance(entry, str) else dict(entry)
        weight = float(spec.get("weight", 1.0))
        kind = parse_synthetic(spec["path"])
        if kind is not None:
            store = SyntheticStore(kind, series=int(spec.get("series", 1000)), length=int(spec.get("length", 2048)),
                                   seed=int(spec.get("seed", seed)), freq=target.freq)
            sources.append(CorpusSource(store, 100, weight, store.name))
            continue
        for path in _expand(spec["path"]):
            store = open_store(path, split=spec.get("split", "auto"), fill=fill)
            mine = store.fingerprint == target.fingerprint
            sources.append(CorpusSource(store, target_few_shot if mine else 100, weight, store.name, is_target=mine))
    if not sources:
        raise UserError("stages.align.data resolved to no source; list at least one, or leave it empty for the "
                        "run's own training windows")
    return sources


def _allot(counts: list[int], fraction: float) -> list[int]:
    """Per-shard numbers of kept windows summing to round(fraction * total), by largest remainder."""
    exact = [fraction * c for c in counts]
    keep = [math.floor(e) for e in exact]
    short = round(sum(exact)) - sum(keep)
    order = sorted(range(len(counts)), key=lambda i: (exact[i] - keep[i], -i), reverse=True)
    for i in order[:short]:
        keep[i] += 1
    return keep


def _blocks(per_channel: int, n_channels: int, kept: float) -> list[tuple[int, int, int]]:
    """(channel, first, end) blocks of about CORPUS_WINDOWS_PER_SHARD / kept windows over every channel."""
    blocks = max(1, math.ceil(per_channel * kept / CORPUS_WINDOWS_PER_SHARD))
    bounds = [k * per_channel // blocks for k in range(blocks + 1)]
    return [(c, bounds[k], bounds[k + 1]) for c in range(n_channels) for k in range(blocks)]


def plan_corpus(sources: list[CorpusSource], seq_len: int, horizon: int, world_size: int = 1) -> list[tuple]:
    """Shards as (source, channel, first, end, keep, copy): `keep` of the end - first windows stream per
    epoch (all of them unless the weight has a fractional part); `copy` numbers the repeats of a weight > 1."""
    shards = []
    for s, src in enumerate(sources):
        per_channel = src.store.num_windows("train", seq_len, horizon, src.few_shot_percent)  # UserError if too short
        whole, fraction = int(src.weight), src.weight - int(src.weight)
        for copy in range(whole):
            shards += [(s, c, a, b, b - a, copy) for c, a, b in _blocks(per_channel, src.store.n_channels, 1.0)]
        if fraction > 1e-12:  # longer shards, so that each still streams about CORPUS_WINDOWS_PER_SHARD windows
            base = _blocks(per_channel, src.store.n_channels, fraction)
            for (c, a, b), keep in zip(base, _allot([b - a for _, a, b in base], fraction)):
                if keep:
                    shards.append((s, c, a, b, keep, whole))
    order = np.random.default_rng(_PLAN_SEED).permutation(len(shards))
    shards = [shards[i] for i in order]
    return shards + [(0, 0, 0, 0, 0, 0)] * (-len(shards) % world_size)


def corpus_rank_samples(sources, seq_len: int, horizon: int, rank: int = 0, world_size: int = 1) -> int:
    """Exactly how many windows `rank` streams per epoch (the same every epoch)."""
    return sum(sh[4] for sh in plan_corpus(sources, seq_len, horizon, world_size)[rank::world_size])


def channel_offsets(sources) -> list[int]:
    return list(np.cumsum([0] + [src.store.n_channels for src in sources[:-1]]))


def _subset_seed(*parts: int) -> int:
    """One integer from the parts, the same on every machine and Python (unlike hash())."""
    out = 0
    for part in parts:
        out = (out * 1_000_003 + int(part)) % (1 << 63)
    return out


def _generate(shards, sources, offsets, seq_len: int, pred_len: int, n_attrs: int, seed: int, epoch: int):
    total = seq_len + pred_len
    marks = np.zeros((total, n_attrs), dtype=np.int64)  # corpus alignment reads no calendar
    row_starts = [src.store.split_range("train", seq_len, src.few_shot_percent)[0] for src in sources]
    for s, channel, first, end, keep, copy in shards:
        if keep <= 0:
            continue
        a, b = row_starts[s] + first, row_starts[s] + end - 1 + total
        values = sources[s].store.read_channel(a, b, channel)
        picked = range(end - first)
        if keep < end - first:  # a different subset every epoch, of a fixed size (seeded by the shard's identity)
            picked = sorted(random.Random(_subset_seed(seed, epoch, s, channel, first, copy)).sample(picked, keep))
        for w in picked:
            yield (s, channel, a + w, copy), {
                "x": values[w:w + seq_len], "y": values[w + seq_len:w + total],
                "x_mark": marks[:seq_len], "y_mark": marks[seq_len:],
                "channel": int(offsets[s] + channel), "start": int(a + w),
            }


def corpus_loader(sources, spec: WindowSpec, batch_size: int, *, n_attrs: int, shuffle: Shuffle, rank: int = 0,
                  world_size: int = 1, num_workers: int = 0):
    """DataLoader over this rank's corpus windows (keys as llm4ts_scale/data/windows.py's) in `shuffle`'s order;
    `spec` gives the geometry (each source's own train split is read)."""
    seq_len, horizon = spec.seq_len, spec.pred_len
    import torch
    from datasets.iterable_dataset import ExamplesIterable
    from torch.utils.data import DataLoader

    shards = plan_corpus(sources, seq_len, horizon, world_size)[rank::world_size]
    # only `shards` is a list: datasets splits lists across workers (sources and offsets go whole, as tuples)
    examples = ExamplesIterable(_generate, {"shards": shards, "sources": tuple(sources),
                                            "offsets": tuple(channel_offsets(sources)),
                                            "seq_len": seq_len, "pred_len": horizon, "n_attrs": n_attrs,
                                            "seed": shuffle.seed, "epoch": shuffle.epoch})
    ds = IterableDataset(examples).shuffle(seed=shuffle.seed, buffer_size=shuffle.buffer, **ONE_INPUT_SHARD)
    ds.set_epoch(shuffle.epoch)
    generator = torch.Generator().manual_seed(shuffle.seed * 1_000_003 + shuffle.epoch)
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_windows, drop_last=False,
                      generator=generator)


def describe(sources, seq_len: int, horizon: int) -> list[dict]:
    """What went into alignment, for run.json: per source, its identity, rows used and windows per epoch."""
    out = []
    per_epoch = [0] * len(sources)
    for shard in plan_corpus(sources, seq_len, horizon):
        per_epoch[shard[0]] += shard[4]
    for src, streamed in zip(sources, per_epoch):
        start, end = src.store.split_range("train", seq_len, src.few_shot_percent)
        windows = src.store.num_samples("train", seq_len, horizon, src.few_shot_percent)
        out.append({"source": src.label, "fingerprint": src.store.fingerprint, "target": src.is_target,
                    "split": "train", "rows": [int(start), int(end)], "few_shot_percent": src.few_shot_percent,
                    "channels": src.store.n_channels, "windows": windows, "weight": src.weight,
                    "windows_per_epoch": streamed,
                    **({"synthetic": src.store.params} if hasattr(src.store, "params") else {})})
    return out

