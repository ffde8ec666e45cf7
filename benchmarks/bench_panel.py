"""Memory of the panel stream: peak RSS of one training pass over 100 against 10,000 synthetic series.

Per size, one fresh process builds a KernelSynth panel (data/panels.py:synthetic_panel), writes it as
Parquet and prepares it into the Arrow store (its peak RSS is printed: preparing reads the table into pandas
once); a second fresh process opens the prepared store and streams one epoch of training windows (L=96, H=24,
batch 256): its peak RSS is the figure compared. The stream's RSS should stay within
10 % as the number of series grows (the store is memory-mapped and remapped, the window plan is per series).

    python benchmarks/bench_panel.py                 # 100 and 10,000 series
    python benchmarks/bench_panel.py --sizes 10 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(series: int, path: Path, stream: bool) -> dict:
    from llm4ts_scale.data.frame import Schema
    from llm4ts_scale.data.sources import open_store
    from llm4ts_scale.data.windows import WindowSpec, make_loader

    start = time.perf_counter()
    if not stream:
        from llm4ts_scale.data.panels import synthetic_panel

        synthetic_panel(series, min_length=200, max_length=400, seed=0).to_parquet(path)
    store = open_store(path, split="ratio", schema=Schema(format="long"))
    if not stream:
        return {"series": series, "prepare_peak_rss_mib": _peak_mib(), "seconds": round(time.perf_counter() - start, 1)}
    windows = 0
    for batch in make_loader(store, WindowSpec("train", 96, 24), 256):
        windows += batch["x"].shape[0]
    return {"series": series, "train_windows": windows, "stream_peak_rss_mib": _peak_mib(),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 10_000])
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)  # series, path, prepare|stream
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(int(args.one[0]), Path(args.one[1]), args.one[2] == "stream")))
        return 0
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = str(Path(tmp) / f"panel-{size}.parquet")
            for step in ("prepare", "stream"):
                out = subprocess.run([sys.executable, __file__, "--one", str(size), path, step], capture_output=True,
                                     text=True, check=True)
                print(out.stdout.strip().splitlines()[-1], flush=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"streaming peak RSS, {rows[-1]['series']} series / {rows[0]['series']} series: "
          f"{rows[-1]['stream_peak_rss_mib'] / rows[0]['stream_peak_rss_mib']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
