"""The exact ridge solver (llm4ts_scale/stats/ridge.py) against numpy's least squares on the augmented system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4ts_scale.stats.ridge import (
    DualBlock,
    GramAccumulator,
    PrimalBlock,
    ValidationSet,
    fit_conjugate_gradient,
    fit_direct,
    fit_linear,
    with_intercept,
)


def _problem(n=600, L=12, F=40, H=5, seed=0):
    """A design with a linear block (look-back + intercept) and correlated llm features."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g, dtype=torch.float64)
    mix = torch.randn(L, F, generator=g, dtype=torch.float64)
    h = torch.tanh(z @ mix) + 0.3 * torch.randn(n, F, generator=g, dtype=torch.float64)
    t = z[:, :3] @ torch.randn(3, H, generator=g, dtype=torch.float64) + 0.5 * torch.sin(h[:, :H]) \
        + 0.1 * torch.randn(n, H, generator=g, dtype=torch.float64) + 0.7
    return with_intercept(z), h, t


def _reference(u, h, t, lam_u, lam_h):
    """numpy lstsq of [u h; sqrt(P)] W = [t; 0] (intercept unpenalized): an independent path to the optimum."""
    X = np.concatenate([a.numpy() for a in (u, h) if a is not None], axis=1)
    pen = []
    if u is not None:
        pen += [lam_u] * (u.shape[1] - 1) + [0.0]
    if h is not None:
        pen += [lam_h] * h.shape[1]
    aug = np.concatenate([X, np.diag(np.sqrt(pen))])
    rhs = np.concatenate([t.numpy(), np.zeros((len(pen), t.shape[1]))])
    return np.linalg.lstsq(aug, rhs, rcond=None)[0]


def _system(u, h, t, batches=7, llm_gram=True):
    acc = GramAccumulator(u.shape[1] if u is not None else 0, h.shape[1] if h is not None else 0, t.shape[1],
                          llm_gram=llm_gram)
    for idx in torch.arange(t.shape[0]).chunk(batches):
        acc.update(u[idx] if u is not None else None, h[idx] if h is not None else None, t[idx])
    return acc.finish()


def test_two_block_direct_solve_equals_numpy_least_squares():
    u, h, t = _problem()
    system = _system(u[:400], h[:400], t[:400])
    val = ValidationSet(u[400:], h[400:], t[400:])
    fit = fit_direct(system, val, fixed_linear=0.03, fixed_llm=0.2)
    lam_u, lam_h = 0.03 * system.scale("linear"), 0.2 * system.scale("llm")
    ref = _reference(u[:400], h[:400], t[:400], lam_u, lam_h)
    ours = torch.cat([fit.Wu, fit.Wh]).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    pred = np.concatenate([u[400:], h[400:]], 1) @ ref
    assert fit.val_mse == pytest.approx(float(((pred - t[400:].numpy()) ** 2).mean()), rel=1e-10)


def test_the_search_keeps_the_candidate_with_the_lowest_validation_error():
    u, h, t = _problem(seed=1)
    system = _system(u[:400], h[:400], t[:400])
    val = ValidationSet(u[400:], h[400:], t[400:])
    fit = fit_direct(system, val)
    assert fit.val_mse == min(row["val_mse"] for row in fit.search)
    best = min(fit.search, key=lambda r: r["val_mse"])
    assert (best["alpha_linear"], best["alpha_llm"]) == (fit.alpha_linear, fit.alpha_llm)
    # a different pair does worse on validation
    other = fit_direct(system, val, fixed_linear=fit.alpha_linear * 100, fixed_llm=fit.alpha_llm / 100)
    assert other.val_mse > fit.val_mse


def test_flatten_head_alone_and_rlinear_alone_equal_numpy():
    u, h, t = _problem(seed=2)
    flat = fit_direct(_system(None, h[:400], t[:400]), ValidationSet(None, h[400:], t[400:]), fixed_llm=0.5)
    system = _system(None, h[:400], t[:400])
    np.testing.assert_allclose(flat.Wh.numpy(), _reference(None, h[:400], t[:400], 0, 0.5 * system.scale("llm")),
                               rtol=1e-8, atol=1e-12)
    lin_system = _system(u[:400], None, t[:400])
    lin = fit_linear(lin_system, ValidationSet(u[400:], None, t[400:]), fixed=0.01)
    np.testing.assert_allclose(lin.Wu.numpy(), _reference(u[:400], None, t[:400], 0.01 * lin_system.scale("linear"), 0),
                               rtol=1e-8, atol=1e-12)


