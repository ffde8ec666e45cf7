"""Train/val/test borders (Time-Series-Library conventions, docs/ARCHITECTURE.md section 4) and window ranges.

Borders are stored without the look-back: train [0, b1), val [b1, b2), test [b2, b3).
`split_rows` adds the look-back L in front of val/test (their first window's input lies in the
previous split; its targets lie inside) and applies few-shot to train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llm4ts_scale.core.config import SplitRule, choices
from llm4ts_scale.core.errors import UserError

SPLITS = ("train", "val", "test")
SPLIT_RULES = choices(SplitRule)
# ETT: 12/4/4 months of hours (x4 for 15-minute data); the rest of the file is unused, as in TSLib.
_ETT_HOURLY = (8640, 11520, 14400)


def resolve_split_rule(rule: str, name: str) -> str:
    """`auto` -> ett-hourly for ETTh*, ett-minute for ETTm*, ratio otherwise."""
    if rule not in SPLIT_RULES:
        raise UserError(f"split rule {rule!r} is unknown; use auto, ett-hourly, ett-minute or ratio")
    if rule != "auto":
        return rule
    stem = Path(name).name
    if stem.startswith("ETTh"):
        return "ett-hourly"
    if stem.startswith("ETTm"):
        return "ett-minute"
    return "ratio"


def split_borders(rule: str, n_rows: int) -> dict[str, list[int]]:
    """{split: [first_row, end_row)} without look-back, for a resolved rule."""
    if rule in ("ett-hourly", "ett-minute"):
        scale = 1 if rule == "ett-hourly" else 4
        b1, b2, b3 = (b * scale for b in _ETT_HOURLY)
        if n_rows < b3:
            raise UserError(
                f"the {rule} split needs at least {b3} rows (12/4/4 months), the data has {n_rows}; "
                "use --split ratio"
            )
        return {"train": [0, b1], "val": [b1, b2], "test": [b2, b3]}
    if rule == "ratio":
        num_train = int(n_rows * 0.7)
        num_test = int(n_rows * 0.2)
        return {"train": [0, num_train], "val": [num_train, n_rows - num_test], "test": [n_rows - num_test, n_rows]}
    raise UserError(f"split rule {rule!r} is unknown; use ett-hourly, ett-minute or ratio")


def split_rows(borders: dict, split: str, seq_len: int, few_shot_percent: int = 100) -> tuple[int, int]:
    """Rows [start, end) a split's windows are cut from: val/test start L before their border."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is unknown; use train, val or test")
    if seq_len <= 0:
        raise UserError(f"seq_len must be positive, got {seq_len}")
    if not 0 < few_shot_percent <= 100:
        raise UserError(f"few_shot_percent must be in (0, 100], got {few_shot_percent}")
    first, end = borders[split]
    if split == "train":
        if few_shot_percent < 100:
            end = (end - seq_len) * few_shot_percent // 100 + seq_len
        return 0, end
    start = first - seq_len
    if start < 0:
        raise UserError(
            f"the {split} split starts at row {first}, fewer than seq_len={seq_len} rows into the data; "
            "lower seq_len or use more data"
        )
    return start, end


def num_windows(borders: dict, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
    """Windows per channel, `rows - L - H + 1`; UserError naming the split when it is too short."""
    if pred_len <= 0:
        raise UserError(f"pred_len must be positive, got {pred_len}")
    start, end = split_rows(borders, split, seq_len, few_shot_percent)
    count = (end - start) - seq_len - pred_len + 1
    if count <= 0:
        own = borders[split][1] - borders[split][0]
        lookback = "" if split == "train" else f" plus the {seq_len}-row look-back"
        shot = f" at {few_shot_percent}% few-shot" if split == "train" and few_shot_percent < 100 else ""
        raise UserError(
            f"the {split} split is too short for seq_len={seq_len} + pred_len={pred_len}: it spans {end - start} rows "
            f"({own} of its own{lookback}{shot}), needs at least {seq_len + pred_len}; lower seq_len/pred_len or use more data"
        )
    return count


# ------------------------------------------------------------------ panels: the same rules, per series


def series_borders(rule: str, lengths) -> np.ndarray:
    """[S, 3] int64: (train end, val end, test end) of each series of a panel by the resolved `rule`, rows relative
    to the series' start. A series too short for an ETT rule gets (0, 0, 0): no window in any split."""
    n = np.asarray(lengths, dtype=np.int64)
    if rule in ("ett-hourly", "ett-minute"):
        scale = 1 if rule == "ett-hourly" else 4
        b = np.array(_ETT_HOURLY, dtype=np.int64) * scale
        return np.where((n >= b[2])[:, None], b[None, :], 0)
    if rule == "ratio":
        train = (n * 0.7).astype(np.int64)  # the float products of split_borders, truncated the same way
        test = (n * 0.2).astype(np.int64)
        return np.stack([train, n - test, n], axis=1)
    raise UserError(f"split rule {rule!r} is unknown; use ett-hourly, ett-minute or ratio")


def series_rows(borders, split: str, seq_len: int, few_shot_percent: int = 100):
    """(start [S], end [S]) rows of each series' `split` windows, relative to the series; the rules of
    `split_rows` per series, where a series whose split cannot hold a look-back gets start == end."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is unknown; use train, val or test")
    if seq_len <= 0:
        raise UserError(f"seq_len must be positive, got {seq_len}")
    if not 0 < few_shot_percent <= 100:
        raise UserError(f"few_shot_percent must be in (0, 100], got {few_shot_percent}")
    b = np.asarray(borders, dtype=np.int64).reshape(-1, 3)
    if split == "train":
        end = b[:, 0]
        if few_shot_percent < 100:
            end = np.where(end > seq_len, (end - seq_len) * few_shot_percent // 100 + seq_len, end)
        return np.zeros_like(end), end
    first, end = (b[:, 0], b[:, 1]) if split == "val" else (b[:, 1], b[:, 2])
    start = first - seq_len
    usable = (start >= 0) & (end > first)
    return np.where(usable, start, 0), np.where(usable, end, 0)


def series_windows(borders, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100):
    """[S] windows of each series in `split` (0 where the series is too short for it)."""
    if pred_len <= 0:
        raise UserError(f"pred_len must be positive, got {pred_len}")
    start, end = series_rows(borders, split, seq_len, few_shot_percent)
    return np.maximum(end - start - seq_len - pred_len + 1, 0)
