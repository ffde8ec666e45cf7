"""Sharded streaming: every window exactly once across ranks x workers, seeded per-epoch order,
fixed evaluation order, and rank_num_samples agreeing with what each rank streams."""

from __future__ import annotations

from collections import Counter

import pytest

from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader, plan_shards, rank_num_samples, window_dataset

L, H = 336, 96


def _pairs(loader) -> list[tuple[int, int]]:
    out = []
    for batch in loader:
        out.extend(zip(batch["start"].tolist(), batch["channel"].tolist()))
    return out


def _expected(store, split, seq_len, pred_len, few_shot=100) -> set[tuple[int, int]]:
    start, _ = store.split_range(split, seq_len, few_shot)
    windows = store.num_windows(split, seq_len, pred_len, few_shot)
    return {(start + w, c) for c in range(store.n_channels) for w in range(windows)}


def test_two_ranks_two_workers_cover_every_training_window_once(etth1_store):
    seen = []
    for rank in range(2):
        loader = make_loader(etth1_store, WindowSpec("train", L, H), 128,
                             shuffle=Shuffle(3, 1), rank=rank, world_size=2, num_workers=2)
        pairs = _pairs(loader)
        assert len(pairs) == rank_num_samples(etth1_store, WindowSpec("train", L, H), rank, 2)
        seen.extend(pairs)
    counts = Counter(seen)
    assert max(counts.values()) == 1
    assert set(counts) == _expected(etth1_store, "train", L, H)
    assert len(seen) == etth1_store.num_samples("train", L, H)


def test_epochs_and_seeds_change_the_order_but_not_the_set(etth1_store):
    def order(seed, epoch):
        return _pairs(make_loader(etth1_store, WindowSpec("train", L, H, 20), 512, shuffle=Shuffle(seed, epoch)))

    base = order(0, 0)
    assert order(0, 0) == base  # reproducible
    for other in (order(0, 1), order(1, 0)):
        assert other != base
        assert sorted(other) == sorted(base)
    # the shuffle is not just a rotation of channel blocks: consecutive samples mix channels
    assert len({c for _, c in base[:64]}) > 1


def test_set_epoch_on_an_existing_dataset_changes_the_order(ili_store):
    ds = window_dataset(ili_store, WindowSpec("train", 36, 24), shuffle=Shuffle(0, buffer=100))
    first = [(ex["start"], ex["channel"]) for ex in ds]
    ds.set_epoch(1)
    second = [(ex["start"], ex["channel"]) for ex in ds]
    assert first != second and sorted(first) == sorted(second)


