"""Exact linear probing (stages.lp.solver=exact) in real runs: the head it installs is the ridge optimum
on the frozen features (checked against numpy), the same on 1 and 2 processes, the same by the Gram, the
kernel and conjugate gradient; the linear shortcut falls back to rlinear; FT keeps LP's weights when no
epoch validates better."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from backbones import tiny_llama
from launching import data_dir, launch_train, tiny_run_overrides

from llm4ts_scale.core.weights import load_weights
from llm4ts_scale.data.sources import open_store
from llm4ts_scale.data.windows import WindowSpec, make_loader
from llm4ts_scale.inference.export import load_exported_model

L, H = 96, 24


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("exact-bb") / "llama", layers=2, hidden=64)


def _probe_run(backbone, run_dir, processes=1, ds=None, **over):
    values = {"stages.align.epochs": 0, "stages.ft.epochs": 0, "stages.lp.solver": "exact", "stages.lp.epochs": 1,
              "model.head": "flatten+linear", "train.test": False, "train.mixed_precision": "no",
              "model.quantize": "none", "train.log_with": "none", "data.few_shot_percent": 10, **over}
    proc = launch_train(tiny_run_overrides(backbone, run_dir, **values), ds=ds, processes=processes, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "run.json").read_text())


def _frozen_design(run_dir, few_shot):
    """(u, h, t) of every training window, recomputed from the exported model (LP changes only the head)."""
    model, config, _, _ = load_exported_model(run_dir)
    store = open_store(data_dir() / "ETTh1.csv")
    us, hs, ts = [], [], []
    with torch.no_grad():
        for batch in make_loader(store, WindowSpec("train", L, H, few_shot), 512):
            stats = model.revin.statistics(batch["x"])
            z = model.revin.normalize(batch["x"], stats)
            hs.append(model(batch["x"], batch["x_mark"], task="features").flatten(1).double())
            us.append(torch.cat([z, torch.ones(len(z), 1)], 1).double())
            ts.append(model.revin.to_head_space(batch["y"], stats).double())
    return model, torch.cat(us).numpy(), torch.cat(hs).numpy(), torch.cat(ts).numpy()


def _numpy_ridge(u, h, t, alpha_u, alpha_h):
    lam_u = alpha_u * np.mean(np.sum(u[:, :-1] ** 2, 0))
    lam_h = alpha_h * np.mean(np.sum(h ** 2, 0))
    X = np.concatenate([u, h], 1)
    pen = np.r_[np.full(u.shape[1] - 1, lam_u), 0.0, np.full(h.shape[1], lam_h)]
    aug = np.concatenate([X, np.diag(np.sqrt(pen))])
    return np.linalg.lstsq(aug, np.concatenate([t, np.zeros((len(pen), t.shape[1]))]), rcond=None)[0]


def _head(model):
    return np.concatenate([model.head.linear.weight.detach().double().numpy().T,
                           model.head.linear.bias.detach().double().numpy()[None],
                           model.head.proj.weight.detach().double().numpy().T])


@pytest.mark.parametrize("few_shot,method", [(10, "features' Gram"), (1, "samples' kernel")])
def test_exact_head_is_the_ridge_optimum_on_the_frozen_features(backbone, tmp_path, few_shot, method):
    run = _probe_run(backbone, tmp_path / "run", **{"data.few_shot_percent": few_shot})
    entry = run["stages"]["lp"]["history"][0]
    assert entry["solver"] == "exact" and method in entry["method"] and run["stages"]["lp"]["solver"] == "exact"
    lowest = min(row["val_mse"] for row in entry["search"])  # the search is recorded to 6 digits
    chosen = [row for row in entry["search"] if (row["alpha_linear"], row["alpha_llm"]) == pytest.approx(
        (entry["alpha_linear"], entry["alpha_llm"]), rel=1e-5)]
    assert chosen and chosen[0]["val_mse"] == pytest.approx(lowest, rel=1e-6)
    assert entry["val_loss"] == run["stages"]["lp"]["val"]["mse"] == pytest.approx(lowest, rel=1e-5)
    model, u, h, t = _frozen_design(tmp_path / "run", few_shot)
    assert entry["train_samples"] == len(t) and entry["features"] == h.shape[1]
    reference = _numpy_ridge(u, h, t, entry["alpha_linear"], entry["alpha_llm"])
    np.testing.assert_allclose(_head(model), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_exact_head_is_the_same_on_one_and_two_processes(backbone, tmp_path):
    one = _probe_run(backbone, tmp_path / "one")
    two = _probe_run(backbone, tmp_path / "two", processes=2, ds="zero2")
    assert two["world_size"] == 2
    e1, e2 = one["stages"]["lp"]["history"][0], two["stages"]["lp"]["history"][0]
    assert (e1["alpha_linear"], e1["alpha_llm"], e1["train_samples"]) == (e2["alpha_linear"], e2["alpha_llm"],
                                                                           e2["train_samples"])
    w1, w2 = (load_weights(tmp_path / name / "lp" / "weights.safetensors") for name in ("one", "two"))
    for name in ("head.proj.weight", "head.linear.weight", "head.linear.bias"):
        scale = w1[name].abs().max()
        assert torch.allclose(w1[name], w2[name], rtol=1e-5, atol=1e-5 * scale), name
    assert one["stages"]["lp"]["val"]["mse"] == pytest.approx(two["stages"]["lp"]["val"]["mse"], rel=1e-5)


def test_conjugate_gradient_gives_the_kernel_solution(backbone, tmp_path):
    fixed = {"data.few_shot_percent": 1, "stages.lp.penalty_linear": 0.01, "stages.lp.penalty_llm": 0.1}
    dual = _probe_run(backbone, tmp_path / "dual", **fixed)
    cg = _probe_run(backbone, tmp_path / "cg", **fixed, **{"train.ridge_max_gram_features": 64})
    assert "kernel" in dual["stages"]["lp"]["history"][0]["method"]
    assert cg["stages"]["lp"]["history"][0]["method"] == "conjugate gradient"
    a, b = (load_weights(tmp_path / name / "lp" / "weights.safetensors") for name in ("dual", "cg"))
    for name in ("head.proj.weight", "head.linear.weight", "head.linear.bias"):
        assert torch.allclose(a[name], b[name], rtol=1e-3, atol=1e-4 * a[name].abs().max()), name


def test_shortcut_with_an_infinite_llm_penalty_forecasts_as_rlinear(backbone, tmp_path):
    from llm4ts_scale.baselines.rlinear import fit_rlinear, forecast

    _probe_run(backbone, tmp_path / "run", **{"stages.lp.penalty_llm": 1e12, "data.val_stride": 1})
    model, _, _, _ = load_exported_model(tmp_path / "run")
    store = open_store(data_dir() / "ETTh1.csv")
    rlinear = fit_rlinear(store, L, H, few_shot_percent=10, score_test=False)
    batch = next(iter(make_loader(store, WindowSpec("test", L, H), 2048)))
    with torch.no_grad():
        ours = model(batch["x"], batch["x_mark"]).double()
    theirs = forecast(rlinear.weight, batch["x"])
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert model.head.proj.weight.abs().max() < 1e-6


def test_ft_keeps_the_lp_weights_when_no_epoch_validates_better(backbone, tmp_path):
    run = _probe_run(backbone, tmp_path / "run", **{"stages.ft.epochs": 1, "stages.ft.lr": 5.0,
                                                     "train.limit_train_batches": 4})
    ft = run["stages"]["ft"]
    assert ft["kept_start"] is True and ft["best_epoch"] == 0
    assert ft["start_val"]["mse"] == pytest.approx(run["stages"]["lp"]["val"]["mse"], rel=1e-5)
    assert ft["history"][0]["val_loss"] > ft["start_val"]["mse"]
    assert ft["val"] == ft["start_val"]
    lp = load_weights(tmp_path / "run" / "lp" / "weights.safetensors")
    kept = load_weights(tmp_path / "run" / "ft" / "weights.safetensors")
    assert set(lp) == set(kept) and all(torch.equal(lp[k], kept[k]) for k in lp)
