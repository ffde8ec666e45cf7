"""The two heads on top of the backbone's hidden states [B, T, D]."""

from __future__ import annotations

import torch
from torch import nn


class AlignHead(nn.Module):
    """Stage 1: per-token Linear(D -> P); token t predicts patch t+1."""

    def __init__(self, d_model: int, patch_len: int):
        super().__init__()
        self.proj = nn.Linear(d_model, patch_len)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, T, P]
        return self.proj(h)


class ForecastHead(nn.Module):
    """Stage 2: Flatten + Linear(D*T -> H, no bias) + dropout on the output, as the official LLM4TS
    code has it; in normalized units (RevIN de-normalizes after)."""

    def __init__(self, d_model: int, num_patches: int, pred_len: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(d_model * num_patches, pred_len, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H]
        return self.dropout(self.proj(h.flatten(start_dim=1)))
