"""The training loop the learned baselines share (DLinear, PatchTST): epochs of Adam on the few-shot
training windows, the best-validation epoch kept, the test split scored once with it.

Deterministic for a seed: the seed fixes the initial weights and every dropout mask (torch's global RNG
is forked, so the caller's stream is untouched) and the loader's shuffle order, and torch runs on one
thread meanwhile, so the float rounding (hence the result) does not depend on the core count. One
thread is also the faster choice for these small models: intra-op threads spinning on tiny matmuls
doubled the wall time on a busy 2-core machine.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llm4ts_scale.data.store import SeriesStore
from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader
from llm4ts_scale.stats.metrics import MetricAccumulator


@dataclass
class TrainedBaseline:
    """Metrics as MetricAccumulator.compute() returns them; epochs are numbered from 1."""

    test: dict
    val: dict  # at best_epoch
    best_epoch: int
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, lr, train_loss, val_mse
    seed: int = 0
    wall_time_s: float = 0.0
    train_windows: int = 0  # (window, channel) samples per training epoch
    model: nn.Module | None = None  # with the best-validation weights


@dataclass(frozen=True)
class EpochPlan:
    """How a baseline trains: at most `epochs` epochs of `batch_size` windows, the lr of epoch n (from 1)
    given by `lr_at`, early stopping after `patience` epochs without a lower validation MSE."""

    epochs: int
    lr_at: Callable[[int], float]
    batch_size: int
    patience: int
    eval_batch_size: int = 512
    max_grad_norm: float | None = None
    val_stride: int = 1  # select on every k-th validation window (the LLM's data.val_stride); test is whole


@contextmanager
def one_thread():
    """Run torch on one intra-op thread, then restore the caller's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def score(model: nn.Module, store: SeriesStore, split: str, seq_len: int, pred_len: int,
          batch_size: int = 512, step: int = 1) -> dict:
    """Metrics over every (`step`-th) window of `split`, each scored once (the loader keeps the short last batch)."""
    model.eval()
    acc = MetricAccumulator()
    for batch in make_loader(store, WindowSpec(split, seq_len, pred_len, step=step), batch_size):
        acc.update(model(batch["x"]), batch["y"])
    return acc.compute()


def check_plan(values: dict) -> None:
    """ValueError for a count below 1 or a learning rate that is not positive."""
    for name, value in values.items():
        if name == "lr":
            if not value > 0:
                raise ValueError(f"lr must be positive, got {value}")
        elif value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def fit_by_epochs(build: Callable[[], nn.Module], store: SeriesStore, train: WindowSpec, plan: EpochPlan, *,
                  seed: int = 2023, desc: str = "epochs", show_progress: bool = False) -> TrainedBaseline:
    """Train `build()` (x [B, L] -> forecast [B, H]) on the `train` windows (the few-shot share of the train
    split), keep the best-validation epoch, score the test split once."""
    seq_len, pred_len = train.seq_len, train.pred_len
    with one_thread(), torch.random.fork_rng(devices=[]):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr_at(1))
        history: list[dict] = []
        best_state, best_val, best_epoch, stale, train_windows = None, None, 0, 0, 0
        bar = tqdm(total=plan.epochs, desc=desc, unit="epoch", disable=not show_progress, file=sys.stderr, leave=False)
        for epoch in range(1, plan.epochs + 1):
            epoch_lr = plan.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr
            model.train()
            loss_sum, seen = 0.0, 0
            loader = make_loader(store, train, plan.batch_size, shuffle=Shuffle(seed, epoch - 1))
            for batch in loader:
                loss = F.mse_loss(model(batch["x"]), batch["y"])
                optimizer.zero_grad()
                loss.backward()
                if plan.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), plan.max_grad_norm)
                optimizer.step()
                loss_sum += loss.item() * batch["x"].shape[0]  # batch mean -> sum, so the short last batch weighs right
                seen += batch["x"].shape[0]
            train_windows = seen
            val = score(model, store, "val", seq_len, pred_len, plan.eval_batch_size, plan.val_stride)
            history.append({"epoch": epoch, "lr": epoch_lr, "train_loss": loss_sum / seen, "val_mse": val["mse"]})
            if best_val is None or val["mse"] < best_val["mse"]:
                best_state, best_val, best_epoch, stale = copy.deepcopy(model.state_dict()), val, epoch, 0
            else:
                stale += 1
            bar.update(1)
            bar.set_postfix(lr=f"{epoch_lr:.3g}", train_mse=f"{loss_sum / seen:.4f}", val_mse=f"{val['mse']:.4f}",
                            best_epoch=best_epoch)
            if stale >= plan.patience:
                break
        bar.close()
        model.load_state_dict(best_state)
        test = score(model, store, "test", seq_len, pred_len, plan.eval_batch_size)
        return TrainedBaseline(test=test, val=best_val, best_epoch=best_epoch, history=history, seed=seed,
                               wall_time_s=time.perf_counter() - start, train_windows=train_windows, model=model.eval())
