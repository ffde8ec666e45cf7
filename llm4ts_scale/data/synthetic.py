"""`synthetic:kernelsynth`: series generated from a seed, KernelSynth-style, for alignment without downloads.

KernelSynth (Chronos, Ansari et al. 2024) draws series from Gaussian processes whose kernels are random
compositions (+, x) of a small bank: periodic kernels at the data's natural periods, linear and smooth
(RBF, rational-quadratic) trends, and white noise. Sampling a GP exactly costs a T x T Cholesky per
series; we draw from the same kernels through their spectral (random Fourier feature) representation,
which is exact in distribution as the number of features grows and costs O(T * features):
  periodic(p)   sum over harmonics k of a_k cos(2 pi k t / p + phi_k), a_k decaying with k
  rbf(l)        sqrt(2 / m) sum_j a_j cos(w_j t + phi_j), w_j ~ N(0, 1 / l^2)
  linear        a + b t
  noise         N(0, s^2) per step
Each series picks 1 to 3 components and joins them with + or x, then is standardized (mean 0, std 1).

A `SyntheticStore` looks like a prepared store to the window stream: n_series channels of `length`
rows, all of them training rows (there is no validation or test split to protect), generated on
demand and deterministically from (seed, series index), so ranks and workers agree without sharing
anything and memory stays bounded however many series the corpus holds.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import numpy as np

from llm4ts_scale.core.errors import UserError

PREFIX = "synthetic:"
KINDS = ("kernelsynth",)
DEFAULT_SERIES, DEFAULT_LENGTH = 1000, 2048
_FOURIER_FEATURES = 64
CACHE_BYTES = 64 << 20  # generated series kept per process: bounded, whatever the corpus size

# Natural periods (in steps) per frequency family: what seasonal kernels are drawn at.
_PERIODS = {"min": (60, 1440, 96), "h": (24, 168, 12, 8), "D": (7, 30, 365, 14), "W": (52, 4, 13, 26),
            "M": (12, 3, 6), "Q": (4, 2), "Y": (2, 5)}


def periods_for(freq: str | None) -> tuple[int, ...]:
    """Seasonal periods for a pandas frequency alias (hourly when unknown)."""
    text = (freq or "h").lstrip("0123456789")
    for key in ("min", "h", "D", "W", "M", "Q", "Y"):
        if text.startswith(key) or (key == "M" and text.startswith("ME")) or (key == "Y" and text.startswith("YE")):
            return _PERIODS[key]
    if text.startswith(("T", "s", "S")):
        return _PERIODS["min"]
    return _PERIODS["h"]


def _component(rng: np.random.Generator, t: np.ndarray, periods: tuple[int, ...]) -> np.ndarray:
    kind = rng.choice(["periodic", "periodic", "rbf", "linear", "noise", "rq"])
    n = len(t)
    if kind == "periodic":
        p = float(rng.choice(periods)) * rng.uniform(0.95, 1.05)
        k = np.arange(1, 6)
        amp = rng.normal(size=5) * np.exp(-0.5 * (k - 1) * rng.uniform(0.3, 2.0))
        phase = rng.uniform(0, 2 * np.pi, size=5)
        return (amp[:, None] * np.cos(2 * np.pi * k[:, None] * t[None] / p + phase[:, None])).sum(0)
    if kind in ("rbf", "rq"):
        scale = n * rng.uniform(0.02, 0.5)
        if kind == "rq":  # rational quadratic = a scale mixture of RBFs: draw the length scale per feature
            scale = scale * rng.gamma(rng.uniform(0.5, 3.0), 1.0, size=_FOURIER_FEATURES)
        w = rng.normal(size=_FOURIER_FEATURES) / scale
        phase = rng.uniform(0, 2 * np.pi, size=_FOURIER_FEATURES)
        a = rng.normal(size=_FOURIER_FEATURES)
        return np.sqrt(2.0 / _FOURIER_FEATURES) * (a[:, None] * np.cos(w[:, None] * t[None] + phase[:, None])).sum(0)
    if kind == "linear":
        return rng.normal() + rng.normal() * (t - t.mean()) / n
    return rng.normal(scale=rng.uniform(0.05, 0.5), size=n)


def kernelsynth_series(seed: int, index: int, length: int, periods: tuple[int, ...]) -> np.ndarray:
    """One standardized series [length], a deterministic function of (seed, index)."""
    rng = np.random.default_rng([seed, index, 0x5EED])
    t = np.arange(length, dtype=np.float64)
    series = _component(rng, t, periods)
    for _ in range(rng.integers(0, 3)):
        other = _component(rng, t, periods)
        series = series + other if rng.random() < 0.6 else series * (1.0 + 0.5 * other / (np.abs(other).max() + 1e-9))
    series = series + rng.normal(scale=0.02, size=length)  # never exactly constant
    return ((series - series.mean()) / (series.std() + 1e-9)).astype(np.float32)


class SyntheticStore:
    """The read interface of SeriesStore (llm4ts_scale/data/store.py) that the window stream uses."""

    def __init__(self, kind: str = "kernelsynth", *, series: int = DEFAULT_SERIES, length: int = DEFAULT_LENGTH,
                 seed: int = 0, freq: str | None = None):
        if kind not in KINDS:
            raise UserError(f"synthetic source {kind!r} is unknown; use {', '.join(PREFIX + k for k in KINDS)}")
        if series < 1 or length < 2:
            raise UserError(f"synthetic source needs series >= 1 and length >= 2, got series={series}, length={length}")
        self.kind, self.n_channels, self.n_rows, self.seed = kind, int(series), int(length), int(seed)
        self.freq = freq or "h"
        self.periods = periods_for(self.freq)
        self.name = f"{PREFIX}{kind}"
        self.columns = [f"s{i}" for i in range(self.n_channels)]
        self.calendar_attrs: list[str] = []
        self.split_rule = "train-only"
        self._cached = None  # the generated-series cache, built on first read (per DataLoader worker)
        self.borders = {"train": [0, self.n_rows], "val": [self.n_rows, self.n_rows], "test": [self.n_rows, self.n_rows]}
        payload = {"kind": kind, "series": self.n_channels, "length": self.n_rows, "seed": self.seed,
                   "periods": list(self.periods), "generator": 1}
        self.fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        self.params = payload

    def __repr__(self) -> str:
        return f"SyntheticStore({self.kind!r}, series={self.n_channels}, length={self.n_rows}, seed={self.seed})"

    def split_range(self, split: str, seq_len: int, few_shot_percent: int = 100) -> tuple[int, int]:
        if split != "train":
            raise UserError(f"synthetic sources have only training rows (asked for {split}); use them for alignment")
        return 0, self.n_rows

    def num_windows(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        start, end = self.split_range(split, seq_len)
        count = end - start - seq_len - pred_len + 1
        if count <= 0:
            raise UserError(f"synthetic series of length {self.n_rows} are too short for windows of "
                            f"{seq_len} + {pred_len}; raise its length")
        return count

    def num_samples(self, split: str, seq_len: int, pred_len: int, few_shot_percent: int = 100) -> int:
        return self.n_channels * self.num_windows(split, seq_len, pred_len)

    def read_channel(self, start: int, end: int, channel: int, scaled: bool = True) -> np.ndarray:
        return self._cache(self.seed, channel, self.n_rows, self.periods)[start:end]

    @property
    def _cache(self):
        """Generated series are kept up to CACHE_BYTES (shards of a series come in random order)."""
        if self._cached is None:
            self._cached = lru_cache(maxsize=max(16, CACHE_BYTES // (4 * self.n_rows)))(_generate)
        return self._cached

    def __getstate__(self):  # DataLoader workers: each builds its own cache
        state = dict(self.__dict__)
        state["_cached"] = None
        return state

    def read_marks(self, start: int, end: int) -> np.ndarray:
        return np.zeros((end - start, 0), dtype=np.int64)


def _generate(seed: int, index: int, length: int, periods: tuple[int, ...]) -> np.ndarray:
    series = kernelsynth_series(seed, index, length, periods)
    series.setflags(write=False)
    return series


def parse_synthetic(path: str) -> str | None:
    """The kind of a `synthetic:KIND` source string, else None."""
    return path[len(PREFIX):] if str(path).startswith(PREFIX) else None
