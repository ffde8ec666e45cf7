"""Batched forecasting through the Python API: 1,000 ETTh1 histories in one `predict(list)` call against
1,000 `predict(frame)` calls, side by side in one run, on a trained run directory.

    python benchmarks/bench_api.py RUN_DIR [--histories 1000]

RUN_DIR: a finished run on ETTh1 (the main command's `runs/etth1-10pct-96`, or any run trained on ETTh1).
Prints the CPU model, both wall times and their ratio, and checks that both give the same forecasts.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from machine import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--histories", type=int, default=1000)
    parser.add_argument("--data", default=None, help="ETTh1.csv (default: found through LLM4TS_DATA_PATH)")
    args = parser.parse_args()

    from llm4ts_scale import Forecaster
    from llm4ts_scale.data.sources import find_data_file

    forecaster = Forecaster.from_pretrained(args.run_dir)
    path = args.data or find_data_file("ETTh1")
    if path is None:
        sys.exit("ETTh1.csv not found: pass --data, set LLM4TS_DATA_PATH or run tools/fetch_data.py ETTh1")
    frame = pd.read_csv(path, parse_dates=["date"])
    L = forecaster.config.data.seq_len
    starts = np.linspace(0, len(frame) - L - 1, args.histories).astype(int)
    histories = [frame.iloc[s:s + L] for s in starts]
    forecaster.predict(histories[:2])  # warm-up: first-call allocations out of both timings

    started = time.perf_counter()
    batched = forecaster.predict(histories)
    t_batched = time.perf_counter() - started
    started = time.perf_counter()
    single = [forecaster.predict(h) for h in histories]
    t_single = time.perf_counter() - started

    std = np.asarray(forecaster.loaded.data["std"])
    worst = max(float((np.abs(a.iloc[:, 1:].to_numpy() - b.iloc[:, 1:].to_numpy()).max(axis=0) / std).max())
                for a, b in zip(batched, single))
    print(f"{machine()}; precision {forecaster.loaded.precision}; {args.histories} histories of {L} rows x "
          f"{frame.shape[1] - 1} channels, H={forecaster.config.data.pred_len}")
    print(f"batched predict(list): {t_batched:.2f} s ({args.histories / t_batched:.0f} histories/s)")
    print(f"one call per history:  {t_single:.2f} s ({args.histories / t_single:.0f} histories/s)")
    print(f"ratio: {t_single / t_batched:.1f}x faster batched; largest difference {worst:.1e} (standardized units)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
