"""DLinear: the decomposition by hand, a short few-shot training on ETTh1 that must clear the naive
baseline on every test window, determinism per seed, and the `evaluate --baseline dlinear` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from llm4ts_scale.baselines.dlinear import DLinear, DLinearRecipe, train_dlinear
from llm4ts_scale.baselines.simple import baseline_forecast
from llm4ts_scale.data.windows import WindowSpec, make_loader, rank_num_samples
from llm4ts_scale.stats.metrics import MetricAccumulator

L, H, FEW_SHOT = 336, 96, 10
TEST_SAMPLES = 19495  # 7 channels x 2,785 test windows


def test_decomposition_by_hand():
    model = DLinear(seq_len=10, pred_len=3, kernel_size=5)
    x = torch.arange(1.0, 11.0).reshape(1, 10)
    seasonal, trend = model.decompose(x)
    # ends padded with 2 copies of the first/last value: [1, 1, 1, 2, 3] and [8, 9, 10, 10, 10]
    # (zero padding would give 1.2 and 7.4)
    assert trend[0, 0].item() == pytest.approx(1.6)
    assert trend[0, -1].item() == pytest.approx(9.4)
    assert trend[0, 2:8].tolist() == pytest.approx(x[0, 2:8].tolist())  # a ramp is its own moving average
    torch.testing.assert_close(seasonal + trend, x)

    x = torch.randn(4, L, generator=torch.Generator().manual_seed(0))
    seasonal, trend = DLinear(L, H).decompose(x)
    assert seasonal.shape == trend.shape == (4, L)
    torch.testing.assert_close(seasonal + trend, x)
    seasonal, trend = DLinear(L, H).decompose(torch.full((2, L), 3.25))
    torch.testing.assert_close(seasonal, torch.zeros(2, L))
    torch.testing.assert_close(trend, torch.full((2, L), 3.25))
    assert DLinear(L, H)(x).shape == (4, H)
    with pytest.raises(ValueError, match="odd"):
        DLinear(L, H, kernel_size=24)


@pytest.fixture(scope="module")
def naive_test_mse(etth1_store):
    acc = MetricAccumulator()
    for batch in make_loader(etth1_store, WindowSpec("test", L, H), 1000):
        acc.update(baseline_forecast("naive", batch["x"], H), batch["y"])
    return acc.compute()["mse"]


@pytest.fixture(scope="module")
def trained(etth1_store):
    return train_dlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=DLinearRecipe(epochs=3), seed=2023)


def test_few_shot_training_beats_naive_on_every_test_window(trained, etth1_store, naive_test_mse):
    assert trained.test["samples"] == TEST_SAMPLES
    assert trained.val["samples"] == TEST_SAMPLES  # ETTh1 val and test both span 4 months
    assert trained.train_windows == rank_num_samples(etth1_store, WindowSpec("train", L, H, FEW_SHOT)) == 7 * 735
    assert trained.test["mse"] < 0.6 * naive_test_mse  # naive is 1.29 here, DLinear about 0.5
    assert [h["epoch"] for h in trained.history] == [1, 2, 3]
    assert [h["lr"] for h in trained.history] == pytest.approx([0.005, 0.0025, 0.00125])
    best = min(trained.history, key=lambda h: h["val_mse"])
    assert trained.best_epoch == best["epoch"] and trained.val["mse"] == best["val_mse"]


def test_same_seed_same_result_other_seed_differs(trained, etth1_store):
    threads = torch.get_num_threads()
    again = train_dlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=DLinearRecipe(epochs=3), seed=2023)
    assert torch.get_num_threads() == threads  # trains on one thread, then restores the caller's setting
    assert again.test["mse"] == trained.test["mse"]
    assert again.history == trained.history
    other = train_dlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=DLinearRecipe(epochs=1), seed=2024)
    assert other.history[0]["train_loss"] != trained.history[0]["train_loss"]


def _cli(tmp_path, *args):
    env = {**os.environ, "LLM4TS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", "evaluate", "--baseline", "dlinear", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_prints_json_and_writes_val_and_test(tmp_path, etth1_csv):
    out = tmp_path / "metrics.json"
    proc = _cli(tmp_path, "--data", str(etth1_csv), "--seq-len", str(L), "--pred-len", str(H),
                "--few-shot-percent", str(FEW_SHOT), "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["samples"] == TEST_SAMPLES and printed["split"] == "test"
    assert printed["best_epoch"] == 1 and printed["seed"] == 2023 and printed["few_shot_percent"] == FEW_SHOT
    assert printed["wall_time_s"] > 0
    written = json.loads(out.read_text())
    assert set(written) == {"val", "test"}
    assert written["test"]["mse"] == printed["mse"]
    assert written["val"]["mse"] == printed["val_mse"]


@pytest.mark.parametrize("flags", [["--few-shot-percent", "0"], ["--lr", "-1"], ["--split", "train"]])
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, etth1_csv, flags):
    proc = _cli(tmp_path, "--data", str(etth1_csv), *flags)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flags[0] in lines[0], proc.stderr