def test_conjugate_gradient_agrees_with_the_direct_solve():
    u, h, t = _problem(n=900, F=60, seed=3)
    train_h = h[:700].float()
    direct_system = _system(u[:700], train_h, t[:700])
    cg_system = _system(u[:700], train_h, t[:700], llm_gram=False)
    assert cg_system.C is None and torch.allclose(cg_system.diag_h, torch.diagonal(direct_system.C))
    val = ValidationSet(u[700:], h[700:].float(), t[700:])
    direct = fit_direct(direct_system, val, fixed_linear=0.05, fixed_llm=0.1)
    cg = fit_conjugate_gradient(cg_system, val, train_h, fixed_linear=0.05, fixed_llm=0.1)
    np.testing.assert_allclose(torch.cat([cg.Wu, cg.Wh]).numpy(), torch.cat([direct.Wu, direct.Wh]).numpy(),
                               rtol=1e-4, atol=1e-6)
    assert cg.val_mse == pytest.approx(direct.val_mse, rel=1e-6)


def test_validation_error_is_weighted_back_to_the_data_scale():
    u, h, t = _problem(seed=4)
    system = _system(u[:400], None, t[:400])
    scale = torch.linspace(0.5, 2.0, 200, dtype=torch.float64)[:, None]
    fit = fit_linear(system, ValidationSet(u[400:], None, t[400:], scale=scale), fixed=0.1)
    err = (u[400:] @ fit.Wu - t[400:]) * scale
    assert fit.val_mse == pytest.approx(float((err ** 2).mean()), rel=1e-12)


def test_gram_sums_do_not_depend_on_how_the_samples_are_split():
    """What two ranks add up equals what one process accumulates (the head is world-size independent)."""
    u, h, t = _problem(seed=5)
    h = h.float()
    whole = _system(u, h, t, batches=1)
    a, b = _system(u[:250], h[:250], t[:250], batches=3), _system(u[250:], h[250:], t[250:], batches=5)
    for name in ("A", "B", "C", "bu", "bh"):
        np.testing.assert_allclose((getattr(a, name) + getattr(b, name)).numpy(), getattr(whole, name).numpy(),
                                   rtol=1e-6, atol=1e-4)
    assert a.count + b.count == whole.count == 600


@pytest.mark.parametrize("with_linear", [True, False])
def test_dual_kernel_path_equals_the_primal_gram_path(with_linear):
    """Fewer samples than features (the few-shot case): the N x N kernel gives the primal solution."""
    u, h, t = _problem(n=260, L=6, F=300, seed=6)
    u = u if with_linear else None
    tr = slice(0, 180)
    system = _system(u[tr] if u is not None else None, h[tr], t[tr])
    val = ValidationSet(u[180:] if u is not None else None, h[180:], t[180:])
    primal = fit_direct(system, val, PrimalBlock(system, val), fixed_linear=0.02, fixed_llm=0.3)
    dual = fit_direct(system, val, DualBlock(u[tr] if u is not None else None, h[tr], t[tr], val),
                      fixed_linear=0.02, fixed_llm=0.3)
    for a, b in ((primal.Wh, dual.Wh), (primal.Wu, dual.Wu)):
        if a is not None:
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-9)
    ref = _reference(u[tr] if u is not None else None, h[tr], t[tr], 0.02 * system.scale("linear") if u is not None else 0,
                     0.3 * system.scale("llm"))
    np.testing.assert_allclose(dual.Wh.numpy(), ref[-300:], rtol=1e-6, atol=1e-9)
    assert dual.val_mse == pytest.approx(primal.val_mse, rel=1e-9)
    assert dual.train_mse == pytest.approx(primal.train_mse, rel=1e-6)