def test_evaluation_order_is_fixed_and_rank_split_is_exact(etth1_store):
    once = _pairs(make_loader(etth1_store, WindowSpec("test", L, H), 256))
    assert _pairs(make_loader(etth1_store, WindowSpec("test", L, H), 100)) == once
    assert once == sorted(once, key=lambda p: (p[1], p[0]))  # channel by channel, time ascending
    parts = [_pairs(make_loader(etth1_store, WindowSpec("test", L, H), 256, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(once)
    assert [len(p) for p in parts] == [rank_num_samples(etth1_store, WindowSpec("test", L, H), r, 3) for r in range(3)]


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_rank_num_samples_matches_stream_for_every_epoch(ili_store, world_size):
    for epoch in (0, 1):
        total = []
        for rank in range(world_size):
            pairs = _pairs(make_loader(ili_store, WindowSpec("train", 36, 24), 64,
                                       shuffle=Shuffle(7, epoch), rank=rank, world_size=world_size))
            assert len(pairs) == rank_num_samples(ili_store, WindowSpec("train", 36, 24), rank, world_size)
            total.extend(pairs)
        assert Counter(total) == Counter(_expected(ili_store, "train", 36, 24))


def test_tiny_split_with_more_ranks_than_windows(ili_store):
    # val spans 97 + 36 rows: with L=36, H=96 that is 2 windows per channel, 14 samples for 16 ranks
    counts = []
    for rank in range(16):
        n = rank_num_samples(ili_store, WindowSpec("val", 36, 96), rank, 16)
        assert n == len(_pairs(make_loader(ili_store, WindowSpec("val", 36, 96), 8, rank=rank, world_size=16)))
        counts.append(n)
    assert sum(counts) == ili_store.num_samples("val", 36, 96) == 14
    assert sorted(counts) == [0, 0] + [1] * 14


def test_shards_partition_the_windows(etth1_store):
    shards = plan_shards(etth1_store, WindowSpec("train", L, H), world_size=4)
    assert len(shards) % 4 == 0 and len(shards) >= 4 * 8
    covered = Counter((c, w) for c, first, end in shards for w in range(first, end))
    assert max(covered.values()) == 1 and len(covered) == etth1_store.num_samples("train", L, H)


def test_sample_fields(ili_store):
    ex = next(iter(window_dataset(ili_store, WindowSpec("test", 36, 24))))
    assert ex["x"].shape == (36,) and ex["y"].shape == (24,)
    assert ex["x_mark"].shape == (36, 2) and ex["y_mark"].shape == (24, 2)
    assert str(ex["x"].dtype) == "float32" and str(ex["x_mark"].dtype) == "int64"
    values, marks, _ = ili_store.read_rows(ex["start"], ex["start"] + 60)
    assert (ex["x"] == values[:36, ex["channel"]]).all() and (ex["y_mark"] == marks[36:]).all()


@pytest.fixture(scope="module")
def long_store(tmp_path_factory):
    """A synthetic series far longer than the shuffle buffer: 20 channels x 30,000 hourly rows."""
    import numpy as np
    import pandas as pd

    from llm4ts_scale.data.prepare import prepare

    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((30_000, 20)).cumsum(0), columns=[f"c{i}" for i in range(20)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=30_000, freq="h"))
    frame.to_csv(root / "long.csv", index=False)
    return prepare(root / "long.csv", root / "store", split="ratio")


def test_batches_mix_as_many_places_as_an_iid_shuffle(long_store):
    """Defect: shards of 512 consecutive windows in a frozen order made a batch come from ~20 (channel,
    time-block) places. Now the number of distinct places per batch is close to that of an i.i.d. shuffle."""
    L, H, B, BLOCK = 96, 24, 128, 512
    per_channel = long_store.num_windows("train", L, H)
    groups = long_store.n_channels * -(-per_channel // BLOCK)
    iid = groups * (1 - (1 - 1 / groups) ** B)  # expected distinct (channel, block) places in B i.i.d. draws
    start, _ = long_store.split_range("train", L)
    distinct = []
    loader = make_loader(long_store, WindowSpec("train", L, H), B, shuffle=Shuffle(1, 0, 10_000))
    for i, batch in enumerate(loader):
        if i == 30:
            break
        places = {(c, (s - start) // BLOCK) for s, c in zip(batch["start"].tolist(), batch["channel"].tolist())}
        distinct.append(len(places))
    assert sum(distinct) / len(distinct) > 0.85 * iid, (sum(distinct) / len(distinct), iid)


def test_each_epoch_reorders_a_ranks_shards_but_keeps_its_windows(etth1_store):
    firsts, sets = [], []
    for epoch in (0, 1):
        pairs = _pairs(make_loader(etth1_store, WindowSpec("train", L, H), 256,
                                   shuffle=Shuffle(5, epoch, 64), rank=1, world_size=2))
        firsts.append(pairs[:256])
        sets.append(Counter(pairs))
    assert sets[0] == sets[1] and max(sets[0].values()) == 1  # the same windows, once each
    assert firsts[0] != firsts[1]
    assert {c for _, c in firsts[0]} != {0} and len({s // 512 for s, _ in firsts[0]}) > 4  # no long runs of one place
