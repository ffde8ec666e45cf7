"""What the training loop calls besides training: each hook sees the recipe at epoch begin, after every
batch, and at epoch end (where it may add fields to the epoch's history entry)."""

from __future__ import annotations

import torch

from llm4ts_scale.core.faults import maybe_die


class StageHook:
    def on_epoch_begin(self, recipe) -> None:
        pass

    def on_batch(self, recipe, batch: dict, loss: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, recipe) -> dict:
        return {}


class WindowChecksum(StageHook):
    """(count, checksum) of the windows each rank trained on this epoch, in the history as `rank_windows`:
    run.json then shows that ranks saw different data and every window once. Kept in the progress so a
    resumed epoch reports the same figures."""

    def __init__(self, n_channels: int):
        self.n_channels = n_channels

    def on_batch(self, recipe, batch, loss):
        ids = batch["start"] * self.n_channels + batch["channel"]
        count, total = recipe.progress.extra.get("windows", [0, 0])
        recipe.progress.extra["windows"] = [count + len(ids), (total + int(ids.sum())) % 2**61]

    def on_epoch_end(self, recipe) -> dict:
        mine = recipe.progress.extra.pop("windows", [0, 0])
        acc = recipe.accelerator
        gathered = acc.gather(torch.tensor([mine], dtype=torch.int64, device=acc.device)).tolist()
        return {"rank_windows": gathered}


class FaultPoints(StageHook):
    """The `<stage>.step` kill point of the reliability tests (llm4ts_scale/core/faults.py)."""

    def on_batch(self, recipe, batch, loss):
        maybe_die(f"{recipe.spec.name}.step")
