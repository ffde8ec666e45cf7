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
    code has it; in normalized units (RevIN de-normalizes after).

    With `shortcut_len` L (model.head: flatten+linear) a Linear(L -> H) of the RevIN-normalized look-back
    z is added: the forecast is then an RLinear model plus what the LLM's features add to it, and a
    head that reads nothing useful from the LLM can still fall back on the linear map. Covariates
    (`cov_width` features, llm4ts_scale/core/covariates.py) enter the same way, through Linear(width -> H).
    """

    def __init__(self, d_model: int, num_patches: int, pred_len: int, dropout: float = 0.0,
                 shortcut_len: int | None = None, cov_width: int = 0):
        super().__init__()
        self.proj = nn.Linear(d_model * num_patches, pred_len, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(shortcut_len, pred_len) if shortcut_len else None
        self.cov = nn.Linear(cov_width, pred_len, bias=False) if cov_width else None

    def forward(self, h: torch.Tensor, z: torch.Tensor | None = None,
                cov: torch.Tensor | None = None) -> torch.Tensor:  # [B, T, D] -> [B, H]
        out = self.dropout(self.proj(h.flatten(start_dim=1)))
        if self.linear is not None:
            out = out + self.linear(z.to(out.dtype))
        if self.cov is not None:
            out = out + self.cov(cov.to(out.dtype))
        return out
