"""Long-format panels to try the panel path on without downloads (`python tools/make_panel.py`, the tests):

- `melt`: a wide table as a long one, every column its own id (the same data, so the same windows);
- `demo_panel`: every column of a wide table (ETTh1, ILI) as its own series with its own start date and
  length: a small real panel;
- `synthetic_panel`: n KernelSynth series (data/synthetic.py) of random lengths and start dates, optionally
  with a planted known driver (target = a * driver + noise), for scale and for covariate checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llm4ts_scale.data.synthetic import kernelsynth_series, periods_for


def melt(frame: pd.DataFrame, time_column: str = "date") -> pd.DataFrame:
    """id, timestamp, target rows of a wide table, series by series in column order."""
    long = frame.melt(id_vars=time_column, var_name="id", value_name="target")
    return long.rename(columns={time_column: "timestamp"})[["id", "timestamp", "target"]]


def demo_panel(frame: pd.DataFrame, name: str, seed: int = 0, min_fraction: float = 0.4,
               time_column: str = "date") -> pd.DataFrame:
    """Every column of a wide table as its own series, each starting at a random row and of a random length
    (at least `min_fraction` of the table): series of different lengths and start dates, real values."""
    rng = np.random.default_rng(seed)
    parts = []
    n = len(frame)
    for column in [c for c in frame.columns if c != time_column]:
        length = int(rng.integers(int(min_fraction * n), n + 1))
        start = int(rng.integers(0, n - length + 1))
        rows = frame.iloc[start:start + length]
        parts.append(pd.DataFrame({"id": f"{name}/{column}", "timestamp": rows[time_column].to_numpy(),
                                   "target": rows[column].to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def synthetic_panel(series: int, *, min_length: int = 200, max_length: int = 600, freq: str = "h", seed: int = 0,
                    driver: float | None = None, noise: float = 0.1) -> pd.DataFrame:
    """`series` KernelSynth series of lengths in [min_length, max_length] starting on different dates. With
    `driver` a, every series gets a known covariate `driver` (an independent KernelSynth series) and its target
    becomes a * driver + its own series * `noise`: a forecast that reads the driver's future does far better."""
    rng = np.random.default_rng(seed)
    periods = periods_for(freq)
    base = pd.Timestamp("2020-01-01")
    step = pd.tseries.frequencies.to_offset(freq)
    frames = []
    for i in range(series):
        length = int(rng.integers(min_length, max_length + 1))
        stamps = pd.date_range(base + int(rng.integers(0, 500)) * step, periods=length, freq=freq)
        values = kernelsynth_series(seed, i, length, periods).astype(np.float64)
        part = {"id": f"s{i:05d}", "timestamp": stamps}
        if driver is not None:
            cov = kernelsynth_series(seed + 1, i, length, periods).astype(np.float64)
            part["driver"] = cov
            values = driver * cov + noise * values
        part["target"] = values
        frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True)
