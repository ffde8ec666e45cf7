"""Exact linear probing (`stages.lp.solver: exact`): the forecasting head as the optimum of a ridge
objective on the frozen features, its penalties chosen on validation, in place of SGD epochs.

During linear probing nothing but the head trains, so the head's best weights are the solution of a
least-squares problem on the frozen features. One pass over the training windows accumulates that
problem's normal equations (llm4ts_scale/stats/ridge.py), summed across ranks; one pass over the validation
windows keeps their features; then every rank solves the same system for each candidate penalty and
keeps the one with the lowest validation MSE (on the data's standardized scale, as the SGD stages are
validated). The head that comes out does not depend on the number of processes.

The design, per (window, channel) sample, in the head's own (RevIN-normalized) units:
  h = the backbone's hidden states, flattened [T * D]     -> the flatten head's weight (no bias)
  u = [z, 1], z the RevIN-normalized look-back [L + 1]    -> the shortcut Linear(L -> H) (model.head:
                                                             flatten+linear), its bias unpenalized
      + the covariates' features, when the data has them     -> the head's Linear(width -> H), its own penalty
  t = the target y mapped through the inverse of RevIN's de-normalization
The fit is unweighted in these units (as rlinear's, which validated better than a fit weighted back to
the data's scale); dropout is off, as at inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from llm4ts_scale.core.precision import autocast
from llm4ts_scale.core.weights import gathered, load_tunable_state
from llm4ts_scale.data.windows import rank_num_samples
from llm4ts_scale.evaluation import gather_rows, lockstep_batches, release_gathered
from llm4ts_scale.stats.metrics import MetricAccumulator
from llm4ts_scale.stats.ridge import (
    DualBlock,
    GramAccumulator,
    PrimalBlock,
    ValidationSet,
    fit_conjugate_gradient,
    fit_direct,
    rows_times,
    with_intercept,
)


@dataclass
class ProbeResult:
    val: dict  # metrics of the solved head on the validation windows (MetricAccumulator.compute())
    train_loss: float  # mean squared error of the fit on the training windows, in the head's units
    entry: dict = field(default_factory=dict)  # what run.json records: penalties, search, method, sizes


def _reducer(accelerator):
    if accelerator.num_processes == 1:
        return lambda t: t
    import torch.distributed as dist

    def reduce(t: torch.Tensor) -> torch.Tensor:  # in place: the callers pass their own sums (F x F at most once)
        dist.all_reduce(t)
        return t

    return reduce


def choose_method(samples: int, features: int, max_gram: int) -> str:
    """primal: the F x F Gram (F <= N); dual: the N x N kernel (N < F, the few-shot case); cg: neither fits."""
    if min(samples, features) > max_gram:
        return "cg"
    return "primal" if features <= samples else "dual"


class _Design:
    """Per-batch pieces of the ridge design, computed the same way for the train and validation passes."""

    def __init__(self, model, unwrapped, device, precision: str):
        self.model, self.unwrapped, self.device, self.precision = model, unwrapped, device, precision
        self.shortcut = unwrapped.head.linear is not None
        self.n_cov = unwrapped.head.cov.in_features if unwrapped.head.cov is not None else 0

    def __call__(self, batch: dict):
        revin = self.unwrapped.revin
        x, y = batch["x"], batch["y"]
        with autocast(self.device, self.precision):
            hidden = self.model(x, batch["x_mark"], task="features")
        h = hidden.float().flatten(1)
        with gathered(list(revin.parameters())):  # used outside the model's forward: gathered by hand under ZeRO-3
            stats = revin.statistics(x)
            u = with_intercept(revin.normalize(x, stats).float()) if self.shortcut else None
            t = revin.to_head_space(y, stats).float()
        if self.n_cov:
            u = torch.cat([u, self.unwrapped.covariate_features(batch.get("known"), batch.get("past")).float()], dim=1)
        return u, h, t, stats


def _cat(parts: list[tuple], i: int, empty: torch.Tensor) -> torch.Tensor:
    return torch.cat([p[i] for p in parts]) if parts else empty


def fit_exact_head(recipe) -> ProbeResult:
    """Solve the head of `recipe`'s model (a StageRecipe of a probing stage) and load it into the model."""
    acc, config, cfg = recipe.accelerator, recipe.config, recipe.stage_cfg
    d, unwrapped = config.data, recipe.unwrapped
    started = time.time()
    reduce = _reducer(acc)
    design = _Design(recipe.model, unwrapped, acc.device, recipe.precision)
    features = unwrapped.feature_shape[0] * unwrapped.feature_shape[1]
    samples = sum(rank_num_samples(recipe.store, recipe.windows("train"), r, acc.num_processes)
                  for r in range(acc.num_processes))
    method = choose_method(samples, features, config.train.ridge_max_gram_features)
    was_training = recipe.model.training
    recipe.model.eval()
    pu = d.seq_len + 1 + design.n_cov if design.shortcut else 0

    gram = GramAccumulator(pu, features, d.pred_len, llm_gram=method == "primal", n_cov=design.n_cov)
    train_parts: list[tuple] = []  # (u, h, t) of this rank's training rows, held for the dual and cg methods
    val_parts: list[tuple] = []
    with torch.no_grad():
        for batch, mask in lockstep_batches(recipe.store, recipe.windows("train"), recipe.eval_batch, recipe.topology,
                                            desc="exact LP: train features"):
            u, h, t, _ = design(batch)
            if mask is not None:  # a rank that ran out runs masked copies (ZeRO-3 lockstep): nothing to add
                continue
            gram.update(u, h, t)
            if method != "primal":
                train_parts.append((u, h, t))
        for batch, mask in lockstep_batches(recipe.store, recipe.windows("val"), recipe.eval_batch, recipe.topology,
                                            desc="exact LP: validation features"):
            u, h, t, stats = design(batch)
            if mask is None:
                val_parts.append((u, h, t, stats, batch["y"]))
    system = gram.finish(reduce)
    release_gathered(recipe.model)
    revin = unwrapped.revin
    with gathered(list(revin.parameters())):
        # an error in head units times std / (affine weight) is the error on the data's standardized scale
        weight = (revin.weight + revin.eps ** 2).detach().double().clone() if revin.weight is not None else 1.0
    val_set = ValidationSet(_cat(val_parts, 0, torch.zeros(0, pu)) if pu else None,
                            _cat(val_parts, 1, torch.zeros(0, features)), _cat(val_parts, 2, torch.zeros(0, d.pred_len)),
                            reduce=reduce,
                            scale=torch.cat([p[3][1] for p in val_parts]).double() / weight if val_parts else torch.zeros(0, 1))
    fixed = dict(fixed_linear=None if cfg.penalty_linear == "auto" else float(cfg.penalty_linear),
                 fixed_llm=None if cfg.penalty_llm == "auto" else float(cfg.penalty_llm),
                 fixed_cov=None if cfg.penalty_cov == "auto" else float(cfg.penalty_cov), progress=recipe.log)
    train_h = _cat(train_parts, 1, torch.zeros(0, features))
    if method == "cg":
        fit = fit_conjugate_gradient(system, val_set, train_h, reduce=reduce, **fixed)
        method_name = "conjugate gradient"
    else:
        if method == "dual":
            block = DualBlock(gather_rows(_cat(train_parts, 0, torch.zeros(0, pu))) if pu else None,
                              gather_rows(train_h), gather_rows(_cat(train_parts, 2, torch.zeros(0, d.pred_len))),
                              val_set)
        else:
            block = PrimalBlock(system, val_set)
        del train_parts, train_h
        fit = fit_direct(system, val_set, block, **fixed)
        method_name = block.method
    _install(unwrapped, fit, d.seq_len)

    metrics = MetricAccumulator()
    with gathered(list(revin.parameters())):
        for u, h, _, stats, y in val_parts:
            pred = rows_times(h, fit.Wh) + (u.double() @ fit.Wu if fit.Wu is not None else 0)
            metrics.update(revin.denormalize(pred.float(), stats), y)
    metrics.reduce()
    val = metrics.compute()
    recipe.model.train(was_training)
    entry = {"solver": "exact", "method": method_name, "features": features, "train_samples": system.count,
             "alpha_linear": fit.alpha_linear, "alpha_llm": fit.alpha_llm,
             **({"alpha_cov": fit.alpha_cov, "covariate_features": design.n_cov} if design.n_cov else {}),
             "search": [{k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in row.items()}
                        for row in fit.search],
             "time_s": round(time.time() - started, 3)}
    return ProbeResult(val=val, train_loss=fit.train_mse, entry=entry)


def _install(unwrapped, fit, seq_len: int) -> None:
    """Copy the solution into the head (gathered under ZeRO-3, like any tunable state)."""
    state = {"head.proj.weight": fit.Wh.T.float().contiguous()}
    if fit.Wu is not None:
        state["head.linear.weight"] = fit.Wu[:seq_len].T.float().contiguous()
        state["head.linear.bias"] = fit.Wu[seq_len].float().contiguous()
        if fit.Wu.shape[0] > seq_len + 1:  # the covariates' map
            state["head.cov.weight"] = fit.Wu[seq_len + 1:].T.float().contiguous()
    load_tunable_state(unwrapped, state, source="exact linear probing")
