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
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import WindowSpec
from llm4ts_scale.evaluation import lockstep_batches, release_gathered


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

    def fill(self, model, store, spec: WindowSpec, batch_size: int, topology: Topology) -> FeatureCache:
        """Run the frozen part once over this rank's windows of `spec` (lockstep across ranks)."""
        was_training = model.training
        model.eval()
        chunks, ids = [], []
        with torch.no_grad():  # not inference_mode: the features feed the head's autograd graph later
            for batch, _mask in lockstep_batches(store, spec, batch_size, topology, desc=f"LP features {spec.split}"):
                with autocast(topology.device, topology.precision):
                    hidden = model(batch["x"], batch["x_mark"], task="features")
                chunks.append(hidden)
                ids.append(window_ids(batch, self.n_channels))
        release_gathered(model)
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
