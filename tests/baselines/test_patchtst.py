"""PatchTST from scratch: reproducible for a seed, honours few-shot (windows after the few-shot end are never
read), and the `evaluate --baseline patchtst` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from launching import cli

from llm4ts_scale.baselines.patchtst import PatchTST, PatchTSTRecipe, recipe_from_pairs, train_patchtst
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.prepare import prepare
from llm4ts_scale.data.windows import WindowSpec, rank_num_samples

L, H, FEW_SHOT = 96, 24, 10
SHORT = PatchTSTRecipe(epochs=2, patience=2, val_stride=8)


def test_the_network_maps_a_lookback_to_the_horizon_and_normalizes_each_window():
    torch.manual_seed(0)
    model = PatchTST(L, H, PatchTSTRecipe()).eval()
    x = torch.randn(5, L)
    with torch.no_grad():
        out = model(x)
        shifted = model(3.0 * x + 7.0)  # instance normalization: an affine change of the input moves the forecast with it
    assert out.shape == (5, H)
    torch.testing.assert_close(shifted, 3.0 * out + 7.0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        PatchTST(8, H, PatchTSTRecipe(patch_len=16))


def test_same_seed_reproduces_its_validation_mse_and_another_seed_differs(etth1_store):
    first = train_patchtst(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=SHORT, seed=2023)
    threads = torch.get_num_threads()
    again = train_patchtst(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=SHORT, seed=2023)
    assert torch.get_num_threads() == threads
    assert again.val["mse"] == pytest.approx(first.val["mse"], abs=1e-6)
    assert again.test["mse"] == pytest.approx(first.test["mse"], abs=1e-6)
    assert [h["val_mse"] for h in again.history] == pytest.approx([h["val_mse"] for h in first.history], abs=1e-6)
    other = train_patchtst(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=SHORT, seed=2024)
    assert abs(other.history[0]["train_loss"] - first.history[0]["train_loss"]) > 1e-6
    # selection on every 8th validation window; the test split is scored whole
    assert first.val["samples"] == 7 * len(range(0, 2880 - H + 1, 8))
    assert first.test["samples"] == 7 * (2880 - H + 1)
    assert first.train_windows == rank_num_samples(etth1_store, WindowSpec("train", L, H, FEW_SHOT))
    assert first.best_epoch in (1, 2) and first.val["mse"] == min(h["val_mse"] for h in first.history)


def test_few_shot_training_never_reads_a_window_past_the_few_shot_end(tmp_path, etth1_csv, etth1_store):
    """Reversing the training rows between the few-shot end and the validation look-back keeps the scaler (same
    values, other order) and every window a few-shot model may read; a model that read more would change."""
    frame = pd.read_csv(etth1_csv)
    few_shot_end = (8640 - L) * FEW_SHOT // 100 + L
    unused = slice(few_shot_end, 8640 - L)  # validation windows start L rows before row 8640
    values = frame.columns[1:]
    frame.loc[frame.index[unused], values] = frame.loc[frame.index[unused], values].to_numpy()[::-1]
    frame.to_csv(tmp_path / "ETTh1.csv", index=False)
    shuffled = prepare(tmp_path / "ETTh1.csv", tmp_path / "store")
    np.testing.assert_allclose(shuffled.mean, etth1_store.mean, rtol=1e-12)
    np.testing.assert_allclose(shuffled.std, etth1_store.std, rtol=1e-12)

    one = PatchTSTRecipe(epochs=1, patience=1, val_stride=8)
    a = train_patchtst(etth1_store, L, H, few_shot_percent=FEW_SHOT, recipe=one, seed=7)
    b = train_patchtst(shuffled, L, H, few_shot_percent=FEW_SHOT, recipe=one, seed=7)
    assert b.val["mse"] == pytest.approx(a.val["mse"], abs=1e-6)
    assert b.history[0]["train_loss"] == pytest.approx(a.history[0]["train_loss"], abs=1e-6)
    full = train_patchtst(shuffled, L, H, few_shot_percent=100, recipe=PatchTSTRecipe(epochs=1, patience=1, val_stride=8,
                                                                                      batch_size=1024), seed=7)
    assert full.train_windows > 5 * a.train_windows  # the full split is read when asked for


def test_recipe_pairs_are_checked():
    recipe = recipe_from_pairs(["patch_len=24", "stride=2", "lr=0.0025", "schedule=constant"])
    assert (recipe.patch_len, recipe.stride, recipe.lr, recipe.schedule) == (24, 2, 0.0025, "constant")
    for bad, match in ((["depth=3"], "key one of"), (["layers=two"], "integer"), (["schedule=cosine"], "schedule"),
                       (["d_model=10", "heads=4"], "multiple"), (["dropout=1.5"], "dropout")):
        with pytest.raises(UserError, match=match):
            recipe_from_pairs(bad)
    plan = PatchTSTRecipe(lr=1.0).plan()
    assert [plan.lr_at(e) for e in (1, 3, 4, 5)] == pytest.approx([1.0, 1.0, 0.9, 0.81])  # type3


def test_cli_prints_json_and_refuses_bad_input(tmp_path, etth1_csv):
    out = tmp_path / "metrics.json"
    proc = cli(["evaluate", "--data", str(etth1_csv), "--baseline", "patchtst", "--seq-len", str(L), "--pred-len",
                str(H), "--few-shot-percent", str(FEW_SHOT), "--epochs", "1", "--set", "val_stride=8", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["baseline"] == "patchtst" and printed["split"] == "test" and printed["epochs_run"] == 1
    assert printed["samples"] == 7 * (2880 - H + 1) and printed["recipe"]["val_stride"] == 8
    assert json.loads(out.read_text())["test"]["mse"] == printed["mse"]
    for flags in (["--set", "depth=3"], ["--set", "patch_len=200"], ["--epochs", "0"]):
        bad = cli(["evaluate", "--data", str(etth1_csv), "--baseline", "patchtst", "--seq-len", str(L), *flags])
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    bad = cli(["evaluate", "--data", str(etth1_csv), "--baseline", "rlinear", "--set", "lr=1"])
    assert bad.returncode == 2 and "--set only applies" in bad.stderr
