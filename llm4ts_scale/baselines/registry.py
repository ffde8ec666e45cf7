"""One face for every baseline: `fit(name, windows)` fits it on a run's windows and returns a `Fitted`, whose
`forecast(batch)` maps a batch ({x, known, past}) to [B, H], scored through the same windows, metrics and intervals
as the model. The run's closing comparison (llm4ts_scale/train/manager.py), `llm4ts-scale evaluate --baseline` and
the interval benchmark (benchmarks/bench_intervals.py) all go through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.store import SeriesStore


@dataclass(frozen=True)
class Windows:
    """What a baseline fits on: the store's training windows (few-shot honoured), deterministic for `seed`; the
    validation windows it selects on are its recipe's (PatchTST's val_stride; every one for the others)."""
    store: SeriesStore
    seq_len: int
    pred_len: int
    few_shot_percent: int = 100
    seed: int = 2023
    batch_size: int = 4096


@dataclass
class Fitted:
    name: str
    forecast: Callable[[dict], torch.Tensor]
    val: dict | None = None  # the validation metrics it was selected on (None: nothing was fitted)
    facts: dict = field(default_factory=dict)  # for run.json and evaluate's JSON line: epochs, penalties, time, ...
    note: str = ""  # one phrase for the log
    val_stride: int = 1  # the validation windows it was selected on (where intervals are calibrated)


def _simple(name: str, windows: Windows, period: int | None = None, **_) -> Fitted:
    from llm4ts_scale.baselines.simple import baseline_forecast, check_period

    check_period(name, period, windows.seq_len)
    notes = {"naive": "repeat the last value", "mean": "the look-back mean", "seasonal": f"repeat the last {period}"}
    return Fitted(name, lambda b: baseline_forecast(name, b["x"], windows.pred_len, period=period), note=notes[name])


def _rlinear(name: str, windows: Windows, **_) -> Fitted:
    from llm4ts_scale.baselines.rlinear import fit_rlinear, forecast

    w = windows
    rl = fit_rlinear(w.store, w.seq_len, w.pred_len, few_shot_percent=w.few_shot_percent, batch_size=w.batch_size,
                     score_test=False)
    cov = {"alpha_cov": rl.alpha_cov} if rl.alpha_cov else {}
    return Fitted(name, lambda b: forecast(rl.weight, b["x"], b.get("known"), b.get("past")), rl.val,
                  {"alpha": rl.alpha, **cov, "few_shot_percent": w.few_shot_percent, "train_windows": rl.train_windows,
                   "wall_time_s": round(rl.wall_time_s, 3)},
                  f"RevIN + ridge on the look-back{' and covariates' if cov else ''}, closed form in "
                  f"{rl.wall_time_s:.0f} s, penalty {rl.alpha:.3g} chosen on validation")


def _by_epochs(name: str, windows: Windows, recipe=None, show_progress: bool = False, **_) -> Fitted:
    """DLinear or PatchTST: trained on the training windows, the best-validation epoch kept."""
    w = windows
    if name == "patchtst":
        from llm4ts_scale.baselines.patchtst import PatchTSTRecipe, train_patchtst

        recipe = recipe or PatchTSTRecipe()
        if recipe.patch_len > w.seq_len:
            raise UserError(f"patchtst patch_len={recipe.patch_len} exceeds seq_len {w.seq_len}; lower it")
        result = train_patchtst(w.store, w.seq_len, w.pred_len, few_shot_percent=w.few_shot_percent, seed=w.seed,
                                recipe=recipe, show_progress=show_progress)
        settings, val_stride = {"lr": recipe.lr, "recipe": dataclasses.asdict(recipe)}, recipe.val_stride
        what = "a transformer trained from scratch on the same windows"
    else:
        from llm4ts_scale.baselines.dlinear import DLinearRecipe, train_dlinear

        recipe = recipe or DLinearRecipe()
        result = train_dlinear(w.store, w.seq_len, w.pred_len, few_shot_percent=w.few_shot_percent, seed=w.seed,
                               recipe=recipe, show_progress=show_progress)
        settings, val_stride = {"lr": recipe.lr}, 1
        what = "trained on the same training windows"
    model = result.model
    return Fitted(name, lambda b: model(b["x"]), result.val,
                  {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "seed": w.seed, **settings,
                   "few_shot_percent": w.few_shot_percent, "train_windows": result.train_windows,
                   "wall_time_s": round(result.wall_time_s, 3)},
                  f"{what} in {result.wall_time_s:.0f} s, epoch {result.best_epoch} of {len(result.history)} chosen "
                  "on validation", val_stride)


FITTERS: dict[str, Callable[..., Fitted]] = {"naive": _simple, "seasonal": _simple, "mean": _simple,
                                             "dlinear": _by_epochs, "patchtst": _by_epochs, "rlinear": _rlinear}
NAMES = tuple(FITTERS)
TRAINED = ("dlinear", "patchtst", "rlinear")  # fitted on the training split


def fit(name: str, windows: Windows, *, period: int | None = None, recipe=None, show_progress: bool = False) -> Fitted:
    """Fit baseline `name` on `windows` (`period`: seasonal's season; `recipe`: DLinear's or PatchTST's settings)."""
    if name not in FITTERS:
        raise UserError(f"baseline {name!r} is unknown; use {', '.join(NAMES)}")
    return FITTERS[name](name, windows, period=period, recipe=recipe, show_progress=show_progress)
