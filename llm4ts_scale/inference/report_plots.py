"""The report's two figures, drawn with matplotlib's object API (no pyplot: no global backend or
figure state, safe inside a training process or a test) and written atomically as PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from llm4ts_scale.core.io import atomic_write_bytes
from llm4ts_scale.core.stages import STAGES
from llm4ts_scale.inference.step_errors import StepErrors

STAGE_TITLES = {s.name: s.title for s in STAGES}


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_loss_curves(stages: dict, path: Path) -> Path | None:
    """One panel per stage with a history: train and validation loss per epoch, best epoch marked.
    Stages have their own panels because the alignment loss is not on the forecast's scale."""
    drawn = [(name, s) for name, s in stages.items() if s.get("history")]
    if not drawn:
        return None
    fig = Figure(figsize=(4.2 * len(drawn), 3.4))
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (name, stage) in zip(axes, drawn):
        history = stage["history"]
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
        ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss")
        best = stage.get("best_epoch")
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best})")
        ax.set_title(STAGE_TITLES.get(name, name))
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss")
    return _save(fig, path)


def plot_step_errors(model: StepErrors, naive: StepErrors, path: Path, baseline: str = "naive") -> Path:
    """Test MSE and MAE against the forecast step, model vs baseline."""
    steps = np.arange(1, len(model.mse) + 1)
    fig = Figure(figsize=(9, 3.4))
    for ax, key in zip(fig.subplots(1, 2), ("mse", "mae")):
        ax.plot(steps, getattr(model, key), label="model")
        ax.plot(steps, getattr(naive, key), linestyle="--", label=baseline)
        ax.set_xlabel("forecast step")
        ax.set_ylabel(f"test {key.upper()} (standardized)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"test error per step ({model.samples} window-channel pairs)")
    return _save(fig, path)


def plot_coverage_by_step(coverage: list[float], path: Path, calibration: str = "split") -> Path:
    """Test coverage of the 80 % interval at each forecast step against the promised 0.80."""
    steps = np.arange(1, len(coverage) + 1)
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.plot(steps, coverage, label=f"80 % interval ({calibration})")
    ax.axhline(0.8, color="grey", linestyle="--", label="promised 0.80")
    ax.set_ylim(min(0.5, min(coverage) - 0.05), 1.0)
    ax.set_xlabel("forecast step")
    ax.set_ylabel("test coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(quantile_coverage: dict, path: Path, calibration: str = "split") -> Path:
    """Reliability diagram: the share of test points at or below each quantile forecast against its level
    (on the diagonal when the quantiles are calibrated; the PIT's CDF at those levels)."""
    levels = np.array([float(q) for q in quantile_coverage])
    observed = np.array([quantile_coverage[q] for q in quantile_coverage])
    fig = Figure(figsize=(3.8, 3.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    ax.plot(levels, observed, "o-", label=calibration)
    ax.set_xlabel("quantile level")
    ax.set_ylabel("share of test points below")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
