"""Built-in forecasting baselines, scored through the same windows and metrics as models.

They set the floor a learned model must clear: naive (repeat the last value), seasonal
(repeat the last `period` values), mean (the look-back mean).
"""

from __future__ import annotations

import torch

from llm4ts_scale.core.errors import UserError

BASELINES = ("naive", "seasonal", "mean")


def check_period(name: str, period: int | None, seq_len: int) -> None:
    """The seasonal baseline needs a season that fits in the look-back; the others take none."""
    if name != "seasonal":
        if period is not None:
            raise UserError("--period only applies to --baseline seasonal; drop it")
        return
    if period is None:
        raise UserError("the seasonal baseline needs --period N (e.g. 24 for hourly data with a daily cycle)")
    if not 0 < period <= seq_len:
        raise UserError(f"--period must be between 1 and seq_len={seq_len}, got {period}")


def baseline_forecast(name: str, x: torch.Tensor, pred_len: int, period: int | None = None) -> torch.Tensor:
    """Forecast [B, H] from look-back windows x [B, L]."""
    if name not in BASELINES:
        raise UserError(f"baseline {name!r} is unknown; use {', '.join(BASELINES)}")
    if x.ndim != 2:
        raise ValueError(f"x must be [B, L], got shape {tuple(x.shape)}")
    batch, seq_len = x.shape
    if name == "naive":
        return x[:, -1:].expand(batch, pred_len).clone()
    if name == "mean":
        return x.mean(dim=1, keepdim=True).expand(batch, pred_len).clone()
    check_period(name, period, seq_len)
    index = torch.arange(pred_len, device=x.device) % period + (seq_len - period)
    return x[:, index]
