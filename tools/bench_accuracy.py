"""The honest accuracy table: ETTh1, 10 % few-shot, H=96, test split, next to DLinear, naive and the paper.

Rows (each trained here, epoch chosen on validation, test scored once over all 19,495 windows):
  1. LLM4TS, align + LP-FT, the configuration chosen on validation (tools/ablation.py), several seeds;
  2. the same without the alignment stage;
  3. the same with a randomly initialized backbone (same architecture, frozen random weights);
  4. DLinear (trained on the same windows, epoch chosen on validation), the same seeds;
  5. naive (repeat the last value);
  6. the published LLM4TS figure (GPT-2, official code: epoch chosen on the TEST set).

    python tools/bench_accuracy.py                      # train what is missing (resumable), print the table
    python tools/bench_accuracy.py --seeds 2023 2024    # other seeds
    python tools/bench_accuracy.py --report-only        # the table from results/accuracy/

Small files of every run (run.json, metrics.json, each stage's history/metrics; never weights) are copied to
results/accuracy/<row>-<seed>/, and the table to results/accuracy/table.md, so that it outlives the machine.
Two runs train at a time, one thread each (--jobs), which uses a 2-core CPU better than one run on two.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from llm4ts_scale.results import keep_small_files, publish_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "accuracy"
PUBLISHED = {"mse": 0.418, "mae": 0.433}  # LLM4TS, ETTh1 10 %, H=96, GPT-2 (official results file)
L, H, FEW_SHOT = 336, 96, 10
# The configuration chosen on validation (results/ablation/table.md); see README "Accuracy".
MAIN = ["--config", "configs/etth1_10pct.yaml"]
ROWS: dict[str, list[str]] = {
    "llm4ts": [],
    "no-align": ["stages.align.epochs=0"],
    "random-backbone": ["model.backbone_init=random"],
}


def run_dir(row: str, seed: int, runs: Path) -> Path:
    return runs / f"{row}-{seed}"


def command(row: str, seed: int, runs: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "launch/train.py", *MAIN, *ROWS[row], *extra, f"seed={seed}",
            f"run_dir={run_dir(row, seed, runs)}"]


def train_all(jobs: list[tuple[str, int]], runs: Path, extra: list[str], parallel: int) -> None:
    """Run the training commands, `parallel` at a time, one torch thread each; logs next to the runs."""
    runs.mkdir(parents=True, exist_ok=True)
    pending, active = list(jobs), []
    env = {**os.environ, "OMP_NUM_THREADS": "1" if parallel > 1 else os.environ.get("OMP_NUM_THREADS", "")}
    env = {k: v for k, v in env.items() if v != ""}
    while pending or active:
        while pending and len(active) < parallel:
            row, seed = pending.pop(0)
            cmd = command(row, seed, runs, extra)
            log = open(runs / f"{row}-{seed}.log", "w")
            print("$", shlex.join(cmd), f"> {log.name}", flush=True)
            active.append((row, seed, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(5)
        for item in list(active):
            row, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                if proc.returncode != 0:
                    sys.exit(f"{row} seed {seed} failed (exit {proc.returncode}); see {log.name}")
                keep_small_files(run_dir(row, seed, runs), RESULTS / f"{row}-{seed}")
                print(f"{row} seed {seed}: done", flush=True)


def dlinear_rows(seeds: list[int]) -> list[dict]:
    """DLinear for each seed (cached in results/accuracy/dlinear-<seed>.json)."""
    from llm4ts_scale.data.sources import open_store
    from llm4ts_scale.dlinear import train_dlinear

    out = []
    for seed in seeds:
        path = RESULTS / f"dlinear-{seed}.json"
        if not path.is_file():
            store = open_store("ETTh1", split="ett-hourly")
            r = train_dlinear(store, L, H, few_shot_percent=FEW_SHOT, seed=seed)
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"test": r.test, "val": r.val, "best_epoch": r.best_epoch,
                                        "wall_time_s": r.wall_time_s, "seed": seed}, indent=1))
        out.append(json.loads(path.read_text()))
    return out


def naive_row() -> dict:
    cmd = [sys.executable, "-m", "llm4ts_scale.cli", "evaluate", "--data", "ETTh1", "--baseline", "naive",
           "--seq-len", str(L), "--pred-len", str(H), "--split-rule", "ett-hourly"]
    return json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(seeds: list[int]) -> str:
    lines = ["| model | test MSE | test MAE | samples | wall time per run | seeds | best val MSE |",
             "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        found = [(s, RESULTS / f"{row}-{s}") for s in seeds if (RESULTS / f"{row}-{s}" / "metrics.json").is_file()]
        if not found:
            lines.append(f"| {row} | (not run) | | | | | |")
            continue
        metrics = [json.loads((p / "metrics.json").read_text())["test"] for _, p in found]
        runs = [json.loads((p / "run.json").read_text()) for _, p in found]
        minutes = [(sum(st.get("wall_time_s", 0) for st in r["stages"].values()) + r["test"].get("wall_time_s", 0)) / 60
                   for r in runs]
        last = [r["stages"][[n for n in ("align", "lp", "ft") if n in r["stages"]][-1]]["val"]["mse"] for r in runs]
        lines.append(f"| {row} | {_summary([m['mse'] for m in metrics])} | {_summary([m['mae'] for m in metrics])} "
                     f"| {metrics[0]['samples']} | {statistics.mean(minutes):.0f} min | {', '.join(str(s) for s, _ in found)} "
                     f"| {_summary(last)} |")
    dl = dlinear_rows(seeds)
    lines.append(f"| DLinear | {_summary([d['test']['mse'] for d in dl])} | {_summary([d['test']['mae'] for d in dl])} "
                 f"| {dl[0]['test']['samples']} | {statistics.mean(d['wall_time_s'] for d in dl):.0f} s "
                 f"| {', '.join(str(d['seed']) for d in dl)} | {_summary([d['val']['mse'] for d in dl])} |")
    naive = naive_row()
    lines.append(f"| naive (repeat the last value) | {naive['mse']:.3f} | {naive['mae']:.3f} | {naive['samples']} | - | - | - |")
    lines.append(f"| LLM4TS published (GPT-2; epoch chosen on test) | {PUBLISHED['mse']:.3f} | {PUBLISHED['mae']:.3f} "
                 "| - | - | - | - |")
    lines += ["", f"ETTh1, {FEW_SHOT} % of the training windows, L={L}, H={H}, standardized scale, test split "
              "(every window once); each run keeps its best-validation epoch per stage. Configuration: "
              + " ".join(MAIN) + ". ± is the standard deviation over seeds."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2023, 2024, 2025])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--other-seeds-rows", nargs="*", default=["llm4ts"],
                        help="rows that run every seed; the others run the first seed only")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each when > 1)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()
    global RESULTS
    if args.results_dir:
        RESULTS = Path(args.results_dir).resolve()
    if not args.report_only:
        jobs = [(row, seed) for row in args.rows for seed in (args.seeds if row in args.other_seeds_rows else args.seeds[:1])
                if not (RESULTS / f"{row}-{seed}" / "metrics.json").is_file()]
        train_all(jobs, Path(args.runs_dir).resolve(), args.overrides, args.jobs)
    publish_table(RESULTS, table(args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
