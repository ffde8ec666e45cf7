"""Metrics are exact sums (not means of batch means), skip masked rows, and reduce across ranks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from llm4ts_scale.stats.metrics import MetricAccumulator, write_metrics_json


def _direct(pred: np.ndarray, target: np.ndarray) -> dict:
    err = pred - target
    nz = target != 0
    return {
        "mse": np.mean(err ** 2),
        "mae": np.mean(np.abs(err)),
        "rmse": math.sqrt(np.mean(err ** 2)),
        "rse": math.sqrt(np.sum(err ** 2)) / math.sqrt(np.sum((target - target.mean()) ** 2)),
        "mape": np.mean(np.abs(err[nz]) / np.abs(target[nz])),
        "samples": pred.shape[0],
    }


def _data(rows=1000, horizon=24, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(rows, horizon)).astype(np.float32)
    pred = (target + rng.normal(scale=0.5, size=target.shape)).astype(np.float32)
    target[3, :5] = 0.0
    return pred, target


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_uneven_batches_give_exact_metrics(device):
    pred, target = _data()
    acc = MetricAccumulator()
    edges = [0, 7, 300, 301, 777, 1000]  # uneven, including a 1-row batch
    for a, b in zip(edges, edges[1:]):
        acc.update(torch.from_numpy(pred[a:b]).to(device), torch.from_numpy(target[a:b]).to(device))
    got = acc.compute()
    expected = _direct(pred.astype(np.float64), target.astype(np.float64))
    for key in ("mse", "mae", "rmse", "rse", "mape"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    assert got["samples"] == 1000 and got["mape_zero_targets"] == 5
    batch_means = np.mean([np.mean((pred[a:b] - target[a:b]) ** 2) for a, b in zip(edges, edges[1:])])
    assert abs(batch_means - expected["mse"]) > 1e-3  # what a mean of batch means would have reported


def test_mask_skips_padded_rows():
    pred, target = _data(rows=10)
    mask = torch.tensor([True] * 6 + [False] * 4)
    acc = MetricAccumulator()
    acc.update(torch.from_numpy(pred), torch.from_numpy(target), weight_mask=mask)
    got = acc.compute()
    assert got["samples"] == 6
    assert got["mse"] == pytest.approx(np.mean((pred[:6].astype(np.float64) - target[:6]) ** 2), rel=1e-12)


def test_empty_and_constant_targets():
    assert MetricAccumulator().compute() == {"samples": 0}
    acc = MetricAccumulator()
    acc.update(torch.ones(2, 3), torch.zeros(2, 3))
    got = acc.compute()
    assert got["mse"] == 1.0 and "rse" not in got and "mape" not in got and got["mape_zero_targets"] == 6


def test_reduce_twice_refuses():
    acc = MetricAccumulator()
    acc.update(torch.ones(1, 2), torch.ones(1, 2))
    acc.reduce()
    with pytest.raises(RuntimeError):
        acc.reduce()


def _rank_main(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    pred, target = _data(rows=301)
    rows = np.arange(100) if rank == 0 else np.arange(100, 301)  # unequal shares
    acc = MetricAccumulator()
    for idx in np.array_split(rows, 3):
        acc.update(torch.from_numpy(pred[idx]), torch.from_numpy(target[idx]))
    metrics = acc.reduce().compute()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(metrics))
    torch.distributed.destroy_process_group()


def test_reduce_across_two_gloo_ranks(tmp_path):
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    pred, target = _data(rows=301)
    expected = _direct(pred.astype(np.float64), target.astype(np.float64))
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["samples"] == 301
        for key in ("mse", "mae", "rse", "mape"):
            assert got[key] == pytest.approx(expected[key], rel=1e-12)


def test_write_metrics_json_is_atomic_and_complete(tmp_path):
    path = tmp_path / "run" / "metrics.json"
    write_metrics_json(path, {"test": {"mse": 0.5, "mae": 0.25, "samples": 3}})
    write_metrics_json(path, {"val": {"mse": 1.0, "mae": 1.0, "samples": 1}, "test": {"mse": 0.5, "samples": 3}})
    assert json.loads(path.read_text())["val"]["samples"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left behind
