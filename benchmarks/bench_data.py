#!/usr/bin/env python
"""Benchmark the streaming window pipeline against a Time-Series-Library style in-memory Dataset.

Prints, from one run on one machine:
  * samples/s of `make_loader` (HF datasets IterableDataset, shuffle buffer, batch 128,
    L=336, H=96, ETTh1 train) next to a TSLib-style torch Dataset that slices a numpy array in
    __getitem__ (channel-independent indexing as in GPT4TS/LLM4TS) under a shuffling DataLoader;
  * peak RSS of one streaming training epoch on ETTh1 and on a synthetic series 50x longer
    (ETTh1's values tiled, hourly timestamps continued), each in a fresh subprocess.

Usage: python benchmarks/bench_data.py [--data PATH_OR_NAME] [--repeat 3] [--scale 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine, ratio

L, H, BATCH = 336, 96, 128


def _default_data() -> str:
    repo = Path(__file__).resolve().parents[1]
    return str(repo.parent / "shared" / "data" / "ETTh1.csv")


class TSLibStyleDataset:
    """What Time-Series-Library's Dataset_ETT_hour does (channel-independent variant):
    the whole scaled array in memory, one slice per item."""

    def __init__(self, data_x, data_stamp, seq_len, pred_len):
        self.data_x, self.data_stamp = data_x, data_stamp
        self.seq_len, self.pred_len = seq_len, pred_len
        self.enc_in = data_x.shape[1]
        self.tot_len = len(data_x) - seq_len - pred_len + 1

    def __getitem__(self, index):
        feat_id = index // self.tot_len
        s_begin = index % self.tot_len
        s_end = s_begin + self.seq_len
        r_end = s_end + self.pred_len
        seq_x = self.data_x[s_begin:s_end, feat_id:feat_id + 1]
        seq_y = self.data_x[s_end:r_end, feat_id:feat_id + 1]
        return seq_x, seq_y, self.data_stamp[s_begin:s_end], self.data_stamp[s_end:r_end]

    def __len__(self):
        return self.tot_len * self.enc_in


def _time_epoch(loader) -> tuple[int, float]:
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch["x"] if isinstance(batch, dict) else batch[0])
    return count, time.perf_counter() - start


def bench_throughput(data: str, repeat: int, num_workers: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from llm4ts_scale.data.sources import open_store
    from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader

    store = open_store(data)
    start, end = store.split_range("train", L)
    values, marks, _ = store.read_rows(start, end)  # the reference holds the whole split in memory
    reference = TSLibStyleDataset(values, marks, L, H)
    torch.manual_seed(0)
    results = {"streaming": [], "tslib_in_memory": []}
    for epoch in range(repeat):
        loader = make_loader(store, WindowSpec("train", L, H), BATCH, shuffle=Shuffle(0, epoch), num_workers=num_workers)
        n_stream, t_stream = _time_epoch(loader)
        ref_loader = DataLoader(reference, batch_size=BATCH, shuffle=True, num_workers=num_workers)
        n_ref, t_ref = _time_epoch(ref_loader)
        assert n_stream == n_ref == len(reference), (n_stream, n_ref, len(reference))
        results["streaming"].append(n_stream / t_stream)
        results["tslib_in_memory"].append(n_ref / t_ref)
    return {"samples_per_epoch": len(reference),
            **{k: {"best": max(v), "all": [round(x) for x in v]} for k, v in results.items()}}


def child_rss(store_dir: str) -> None:
    """One streaming training epoch; prints samples, seconds and this process's peak RSS."""
    from llm4ts_scale.data.sources import open_store
    from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader

    store = open_store(store_dir)
    loader = make_loader(store, WindowSpec("train", L, H), BATCH, shuffle=Shuffle(0, 0))
    count, seconds = _time_epoch(loader)
    print(json.dumps({"rows": store.n_rows, "train_rows": store.split_range("train", L)[1],
                      "samples": count, "seconds": seconds, "max_rss_mb": _peak_rss_kb() / 1024}))


def _peak_rss_kb() -> int:
    """This process's peak RSS. Linux: VmHWM, because ru_maxrss survives exec and would report the
    parent's peak when the parent was bigger at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb // 1024 if sys.platform == "darwin" else kb  # macOS reports bytes


def _rss_in_subprocess(store_dir: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child-rss", store_dir], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _synthetic_csv(source: str, scale: int, directory: Path) -> Path:
    import numpy as np
    import pandas as pd

    df = pd.read_csv(source)
    values = np.tile(df.drop(columns=["date"]).to_numpy(), (scale, 1))
    dates = pd.date_range(df["date"].iloc[0], periods=len(values), freq="h")
    out = directory / f"synthetic_x{scale}.csv"  # not ETT*-named: the ratio split applies
    frame = pd.DataFrame(values, columns=df.columns[1:])
    frame.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(out, index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=_default_data(), help="ETTh1 CSV, store dir or name")
    parser.add_argument("--repeat", type=int, default=3, help="epochs timed per pipeline (best is reported)")
    parser.add_argument("--scale", type=int, default=50, help="length multiple of the synthetic series")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--child-rss", metavar="STORE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return

    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="llm4ts-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["LLM4TS_CACHE"] = str(tmp / "cache")
        from llm4ts_scale.data.prepare import prepare
        from llm4ts_scale.data.sources import open_store

        base = open_store(args.data)
        tput = bench_throughput(str(base.path), args.repeat, args.num_workers)
        print(f"throughput, ETTh1 train, L={L} H={H} batch={BATCH}, num_workers={args.num_workers}, "
              f"{tput['samples_per_epoch']} samples/epoch, best of {args.repeat}:")
        print(f"  streaming (datasets IterableDataset) {tput['streaming']['best']:>10.0f} samples/s  "
              f"{tput['streaming']['all']}")
        print(f"  TSLib-style in-memory Dataset        {tput['tslib_in_memory']['best']:>10.0f} samples/s  "
              f"{tput['tslib_in_memory']['all']}")
        print("  " + ratio("streaming / in-memory", tput["streaming"]["best"], tput["tslib_in_memory"]["best"], ">= 1.0"))

        synthetic = _synthetic_csv(_source_file(args.data), args.scale, tmp)
        big = prepare(synthetic, tmp / "store-big")
        small = _rss_in_subprocess(str(base.path))
        large = _rss_in_subprocess(str(big.path))
        growth = large["max_rss_mb"] / small["max_rss_mb"] - 1
        print("peak RSS of one streaming training epoch (fresh subprocess each, VmHWM):")
        for label, r in ((f"ETTh1 ({base.split_rule})", small), (f"synthetic x{args.scale} (ratio)", large)):
            print(f"  {label:<24} rows={r['rows']:>8} train_rows={r['train_rows']:>7} samples={r['samples']:>8} "
                  f"epoch={r['seconds']:.1f}s  peak RSS={r['max_rss_mb']:.1f} MB")
        print(f"  RSS growth 1x -> {args.scale}x = {growth * 100:+.1f}%  (target < 10%)")


def _source_file(data: str) -> str:
    """The CSV behind --data (a file path, or a NAME looked up like open_store does)."""
    from llm4ts_scale.data.sources import find_data_file

    path = Path(data)
    if path.is_file():
        return str(path)
    found = find_data_file(data)
    if found is None:
        raise SystemExit(f"bench needs the source CSV to build the synthetic series; {data} is not a file")
    return str(found)


if __name__ == "__main__":
    main()
