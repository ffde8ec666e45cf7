"""rlinear (RevIN + ridge on the look-back): the same ridge problem solved by numpy on windows cut by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from launching import cli, data_dir

from llm4ts_scale.baselines.rlinear import fit_rlinear

L, H, FEW_SHOT = 96, 24, 10


def _windows(store, split, few_shot=100, step=1):
    """(x, y) [n, L], [n, H] of every (window, channel), cut straight from the store's scaled values."""
    start, end = store.split_range(split, L, few_shot)
    values = store.read_values(start, end).astype(np.float64)
    n = end - start - L - H + 1
    xs, ys = [], []
    for c in range(store.n_channels):
        for w in range(0, n, step):
            xs.append(values[w:w + L, c])
            ys.append(values[w + L:w + L + H, c])
    return np.array(xs), np.array(ys)


def _revin(x):
    mean = x.mean(1, keepdims=True)
    std = np.sqrt(x.var(1, keepdims=True) + 1e-5)
    return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1), mean, std


def test_rlinear_equals_a_numpy_least_squares_solve_of_the_same_ridge_problem(etth1_store):
    result = fit_rlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT)
    x, y = _windows(etth1_store, "train", FEW_SHOT)
    u, mean, std = _revin(x)
    t = (y - mean) / std
    lam = result.alpha * np.mean(np.diag(u.T @ u)[:-1])
    pen = np.sqrt(np.r_[np.full(L, lam), 0.0])
    reference = np.linalg.lstsq(np.concatenate([u, np.diag(pen)]), np.concatenate([t, np.zeros((L + 1, H))]),
                                rcond=None)[0]
    np.testing.assert_allclose(result.weight.numpy(), reference, rtol=1e-6, atol=1e-9)
    assert result.train_windows == len(x)

    xt, yt = _windows(etth1_store, "test")
    ut, mt, st = _revin(xt)
    pred = (ut @ reference) * st + mt
    assert result.test["samples"] == len(xt)
    assert result.test["mse"] == pytest.approx(float(((pred - yt) ** 2).mean()), rel=1e-6)
    assert result.test["mae"] == pytest.approx(float(np.abs(pred - yt).mean()), rel=1e-6)


def test_the_penalty_is_the_validation_choice(etth1_store):
    """Chosen on validation, the penalty is the grid's best there, and the test figure is a different number."""
    result = fit_rlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT)
    best = min(result.search, key=lambda r: r["val_mse"])
    assert best["alpha_linear"] == result.alpha
    assert result.val["mse"] == pytest.approx(best["val_mse"], rel=1e-9)
    others = [r["val_mse"] for r in result.search if r["alpha_linear"] != result.alpha]
    assert min(others) > result.val["mse"]
    fixed = fit_rlinear(etth1_store, L, H, few_shot_percent=FEW_SHOT, alpha=result.alpha * 1000)
    assert fixed.val["mse"] > result.val["mse"]


def test_evaluate_baseline_rlinear_on_the_command_line(tmp_path):
    out = tmp_path / "m.json"
    proc = cli(["evaluate", "--data", str(data_dir() / "ETTh1.csv"), "--baseline", "rlinear", "--seq-len", str(L),
                "--pred-len", str(H), "--few-shot-percent", str(FEW_SHOT), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout.splitlines()[-1])
    assert printed["baseline"] == "rlinear" and printed["split"] == "test" and printed["few_shot_percent"] == FEW_SHOT
    assert printed["samples"] == 7 * ((14400 - (11520 - L)) - L - H + 1)
    written = json.loads(out.read_text())
    assert written["test"]["mse"] == pytest.approx(printed["mse"]) and written["val"]["mse"] == printed["val_mse"]
    bad = cli(["evaluate", "--data", str(data_dir() / "ETTh1.csv"), "--baseline", "rlinear", "--epochs", "3"])
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "--epochs" in bad.stderr
