"""Test error per forecast step, for a trained model and the naive baseline on the same windows.

Why: one MSE over a whole horizon hides where a forecaster earns its keep. Errors grow with the
step; a model that only beats "repeat the last value" at the first few steps is a different result
than one that beats it everywhere. Sums are accumulated per step in float64 over every
(window, channel) pair of the split, on the standardized scale like metrics.json, so the mean over
steps equals the overall MSE/MAE the run reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StepErrors:
    """Per-step mean errors ([H] arrays) over `samples` (window, channel) pairs."""

    mse: np.ndarray
    mae: np.ndarray
    samples: int

    @property
    def overall_mse(self) -> float:
        return float(self.mse.mean())

    @property
    def overall_mae(self) -> float:
        return float(self.mae.mean())


class StepAccumulator:
    """Sums of squared and absolute errors per step."""

    def __init__(self, pred_len: int):
        self.sq = torch.zeros(pred_len, dtype=torch.float64)
        self.abs = torch.zeros(pred_len, dtype=torch.float64)
        self.samples = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        err = pred.detach().to("cpu", torch.float64) - target.detach().to("cpu", torch.float64)
        self.sq += err.square().sum(0)
        self.abs += err.abs().sum(0)
        self.samples += err.shape[0]

    def result(self) -> StepErrors:
        if self.samples == 0:
            raise ValueError("no samples were scored")
        return StepErrors((self.sq / self.samples).numpy(), (self.abs / self.samples).numpy(), self.samples)


def step_errors(loaded, store, split: str, seq_len: int, pred_len: int, batch_size: int,
                baseline: str = "naive") -> tuple[StepErrors, StepErrors]:
    """(model, baseline) per-step errors on every window of `split` (single process, no window dropped);
    `loaded`: an llm4ts_scale.inference.loading.LoadedModel."""
    from llm4ts_scale.baselines.simple import baseline_forecast
    from llm4ts_scale.data.windows import WindowSpec, make_loader

    ours, theirs = StepAccumulator(pred_len), StepAccumulator(pred_len)
    for batch in make_loader(store, WindowSpec(split, seq_len, pred_len), batch_size):
        x, y = batch["x"], batch["y"]
        ours.update(loaded.forecast(x, batch["x_mark"]), y)
        theirs.update(baseline_forecast(baseline, x, pred_len).float(), y)
    return ours.result(), theirs.result()


def checkpoint_steps(pred_len: int) -> list[int]:
    """1-based steps 1, H/4, H/2, 3H/4, H (rounded, without repeats) where the report tabulates errors."""
    steps = [1] + [max(1, round(pred_len * k / 4)) for k in (1, 2, 3, 4)]
    return sorted(set(steps))
