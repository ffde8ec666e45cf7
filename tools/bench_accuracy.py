"""The accuracy table users read: ETTh1, 10 % few-shot, H = 96, 192, 336, 720 and their average, test split.

Rows (each trained here with every choice made on validation; the test split is scored once, whole):
  llm4ts        the recipe validation chose (configs/etth1_10pct.yaml), seeds 2023, 2024, 2025
  lp-only       the same, exact linear probing and no FT stage (only when the recipe has an FT stage)
  alignment     the same with the alignment stage toggled (on when the recipe has none, off when it has one)
  random        the same with a random-weight backbone (same architecture, frozen random weights)
  rlinear, DLinear, naive   from the llm4ts runs' own closing comparison (same windows, same metric code)
  published     LLM4TS and GPT4TS figures (their code selects epochs on the test set or drops test batches)

    python tools/bench_accuracy.py                  # train what is missing (resumable), print the table
    python tools/bench_accuracy.py --horizons 96    # one horizon
    python tools/bench_accuracy.py --report-only    # the table from results/accuracy/

Small files of every run (run.json, metrics.json, stage histories; never weights) go to
results/accuracy/<row>-<H>-<seed>/ and the table to results/accuracy/table.md.
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

import yaml

from llm4ts_scale.inference.results import keep_small_files, publish_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "accuracy"
CONFIG = "configs/etth1_10pct.yaml"
HORIZONS = (96, 192, 336, 720)
SEEDS = (2023, 2024, 2025)
# Published 10 % ETTh1 MSE / MAE per horizon: LLM4TS (official results files, epoch chosen on test) and
# GPT4TS (its paper's few-shot table; its code drops the last test batch).
PUBLISHED = {
    "LLM4TS published (GPT-2; epoch chosen on test)": {96: (.418, .433), 192: (.470, .469), 336: (.505, .499),
                                                       720: (.709, .572)},
    "GPT4TS published (GPT-2)": {96: (.458, .456), 192: (.570, .516), 336: (.608, .535), 720: (.725, .591)},
}


# The second dataset every default was checked on (validation), here on its test split: ILI, all its
# training data, L=104, H=24 (the short-horizon setting of the GPT4TS and Time-LLM papers).
ILI = ["data.path=national_illness", "data.split=ratio", "data.seq_len=104", "data.few_shot_percent=100",
       "data.val_stride=1", "data.batch_size=16"]
ILI_H = 24


def recipe_aligns() -> bool:
    config = yaml.safe_load((REPO / CONFIG).read_text())
    return config.get("stages", {}).get("align", {}).get("epochs", 1) > 0


def recipe_fine_tunes() -> bool:
    config = yaml.safe_load((REPO / CONFIG).read_text())
    return config.get("stages", {}).get("ft", {}).get("epochs", 0) > 0


def rows() -> dict[str, tuple[list[str], str]]:
    aligns = recipe_aligns()
    if not recipe_fine_tunes():  # the recipe is exact LP without FT: that row is the first one
        return {"llm4ts": ([], "LLM4TS, the recipe validation chose (exact LP, no FT)"), **_variants(aligns)}
    return {
        "llm4ts": ([], "LLM4TS, the recipe validation chose"),
        "lp-only": (["stages.ft.epochs=0"], "LLM4TS, exact LP, no FT"), **_variants(aligns)}


def _variants(aligns: bool) -> dict[str, tuple[list[str], str]]:
    return {
        "alignment": (["stages.align.epochs=0"] if aligns else ["stages.align.epochs=1"],
                      "LLM4TS without alignment" if aligns else "LLM4TS with 1 alignment epoch"),
        "random": (["model.backbone_init=random"], "LLM4TS, random-weight backbone"),
    }


def aligned_source(row: str, horizon: int, seed: int, runs: Path) -> Path | None:
    """The run whose aligned backbone this one starts from (None: it aligns itself, or not at all)."""
    if row == "ili":
        return None
    overrides = rows()[row][0]
    aligns = "stages.align.epochs=1" in overrides or ("stages.align.epochs=0" not in overrides and recipe_aligns())
    return run_dir(row, HORIZONS[0], seed, runs) if aligns and horizon != HORIZONS[0] else None


def run_dir(row: str, horizon: int, seed: int, runs: Path) -> Path:
    return runs / f"{row}-{horizon}-{seed}"


def command(row: str, horizon: int, seed: int, runs: Path, extra: list[str]) -> list[str]:
    """Alignment does not depend on the horizon (its windows are L + stride long), so a row that aligns runs it
    once per seed, at the first horizon, and the other horizons start at LP from that run's aligned backbone
    (model.aligned_from): the same weights a fresh alignment would give, at a quarter of the cost."""
    overrides = [*(ILI if row == "ili" else rows()[row][0]), *extra]
    source = aligned_source(row, horizon, seed, runs)
    if source is not None:
        overrides.append(f"model.aligned_from={source}")
    return [sys.executable, "launch/train.py", "--config", CONFIG, *overrides, f"data.pred_len={horizon}",
            f"seed={seed}", f"run_dir={run_dir(row, horizon, seed, runs)}"]


def train_all(jobs: list[tuple[str, int, int]], runs: Path, extra: list[str], parallel: int) -> None:
    """Run the training commands, `parallel` at a time (one torch thread each when > 1); logs next to the runs."""
    runs.mkdir(parents=True, exist_ok=True)
    pending, active = list(jobs), []
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if parallel > 1 else {})}
    def ready(job) -> bool:  # a job starting from another run's aligned backbone waits for it
        source = aligned_source(*job, runs)
        return source is None or (source / "align" / "export" / "config.json").is_file()

    while pending or active:
        while pending and len(active) < parallel and any(ready(j) for j in pending):
            job = next(j for j in pending if ready(j))
            pending.remove(job)
            cmd = command(*job, runs, extra)
            log = open(runs / f"{'-'.join(map(str, job))}.log", "w")
            print("$", shlex.join(cmd), f"> {log.name}", flush=True)
            active.append((job, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if pending and not active and not any(ready(j) for j in pending):
            sys.exit(f"{pending[0]} needs the aligned backbone of {aligned_source(*pending[0], runs)}, which is missing; "
                     "train that run first (or pass --horizons with the first horizon)")
        time.sleep(5)
        for item in list(active):
            job, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                sys.exit(f"{job} failed (exit {proc.returncode}); see {log.name}")
            keep_small_files(run_dir(*job, runs), RESULTS / "-".join(map(str, job)))
            print(f"{job}: done", flush=True)


def _runs(row: str, horizon: int) -> list[dict]:
    out = []
    for seed in SEEDS:
        path = RESULTS / f"{row}-{horizon}-{seed}" / "run.json"
        if path.is_file():
            out.append(json.loads(path.read_text()))
    return out


def _cell(values: list[tuple[float, float]]) -> str:
    if not values:
        return "(not run)"
    mse, mae = [v[0] for v in values], [v[1] for v in values]
    if len(values) == 1:
        return f"{mse[0]:.3f} / {mae[0]:.3f}"
    return f"{statistics.mean(mse):.3f} ± {statistics.stdev(mse):.3f} / {statistics.mean(mae):.3f}"


def _minutes(run: dict) -> float:
    return (sum(s.get("wall_time_s", 0) for s in run["stages"].values()) + run["test"].get("wall_time_s", 0)) / 60


def table(horizons: tuple[int, ...]) -> str:
    head = "| model | " + " | ".join(f"H={h}" for h in horizons) + " | avg | minutes per run | seeds |"
    lines = [head, "|" + "---|" * (len(horizons) + 4)]

    def add(name: str, per_h: dict[int, list[tuple[float, float]]], minutes: str, seeds: str) -> None:
        cells = [_cell(per_h.get(h, [])) for h in horizons]
        full = all(per_h.get(h) for h in horizons)
        avg = "-"
        if full:  # average over horizons of each horizon's mean
            means = [(statistics.mean(v[0] for v in per_h[h]), statistics.mean(v[1] for v in per_h[h])) for h in horizons]
            avg = f"{statistics.mean(m for m, _ in means):.3f} / {statistics.mean(a for _, a in means):.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} | {minutes} | {seeds} |")

    for row, (_, title) in rows().items():
        per_h = {h: [(r["test"]["metrics"]["mse"], r["test"]["metrics"]["mae"]) for r in _runs(row, h)] for h in horizons}
        runs = [r for h in horizons for r in _runs(row, h)]
        seeds = sorted({r["config"]["seed"] for r in runs})
        add(title, per_h, f"{statistics.mean(_minutes(r) for r in runs):.0f}" if runs else "-",
            ", ".join(map(str, seeds)) or "-")
    reference = {h: [r for r in _runs("llm4ts", h) if r["config"]["seed"] == SEEDS[0]] for h in horizons}
    for key, title in (("rlinear", "rlinear (RevIN + ridge, closed form)"), ("dlinear", "DLinear"),
                       ("naive", "naive (repeat the last value)")):
        per_h = {h: [(r["test"]["baselines"][key]["mse"], r["test"]["baselines"][key]["mae"]) for r in reference[h]
                     if key in r["test"].get("baselines", {})] for h in horizons}
        add(title, per_h, "< 1" if key != "naive" else "-", "-" if key != "dlinear" else str(SEEDS[0]))
    for title, figures in PUBLISHED.items():
        add(title, {h: [figures[h]] for h in horizons if h in figures}, "-", "-")

    val = ["", "Validation MSE (what every choice was made on) of the llm4ts row against rlinear's on the same windows:", "",
           "| H | llm4ts val MSE | rlinear val MSE |", "|---|---|---|"]
    for h in horizons:
        runs = _runs("llm4ts", h)
        if not runs:
            continue
        last = [r["stages"][list(r["stages"])[-1]]["val"]["mse"] for r in runs]
        rl = [r["test"]["baselines"]["rlinear"]["val_mse"] for r in runs if "rlinear" in r["test"].get("baselines", {})]
        val.append(f"| {h} | {statistics.mean(last):.4f} | {statistics.mean(rl):.4f} |" if rl else f"| {h} | "
                   f"{statistics.mean(last):.4f} | - |")
    lines += ["", f"ETTh1, 10 % of the training windows, test split (every window once), MSE / MAE on the standardized "
              f"scale; ± is the standard deviation over seeds. Configuration: --config {CONFIG}. rlinear's penalty is "
              "chosen on every validation window, the model's selection uses data.val_stride."] + val
    ili = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"ili-{ILI_H}-*/run.json"))]
    if ili:
        lines += ["", "ILI (national_illness, all training data, L=104, H=24), the dataset every default was also "
                  "validated on, test split:", "", "| model | H=24 MSE / MAE | seeds |", "|---|---|---|"]
        cell = _cell([(r["test"]["metrics"]["mse"], r["test"]["metrics"]["mae"]) for r in ili])
        lines.append(f"| LLM4TS, the same recipe | {cell} | {', '.join(str(r['config']['seed']) for r in ili)} |")
        first = ili[0]["test"].get("baselines", {})
        for key, title in (("rlinear", "rlinear"), ("dlinear", "DLinear"), ("naive", "naive")):
            if key in first:
                lines.append(f"| {title} | {first[key]['mse']:.3f} / {first[key]['mae']:.3f} | - |")
    return "\n".join(lines)


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--horizons", nargs="+", type=int, default=list(HORIZONS))
    parser.add_argument("--rows", nargs="+", default=None, help="rows to train (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each when > 1)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()
    if args.results_dir:
        RESULTS = Path(args.results_dir).resolve()
    if not args.report_only:
        chosen = args.rows or list(rows())
        # the first horizon first: the others start from its aligned backbones
        horizons = sorted(args.horizons, key=lambda h: h != HORIZONS[0])
        jobs = [(row, h, seed) for h in horizons for row in chosen if row != "ili"
                for seed in (SEEDS if row == "llm4ts" else SEEDS[:1])]
        jobs += [("ili", ILI_H, seed) for seed in SEEDS if not args.rows or "ili" in args.rows]
        jobs = [j for j in jobs if not (RESULTS / "-".join(map(str, j)) / "metrics.json").is_file()]
        train_all(jobs, Path(args.runs_dir).resolve(), args.overrides, args.jobs)
    publish_table(RESULTS, table(HORIZONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
