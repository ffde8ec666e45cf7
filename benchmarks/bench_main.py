"""Time the README's main command end to end, with the default recipe, and print where the time went.

    python benchmarks/bench_main.py                  # as this machine runs it
    python benchmarks/bench_main.py --emulate-avx2   # as a CPU without AVX-512 or native bf16 would (see below)

Runs `accelerate launch launch/train.py --ds ds_configs/zero2.json run_dir=...` in a fresh run directory
(and a fresh cache with --cold: GGUF conversion and DeepSpeed's op build included), then prints the CPU model
and flags next to the wall time, each stage's wall time from run.json and the test figures with the floors.

--emulate-avx2 holds PyTorch's kernels, oneDNN and MKL to AVX2 (ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA,
MKL_ENABLE_INSTRUCTIONS) and computes in fp32, which is what the recipe's `mixed_precision: auto` picks on a
CPU without native bf16. It removes the instructions, not the clock or cache of this machine: an estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emulate-avx2", action="store_true")
    parser.add_argument("--cold", action="store_true", help="a fresh LLM4TS_CACHE (first-run set-up included)")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="extra key=value for the run")
    args = parser.parse_args()

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-main-")) / "run"
    env = dict(os.environ)
    overrides = list(args.overrides)
    if args.emulate_avx2:
        env.update(ATEN_CPU_CAPABILITY="avx2", DNNL_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        overrides.append("train.mixed_precision=no")
    if args.cold:
        env["LLM4TS_CACHE"] = tempfile.mkdtemp(prefix="bench-main-cache-")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "launch/train.py", "--ds", "ds_configs/zero2.json",
           f"run_dir={run_dir}", *overrides]
    print(f"{machine()}{'; emulating AVX2, fp32' if args.emulate_avx2 else ''}", flush=True)
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    run = json.loads((run_dir / "run.json").read_text())
    print(f"wall time: {wall / 60:.1f} min (precision {run['precision']})")
    for name, stage in run["stages"].items():
        print(f"  {name}: {stage.get('wall_time_s', 0) / 60:.1f} min")
    test = run["test"].get("wall_time_s", 0)
    rest = wall - sum(s.get("wall_time_s", 0) for s in run["stages"].values()) - test
    print(f"  test: {test / 60:.1f} min; the rest (set-up, baselines, export): {rest / 60:.1f} min")
    print("\n".join(line for line in proc.stdout.splitlines()
                    if line.startswith(("test:", "naive:", "dlinear:", "rlinear:"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
