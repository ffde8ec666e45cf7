"""DLinear (Zeng et al., AAAI 2023), trained and scored on the same windows and metrics as our models.

A learned floor next to the fixed baselines: if an LLM cannot beat two linear maps on a
trend/seasonal split of the look-back, its extra cost buys nothing. Channel-independent, as
our loader yields one channel per window: one set of weights serves every channel.
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llm4ts_scale.core.metrics import MetricAccumulator
from llm4ts_scale.data.store import SeriesStore
from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader


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


@contextmanager
def _one_thread():
    """Run torch on one intra-op thread, then restore the caller's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class DLinearRecipe:
    """Time-Series-Library's DLinear training settings."""

    epochs: int = 10
    lr: float = 0.005
    batch_size: int = 32
    patience: int = 3
    eval_batch_size: int = 512


@dataclass
class DLinearResult:
    """Metrics as MetricAccumulator.compute() returns them; epochs are numbered from 1."""

    test: dict
    val: dict  # at best_epoch
    best_epoch: int
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, lr, train_loss, val_mse
    seed: int = 0
    wall_time_s: float = 0.0
    train_windows: int = 0  # (window, channel) samples per training epoch


@torch.no_grad()
def score(model: nn.Module, store: SeriesStore, split: str, seq_len: int, pred_len: int,
          batch_size: int = 512) -> dict:
    """Metrics over every window of `split`, each scored once (the loader keeps the short last batch)."""
    model.eval()
    acc = MetricAccumulator()
    for batch in make_loader(store, WindowSpec(split, seq_len, pred_len), batch_size):
        acc.update(model(batch["x"]), batch["y"])
    return acc.compute()


def train_dlinear(store: SeriesStore, seq_len: int, pred_len: int, *, few_shot_percent: int = 100,
                  recipe: DLinearRecipe = DLinearRecipe(), seed: int = 2023, show_progress: bool = False) -> DLinearResult:
    """Train on the train split (few-shot honoured), keep the best-validation epoch, score test once.

    The recipe is Time-Series-Library's for DLinear: Adam on MSE, batch 32, lr halved every
    epoch (epoch n trains at lr * 0.5**(n-1)), early stopping after `patience` epochs without a
    lower validation MSE. Deterministic for a given seed: the seed fixes the initial weights
    (without touching torch's global RNG) and the loader's shuffle order, and torch runs on one
    thread meanwhile, so the float rounding (hence the result) does not depend on the core count.
    One thread is also the faster choice: these matmuls are far too small for intra-op threads,
    whose spinning doubled the wall time on a busy 2-core machine.
    """
    epochs, lr, batch_size, patience, eval_batch_size = (recipe.epochs, recipe.lr, recipe.batch_size, recipe.patience,
                                                         recipe.eval_batch_size)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience),
                        ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    with _one_thread():
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DLinear(seq_len, pred_len)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

        history: list[dict] = []
        best_state, best_val, best_epoch, stale = None, None, 0, 0
        train_windows = 0
        bar = tqdm(total=epochs, desc="dlinear epochs", unit="epoch", disable=not show_progress, file=sys.stderr,
                   leave=False)
        for epoch in range(1, epochs + 1):
            epoch_lr = lr * 0.5 ** (epoch - 1)
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr
            model.train()
            loss_sum, seen = 0.0, 0
            loader = make_loader(store, WindowSpec("train", seq_len, pred_len, few_shot_percent), batch_size,
                                 shuffle=Shuffle(seed, epoch - 1))
            for batch in loader:
                loss = F.mse_loss(model(batch["x"]), batch["y"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * batch["x"].shape[0]  # batch mean -> sum, so the short last batch weighs right
                seen += batch["x"].shape[0]
            train_windows = seen
            val = score(model, store, "val", seq_len, pred_len, eval_batch_size)
            history.append({"epoch": epoch, "lr": epoch_lr, "train_loss": loss_sum / seen, "val_mse": val["mse"]})
            improved = best_val is None or val["mse"] < best_val["mse"]
            if improved:
                best_state, best_val, best_epoch, stale = copy.deepcopy(model.state_dict()), val, epoch, 0
            else:
                stale += 1
            bar.update(1)
            bar.set_postfix(lr=f"{epoch_lr:.3g}", train_mse=f"{loss_sum / seen:.4f}", val_mse=f"{val['mse']:.4f}",
                            best_epoch=best_epoch)
            if stale >= patience:
                break

        bar.close()
        model.load_state_dict(best_state)
        test = score(model, store, "test", seq_len, pred_len, eval_batch_size)
        return DLinearResult(test=test, val=best_val, best_epoch=best_epoch, history=history, seed=seed,
                             wall_time_s=time.perf_counter() - start, train_windows=train_windows)
