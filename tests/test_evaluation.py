"""llm4ts_scale/evaluation.py in-process: ranks score disjoint windows that together are every window
once, in lockstep (the same number of batches, masked copies for a rank that runs out)."""

from __future__ import annotations

import pytest
import torch

from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import WindowSpec
from llm4ts_scale.evaluation import evaluate_split, lockstep_batches
from llm4ts_scale.inference.loading import load_model, open_checked_store


@pytest.fixture(scope="module")
def loaded(ili_run_dir):
    return load_model(ili_run_dir)


def test_ranks_partition_the_windows_and_their_sums_give_the_whole_split(loaded):
    store = open_checked_store(loaded)
    d = loaded.config.data
    spec = WindowSpec("test", d.seq_len, d.pred_len)
    whole = evaluate_split(loaded.model, store, spec, Topology(), batch_size=64, task="forecast")
    parts = [evaluate_split(loaded.model, store, spec, Topology(rank=r, world_size=3), batch_size=64, task="forecast")
             for r in range(3)]
    assert sum(p["samples"] for p in parts) == whole["samples"]
    assert sum(p["mse"] * p["samples"] for p in parts) / whole["samples"] == pytest.approx(whole["mse"], rel=1e-9)


def test_a_rank_without_windows_runs_masked_batches_in_step(loaded):
    store = open_checked_store(loaded)
    d = loaded.config.data
    spec = WindowSpec("val", d.seq_len, d.pred_len, step=50)
    world = 64  # far more ranks than shards
    runs = [list(lockstep_batches(store, spec, 8, Topology(rank=r, world_size=world))) for r in (0, world - 1)]
    assert len(runs[0]) == len(runs[1]) > 0
    assert all(mask is not None and not mask.any() for _, mask in runs[1])
    assert all(mask is None for _, mask in runs[0]) and all(b["x"].dtype == torch.float32 for b, _ in runs[0])
