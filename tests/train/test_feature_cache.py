"""llm4ts_scale/train/feature_cache.py in-process: the cached frozen features of a split are the model's
own features for every window, found by window id whatever the batch order."""

from __future__ import annotations

import pytest
import torch

from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader
from llm4ts_scale.inference.loading import load_model, open_checked_store
from llm4ts_scale.train.feature_cache import FeatureCache


def test_cached_features_equal_the_models_for_shuffled_batches(ili_run_dir):
    loaded = load_model(ili_run_dir)
    store = open_checked_store(loaded)
    d = loaded.config.data
    spec = WindowSpec("train", d.seq_len, d.pred_len)
    cache = FeatureCache(store.n_channels).fill(loaded.model, store, spec, 64, Topology())
    assert len(cache) == sum(len(b["x"]) for b in make_loader(store, spec, 256))
    batch = next(iter(make_loader(store, spec, 32, shuffle=Shuffle(seed=3, epoch=1))))
    with torch.no_grad():
        direct = loaded.model.features(batch["x"], batch["x_mark"])
    torch.testing.assert_close(cache.lookup(batch), direct)
    other = {**batch, "start": batch["start"] + 10_000}
    with pytest.raises(RuntimeError, match="not in the LP feature cache"):
        cache.lookup(other)
