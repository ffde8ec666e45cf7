"""Linear probing without repeated work: the frozen features of each window, computed once per stage.

During LP only the head trains, so the encoder + backbone output of a window is the same in every
epoch. A FeatureCache runs that frozen part once over every window this rank will see (train and
validation), in eval mode, and the LP epochs then run only the head on the cached features: the
same batches, in the same order, with the same head dropout.

What changes with the cache: the frozen part runs without dropout (as at inference), where an
uncached LP epoch would draw fresh encoder-dropout masks. With dropout off in the frozen part
(model.dropout=0, model.lora.dropout=0) the two give the same LP trajectory (tested).
"""

from __future__ import annotations

import torch

from llm4ts_scale.core.precision import autocast
from llm4ts_scale.evaluation import lockstep_batches


def window_ids(batch: dict, n_channels: int) -> torch.Tensor:
    """One integer per (window, channel): start row * channels + channel."""
    return batch["start"] * n_channels + batch["channel"]


def cache_bytes(windows: int, num_patches: int, d_model: int, dtype: torch.dtype = torch.float32) -> int:
    return windows * num_patches * d_model * torch.tensor([], dtype=dtype).element_size()


class FeatureCache:
    """Backbone hidden states [T, D] by window id, for the windows of one split on one rank."""

    def __init__(self, n_channels: int):
        self.n_channels = n_channels
        self.rows: dict[int, int] = {}
        self.features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def fill(self, model, store, split: str, seq_len: int, pred_len: int, batch_size: int, *, rank: int,
             world_size: int, device: torch.device, precision: str, few_shot_percent: int = 100,
             show_progress: bool = False, window_step: int = 1) -> FeatureCache:
        """Run the frozen part once over this rank's windows of `split` (lockstep across ranks)."""
        was_training = model.training
        model.eval()
        chunks, ids = [], []
        with torch.no_grad():  # not inference_mode: the features feed the head's autograd graph later
            for batch, _mask in lockstep_batches(store, split, seq_len, pred_len, batch_size, rank=rank,
                                                world_size=world_size, device=device, few_shot_percent=few_shot_percent,
                                                desc=f"LP features {split}", show_progress=show_progress,
                                                window_step=window_step):
                with autocast(device, precision):
                    hidden = model(batch["x"], batch["x_mark"], task="features")
                chunks.append(hidden)
                ids.append(window_ids(batch, self.n_channels))
        model.train(was_training)
        if chunks:
            self.features = torch.cat(chunks)
            for row, key in enumerate(torch.cat(ids).tolist()):
                self.rows.setdefault(key, row)
        return self

    def lookup(self, batch: dict) -> torch.Tensor:
        """Cached features [B, T, D] of a batch's windows."""
        try:
            index = [self.rows[key] for key in window_ids(batch, self.n_channels).tolist()]
        except KeyError as err:
            raise RuntimeError(f"window {err.args[0]} is not in the LP feature cache; it was filled for other data") from None
        return self.features[torch.tensor(index, device=self.features.device)]
