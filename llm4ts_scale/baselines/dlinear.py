"""DLinear (Zeng et al., AAAI 2023), trained and scored on the same windows and metrics as our models.

A learned floor next to the fixed baselines: if an LLM cannot beat two linear maps on a
trend/seasonal split of the look-back, its extra cost buys nothing. Channel-independent, as
our loader yields one channel per window: one set of weights serves every channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm4ts_scale.baselines.epochs import EpochPlan, TrainedBaseline, check_plan, fit_by_epochs
from llm4ts_scale.data.store import SeriesStore
from llm4ts_scale.data.windows import WindowSpec


class DLinear(nn.Module):
    """x [B, L] -> forecast [B, H]: Linear(seasonal) + Linear(trend), trend = moving average of x."""

    def __init__(self, seq_len: int, pred_len: int, kernel_size: int = 25):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            # an even kernel would shorten the trend by one step and misalign it with x
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.seq_len, self.pred_len, self.kernel_size = seq_len, pred_len, kernel_size
        self.seasonal = nn.Linear(seq_len, pred_len)
        self.trend = nn.Linear(seq_len, pred_len)

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(seasonal, trend), both [B, L]. The ends are padded by repeating the first/last value
        (k-1)//2 times, so the average keeps the input's length and does not sag towards zero."""
        pad = (self.kernel_size - 1) // 2
        padded = torch.cat([x[:, :1].expand(-1, pad), x, x[:, -1:].expand(-1, pad)], dim=1)
        trend = F.avg_pool1d(padded.unsqueeze(1), self.kernel_size, stride=1).squeeze(1)
        return x - trend, trend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"x must be [B, {self.seq_len}], got shape {tuple(x.shape)}")
        seasonal, trend = self.decompose(x)
        return self.seasonal(seasonal) + self.trend(trend)


@dataclass(frozen=True)
class DLinearRecipe:
    """Time-Series-Library's DLinear training settings: Adam on MSE, the lr halved every epoch (epoch n
    trains at lr * 0.5**(n-1)), early stopping after `patience` epochs without a lower validation MSE."""

    epochs: int = 10
    lr: float = 0.005
    batch_size: int = 32
    patience: int = 3
    eval_batch_size: int = 512

    def plan(self) -> EpochPlan:
        check_plan({"epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
                    "eval_batch_size": self.eval_batch_size, "lr": self.lr})
        lr = self.lr
        return EpochPlan(self.epochs, lambda epoch: lr * 0.5 ** (epoch - 1), self.batch_size, self.patience,
                         self.eval_batch_size)


def train_dlinear(store: SeriesStore, seq_len: int, pred_len: int, *, few_shot_percent: int = 100,
                  recipe: DLinearRecipe = DLinearRecipe(), seed: int = 2023, show_progress: bool = False) -> TrainedBaseline:
    """Train on the train split (few-shot honoured), keep the best-validation epoch, score test once
    (llm4ts_scale/baselines/epochs.py: deterministic for a seed, on one thread)."""
    return fit_by_epochs(lambda: DLinear(seq_len, pred_len), store, WindowSpec("train", seq_len, pred_len, few_shot_percent),
                         recipe.plan(), seed=seed, desc="dlinear epochs", show_progress=show_progress)
