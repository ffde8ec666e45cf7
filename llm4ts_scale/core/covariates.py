"""Covariates as a linear head reads them: each one normalized with its own look-back statistics.

A forecast is made in the target's RevIN units (the look-back's mean and std removed). If a target follows a
driver, y = a c + b, then in those units the future is sign(a) (c_future - mean_c) / std_c, whatever a and b
are: normalizing each covariate by its own look-back mean and std makes the relation the same linear map in
every window. A covariate that barely moves over a look-back (a holiday flag, a price held constant) would
be divided by almost nothing, so its std is floored at COVARIATE_STD_FLOOR of its train-part std (covariates
arrive standardized with their series' train statistics, where that std is 1).

Known covariates contribute their L look-back and H future values, past-only ones their L look-back values:
features [B, K_known * (L + H) + K_past * L], covariate by covariate, in time order.
"""

from __future__ import annotations

import torch

COVARIATE_STD_FLOOR = 0.1


def covariate_width(n_known: int, n_past: int, seq_len: int, pred_len: int) -> int:
    return n_known * (seq_len + pred_len) + n_past * seq_len


def _normalized(c: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, T, K] -> [B, K, T], each covariate minus its look-back mean over its floored look-back std."""
    look = c[:, :seq_len]
    mean = look.mean(dim=1, keepdim=True)
    std = torch.sqrt(look.var(dim=1, keepdim=True, unbiased=False) + COVARIATE_STD_FLOOR ** 2)
    return ((c - mean) / std).transpose(1, 2)


def covariate_features(known: torch.Tensor | None, past: torch.Tensor | None, seq_len: int) -> torch.Tensor | None:
    """known [B, L + H, K_known], past [B, L, K_past] (either may be None) -> [B, width] or None."""
    parts = [_normalized(c, seq_len).flatten(1) for c in (known, past) if c is not None and c.shape[-1] > 0]
    return torch.cat(parts, dim=1) if parts else None
