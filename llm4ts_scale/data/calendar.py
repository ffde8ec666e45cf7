"""Calendar attributes as small integers, the inputs of LLM4TS's temporal embedding tables.

Which attributes exist depends on the data frequency: hourly data resolves month, day,
weekday and hour; weekly data only month and day. Values are raw integers (month 1-12,
day 1-31, weekday 0-6 Monday first, hour 0-23, minute 0-59, second 0-59) so each one
indexes an embedding table of size CALENDAR_SIZES[name] without any offset.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from llm4ts_scale.core.errors import UserError

# Coarse to fine; the order is also the column order of calendar_marks.
CALENDAR_SIZES: dict[str, int] = {"month": 13, "day": 32, "weekday": 7, "hour": 24, "minute": 60, "second": 60}
CALENDAR_ORDER = tuple(CALENDAR_SIZES)

# Attributes a frequency resolves, keyed by pandas' offset rule code (the part before '-').
_ATTRS_BY_RULE = {
    "Y": 0, "YS": 0, "YE": 0, "A": 0, "AS": 0, "BY": 0, "BYS": 0, "BYE": 0,
    "Q": 1, "QS": 1, "QE": 1, "BQ": 1, "BQS": 1, "BQE": 1,
    "M": 1, "MS": 1, "ME": 1, "BM": 1, "BMS": 1, "BME": 1, "SM": 2, "SMS": 2, "SME": 2,
    "W": 2,
    "D": 3, "B": 3, "C": 3,
    "h": 4, "H": 4, "bh": 4, "BH": 4, "cbh": 4, "CBH": 4,
    "min": 5, "T": 5,
    "s": 6, "S": 6, "ms": 6, "L": 6, "us": 6, "U": 6, "ns": 6, "N": 6,
}
# How many of CALENDAR_ORDER each level keeps; weekly data keeps month and day (no weekday:
# every row would have the same one).
_LEVEL_ATTRS = {
    0: [],
    1: ["month"],
    2: ["month", "day"],
    3: ["month", "day", "weekday"],
    4: ["month", "day", "weekday", "hour"],
    5: ["month", "day", "weekday", "hour", "minute"],
    6: ["month", "day", "weekday", "hour", "minute", "second"],
}


# Spellings older pandas and Time-Series-Library's `--freq` accept that pandas 3 refuses.
_LEGACY_RULES = {"H": "h", "T": "min", "t": "min", "S": "s", "L": "ms", "U": "us", "N": "ns", "A": "YE", "Y": "YE"}


def normalize_freq(freq: str) -> str:
    """Validate a pandas frequency alias and return its canonical spelling (e.g. 'H' -> 'h', TSLib 't' -> 'min')."""
    match = re.fullmatch(r"(\d*)([A-Za-z]+)(-.*)?", str(freq).strip())
    if match and match.group(2) in _LEGACY_RULES:
        freq = match.group(1) + _LEGACY_RULES[match.group(2)] + (match.group(3) or "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pd.tseries.frequencies.to_offset(freq).freqstr
    except (ValueError, TypeError):
        raise UserError(f"frequency {freq!r} is not a pandas alias; use e.g. h, 15min, D, W-SUN, MS") from None


def infer_freq(timestamps) -> str:
    """The pandas alias of a regular timestamp sequence; UserError naming the first irregular step."""
    index = pd.DatetimeIndex(np.asarray(timestamps, dtype="datetime64[ns]"))
    if len(index) < 3:
        raise UserError(f"need at least 3 timestamps to infer the frequency, got {len(index)}; pass --freq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(index)
    if freq is not None:
        return freq if isinstance(freq, str) else freq.freqstr
    steps = np.diff(index.asi8)
    values, counts = np.unique(steps, return_counts=True)
    common = values[np.argmax(counts)]
    row = int(np.flatnonzero(steps != common)[0]) + 1
    raise UserError(
        f"irregular frequency: timestamps {index[row - 1]} and {index[row]} (rows {row - 1} and {row}) are "
        f"{pd.Timedelta(int(steps[row - 1]))} apart while most steps are {pd.Timedelta(int(common))}; "
        "resample the data to a regular grid or pass --freq"
    )


def calendar_attributes(freq: str) -> list[str]:
    """Attributes the frequency resolves, coarse to fine (hourly -> month, day, weekday, hour)."""
    canonical = normalize_freq(freq)
    rule = canonical.lstrip("0123456789").split("-")[0]
    if rule not in _ATTRS_BY_RULE:
        raise UserError(f"frequency {freq!r} is not supported for calendar features; use e.g. h, 15min, D, W, MS")
    return list(_LEVEL_ATTRS[_ATTRS_BY_RULE[rule]])


def calendar_marks(timestamps, attrs: list[str]) -> np.ndarray:
    """int64 [N, len(attrs)]: each timestamp's attributes, in the order given."""
    index = pd.DatetimeIndex(np.asarray(timestamps, dtype="datetime64[ns]"))
    getters = {
        "month": lambda: index.month,
        "day": lambda: index.day,
        "weekday": lambda: index.day_of_week,
        "hour": lambda: index.hour,
        "minute": lambda: index.minute,
        "second": lambda: index.second,
    }
    unknown = [a for a in attrs if a not in getters]
    if unknown:
        raise ValueError(f"unknown calendar attribute(s) {unknown}; known: {list(getters)}")
    out = np.empty((len(index), len(attrs)), dtype=np.int64)
    for j, name in enumerate(attrs):
        out[:, j] = np.asarray(getters[name](), dtype=np.int64)
    return out


# GluonTS's seasonal periods per base unit (gluonts.time_feature.get_seasonality), the lag of MASE's
# in-sample seasonal-naive scale as GIFT-Eval and Chronos compute it.
_SEASONALITY = {"s": 3600, "min": 1440, "h": 24, "D": 1, "B": 5, "W": 1, "M": 12, "MS": 12, "ME": 12, "Q": 4,
                "QS": 4, "QE": 4, "Y": 1, "YS": 1, "YE": 1}


def seasonality(freq: str) -> int:
    """The seasonal lag m of a frequency (hourly 24, 15-minute 96, daily and weekly 1, monthly 12)."""
    canonical = normalize_freq(freq)
    match = re.fullmatch(r"(\d*)([A-Za-z]+)(-.*)?", canonical)
    multiple, unit = int(match.group(1) or 1), match.group(2)
    base = _SEASONALITY.get(unit, 1)
    return base // multiple if base % multiple == 0 else 1
