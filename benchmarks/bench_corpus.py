#!/usr/bin/env python
"""Benchmark the alignment corpus stream (llm4ts_scale/data/corpus.py), side by side in one run:

  * peak RSS of one alignment epoch over a corpus of 1x, 10x and 100x windows (ETTh1's few-shot windows
    plus synthetic:kernelsynth series, whose count grows), each in a fresh subprocess: it must stay flat;
  * samples/s of a mixed stream (ETTh1 + ILI + synthetic, weights 1 / 1 / fractional) against a single
    source of the same number of windows (ETTh1's full training split): each timed epoch (after a warm-up
    epoch) in a fresh process, the two alternating, best of --repeat.

    python benchmarks/bench_corpus.py [--repeat 3]

Needs ETTh1 and national_illness where dataset names are found (LLM4TS_DATA_PATH). Prints the CPU model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from machine import machine, ratio

L, S, BATCH = 336, 8, 128
BASE_SERIES, LENGTH = 10, 1024  # 1x: 10 synthetic series of 1,024 steps next to ETTh1's few-shot windows


def _epoch(sources, n_attrs: int) -> tuple[int, float]:
    from llm4ts_scale.data.corpus import corpus_loader
    from llm4ts_scale.data.windows import Shuffle, WindowSpec

    started, count = time.perf_counter(), 0
    for batch in corpus_loader(sources, WindowSpec("train", L, S), BATCH, n_attrs=n_attrs, shuffle=Shuffle(seed=1)):
        count += batch["x"].shape[0]
    return count, time.perf_counter() - started


def child_rss(scale: int) -> None:
    from llm4ts_scale.data.corpus import open_corpus
    from llm4ts_scale.data.sources import open_store

    target = open_store("ETTh1")
    sources = open_corpus(["ETTh1", {"path": "synthetic:kernelsynth", "series": BASE_SERIES * scale, "length": LENGTH}],
                          target, 10, seed=0)
    count, seconds = _epoch(sources, len(target.calendar_attrs))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"scale": scale, "windows": count, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


STREAMS = {"single": "single source (ETTh1 train)", "mixed": "mixed (ETTh1 10 % + ILI + synthetic)"}


def child_stream(name: str) -> None:
    """One warm-up epoch, then the timed one, of the single-source or the mixed stream (same window count)."""
    from llm4ts_scale.data.corpus import open_corpus
    from llm4ts_scale.data.sources import open_store

    target = open_store("ETTh1")
    if name == "single":
        sources = open_corpus(["ETTh1"], target, 100, seed=0)
    else:
        ili = open_store("national_illness")
        rest = target.num_samples("train", L, S) - target.num_samples("train", L, S, 10) - ili.num_samples("train", L, S)
        synth_series, per_series = 200, LENGTH - L - S + 1
        sources = open_corpus(["ETTh1", "national_illness",
                               {"path": "synthetic:kernelsynth", "series": synth_series, "length": LENGTH,
                                "weight": rest / (synth_series * per_series)}], target, 10, seed=0)
    _epoch(sources, len(target.calendar_attrs))
    count, seconds = _epoch(sources, len(target.calendar_attrs))
    print(json.dumps({"windows": count, "samples_per_s": count / seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-stream", choices=sorted(STREAMS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_stream:
        child_stream(args.child_stream)
        return 0
    if args.child_rss:
        child_rss(args.child_rss)
        return 0

    print(machine())
    rss = []
    for scale in (1, 10, 100):
        out = subprocess.run([sys.executable, __file__, "--child-rss", str(scale)], capture_output=True, text=True,
                             check=True).stdout
        rss.append(json.loads(out.splitlines()[-1]))
        r = rss[-1]
        print(f"corpus {scale:>3}x: {r['windows']:>9,} windows in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.1f} MB")
    print(f"peak RSS 100x vs 1x: {100 * (rss[-1]['peak_rss_mb'] / rss[0]['peak_rss_mb'] - 1):+.1f} % (target: within 10 %)")

    runs = {name: [] for name in STREAMS}
    for _ in range(args.repeat):  # each epoch in a fresh process, alternating: both streams see the same conditions
        for name in STREAMS:
            out = subprocess.run([sys.executable, __file__, "--child-stream", name], capture_output=True, text=True,
                                 check=True).stdout
            runs[name].append(json.loads(out.splitlines()[-1]))
    best = {}
    for name, timed in runs.items():
        fastest = max(timed, key=lambda r: r["samples_per_s"])
        best[name] = fastest["samples_per_s"]
        print(f"{STREAMS[name]}: {fastest['windows']:,} windows/epoch, {best[name]:,.0f} samples/s "
              f"(best of {args.repeat} fresh processes)")
    print(ratio("mixed / single throughput", best["mixed"], best["single"], "within 10 %"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
