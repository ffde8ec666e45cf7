"""RLinear (Li et al. 2023, "Revisiting Long-term Time Series Forecasting: An Investigation on Linear
Mapping"): RevIN + one linear map [L -> H] shared by the channels, solved exactly.

The honest floor for a forecaster that claims to use its look-back well: the look-back is normalized
with its own mean and std (as our model's RevIN does it), a ridge regression (with an unpenalized
intercept) maps it to the normalized next H values, and the forecast is de-normalized. The penalty is
chosen on the validation split from a log grid (llm4ts_scale/stats/ridge.py); the test split is scored once.
Closed form over every training window: seconds, deterministic, no seed. With covariates in the data
(data.covariates), their look-back-normalized values join the design (llm4ts_scale/core/covariates.py) with a
penalty of their own: rlinear then is the linear shortcut of the model, covariates included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from llm4ts_scale.core.covariates import covariate_features, covariate_width
from llm4ts_scale.data.store import SeriesStore
from llm4ts_scale.data.windows import WindowSpec, make_loader
from llm4ts_scale.stats.metrics import MetricAccumulator
from llm4ts_scale.stats.ridge import GramAccumulator, ValidationSet, fit_linear, with_intercept

REVIN_EPS = 1e-5  # as llm4ts_scale/model/encoder.py:RevIN


def revin_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window mean and std [B, 1] (population std with the model's epsilon)."""
    mean = x.mean(dim=1, keepdim=True)
    std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)
    return mean, std


@dataclass
class RLinearResult:
    test: dict | None
    val: dict
    alpha: float  # the chosen penalty, relative to the mean diagonal of the Gram
    search: list[dict] = field(default_factory=list)
    train_windows: int = 0
    wall_time_s: float = 0.0
    weight: torch.Tensor | None = None  # [L + 1 (+ covariate features), H]: the look-back's weights, the intercept, ...
    alpha_cov: float | None = None  # the covariates' penalty, when the data has covariates


def design(x: torch.Tensor, known: torch.Tensor | None = None, past: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L + 1 (+ covariate features)]: the RevIN-normalized look-back, a constant 1, the covariates."""
    x = x.double()
    mean, std = revin_statistics(x)
    u = with_intercept((x - mean) / std)
    cov = covariate_features(known, past, x.shape[1])
    return u if cov is None else torch.cat([u, cov.double()], dim=1)


def _normalized(batch: dict) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    x, y = batch["x"].double(), batch["y"].double()
    stats = revin_statistics(x)
    mean, std = stats
    return design(x, batch.get("known"), batch.get("past")), (y - mean) / std, stats


def _design(store: SeriesStore, split: str, seq_len: int, pred_len: int, batch_size: int, few_shot_percent: int = 100,
            window_step: int = 1):
    for batch in make_loader(store, WindowSpec(split, seq_len, pred_len, few_shot_percent, window_step), batch_size):
        yield batch, *_normalized(batch)


def forecast(weight: torch.Tensor, x: torch.Tensor, known: torch.Tensor | None = None,
             past: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L] look-backs (and their covariates) -> [B, H] forecasts in the input's units."""
    x = x.double()
    mean, std = revin_statistics(x)
    return (design(x, known, past) @ weight) * std + mean


def score(weight: torch.Tensor, store: SeriesStore, split: str, seq_len: int, pred_len: int,
          batch_size: int = 4096, window_step: int = 1) -> dict:
    metrics = MetricAccumulator()
    for batch in make_loader(store, WindowSpec(split, seq_len, pred_len, step=window_step), batch_size):
        metrics.update(forecast(weight, batch["x"], batch.get("known"), batch.get("past")), batch["y"])
    return metrics.compute()


def fit_rlinear(store: SeriesStore, seq_len: int, pred_len: int, *, few_shot_percent: int = 100, val_stride: int = 1,
                alpha: float | None = None, score_test: bool = True, batch_size: int = 4096) -> RLinearResult:
    """Fit on the train split (few-shot honoured), choose the penalty on validation (every `val_stride`-th
    window), score the test split whole. `alpha` fixes the relative penalty instead."""
    started = time.perf_counter()
    n_cov = covariate_width(len(store.known), len(store.past), seq_len, pred_len)
    gram = GramAccumulator(seq_len + 1 + n_cov, 0, pred_len, n_cov=n_cov)
    for _, u, t, _ in _design(store, "train", seq_len, pred_len, batch_size, few_shot_percent):
        gram.update(u, None, t)
    system = gram.finish()
    val_u, val_t, val_std = zip(*[(u, t, std) for _, u, t, (_, std) in _design(store, "val", seq_len, pred_len,
                                                                               batch_size, window_step=val_stride)])
    val_set = ValidationSet(torch.cat(val_u), None, torch.cat(val_t), scale=torch.cat(val_std))
    fit = fit_linear(system, val_set, fixed=alpha)
    val = score(fit.Wu, store, "val", seq_len, pred_len, batch_size, val_stride)
    test = score(fit.Wu, store, "test", seq_len, pred_len, batch_size) if score_test else None
    return RLinearResult(test=test, val=val, alpha=fit.alpha_linear, search=fit.search, train_windows=system.count,
                         wall_time_s=time.perf_counter() - started, weight=fit.Wu, alpha_cov=fit.alpha_cov)
