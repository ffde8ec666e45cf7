"""The accuracy tables users read: every dataset in the data directory, test split, every choice made on validation.

  ETTh1  10 % of the training windows (the LLM4TS few-shot setting), L=336, H = 96, 192, 336, 720
  ILI    national_illness, all training data, L=104, H = 24, 36, 48, 60 (the GPT4TS / PatchTST setting)

Rows (each trained here; the test split is scored once, whole):
  llm4ts      the recipe validation chose (configs/etth1_10pct.yaml, ILI's data settings for ILI), 3 seeds
  alignment   the same with the alignment stage toggled (off when the recipe aligns)
  random      the same with frozen random weights in the backbone (same architecture)
  scratch     the same backbone from random weights trained end to end (alignment, then exact LP; fp32)
  patchtst    PatchTST trained from scratch (llm4ts-scale evaluate --baseline patchtst), 3 seeds
  rlinear, DLinear, naive   from the first llm4ts seed's closing comparison (same windows, same metric code)
  published   figures as their papers print them (their protocols differ; see the notes under each table)

    python tools/bench_accuracy.py                              # train what is missing (resumable), print
    python tools/bench_accuracy.py --datasets ili --jobs 2      # one dataset, two runs at a time
    python tools/bench_accuracy.py --report-only                # the tables from results/accuracy/

Small files of every run (run.json, metrics.json, stage histories; never weights) go to
results/accuracy/<dataset prefix><row>-<H>-<seed>/ and the tables to results/accuracy/table.md.
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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llm4ts_scale.inference.results import keep_small_files, publish_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "accuracy"
CONFIG = "configs/etth1_10pct.yaml"
SEEDS = (2023, 2024, 2025)
MULTI_SEED = ("llm4ts", "patchtst")


@dataclass(frozen=True)
class Dataset:
    """One table: the data settings every run of it gets, its horizons and the figures papers print for it."""

    key: str
    prefix: str  # of its result directories ("" for ETTh1: the names the first table was built under)
    overrides: tuple[str, ...]
    horizons: tuple[int, ...]
    evaluate: tuple[str, ...]  # `llm4ts-scale evaluate` flags for the same data and windows
    patchtst: tuple[str, ...]  # PatchTST recipe fields (--set) for this dataset
    caption: str
    published: dict = field(default_factory=dict)


DATASETS = {
    "etth1": Dataset(
        "etth1", "", (), (96, 192, 336, 720),
        ("--data", "ETTh1", "--split-rule", "ett-hourly", "--seq-len", "336", "--few-shot-percent", "10"),
        ("val_stride=4",),
        "ETTh1, 10 % of the training windows, L=336, test split (every window once), MSE / MAE on the "
        "standardized scale; ± is the standard deviation over seeds. Configuration: --config configs/etth1_10pct.yaml. "
        "Selection (epochs, penalties) scores every 4th validation window (data.val_stride), rlinear's penalty every one.",
        {"LLM4TS published (GPT-2; epoch chosen on test)": {96: (.418, .433), 192: (.470, .469), 336: (.505, .499),
                                                            720: (.709, .572)},
         "GPT4TS published (GPT-2)": {96: (.458, .456), 192: (.570, .516), 336: (.608, .535), 720: (.725, .591)}}),
    "ili": Dataset(
        "ili", "ili-", ("data.path=national_illness", "data.split=ratio", "data.seq_len=104", "data.few_shot_percent=100",
                        "data.val_stride=1", "data.batch_size=16"), (24, 36, 48, 60),
        ("--data", "national_illness", "--split-rule", "ratio", "--seq-len", "104"),
        ("patch_len=24", "stride=2", "schedule=constant", "batch_size=16"),
        "ILI (national_illness, weekly, all 7 channels), all training data, L=104, test split, MSE / MAE on the "
        "standardized scale; ± over seeds. Configuration: --config configs/etth1_10pct.yaml with data.path="
        "national_illness data.split=ratio data.seq_len=104 data.few_shot_percent=100 data.val_stride=1 "
        "data.batch_size=16. PatchTST: patches of 24 every 2 steps, batch 16, constant lr 1e-3 (chosen on validation).",
        {"PatchTST/64 published (L=104)": {24: (1.319, .754), 36: (1.579, .870), 48: (1.553, .815), 60: (1.470, .788)},
         "GPT4TS published (GPT-2, L=104)": {24: (1.869, .823), 36: (1.886, .856), 48: (1.877, .847),
                                             60: (1.914, .896)}}),
}


def _recipe() -> dict:
    return yaml.safe_load((REPO / CONFIG).read_text())


def recipe_aligns() -> bool:
    return _recipe().get("stages", {}).get("align", {}).get("epochs", 1) > 0


def rows() -> dict[str, tuple[list[str], str]]:
    """row -> (overrides of the recipe, title). patchtst is not a training run (see command())."""
    aligns = recipe_aligns()
    fine_tunes = _recipe().get("stages", {}).get("ft", {}).get("epochs", 0) > 0
    return {
        "llm4ts": ([], "LLM4TS, the recipe validation chose" + ("" if fine_tunes else " (exact LP, no FT)")),
        "alignment": (["stages.align.epochs=0"] if aligns else ["stages.align.epochs=1"],
                      "LLM4TS without alignment" if aligns else "LLM4TS with 1 alignment epoch"),
        "random": (["model.backbone_init=random"], "LLM4TS, random frozen backbone"),
        "scratch": (["model.backbone_init=scratch", "model.quantize=none"],
                    "the same backbone trained from scratch (alignment + exact LP)"),
        "patchtst": ([], "PatchTST from scratch (epoch chosen on validation)"),
    }


Job = tuple[str, str, int, int]  # dataset, row, horizon, seed


def name(job: Job) -> str:
    dataset, row, horizon, seed = job
    return f"{DATASETS[dataset].prefix}{row}-{horizon}-{seed}"


def aligned_source(job: Job, runs: Path) -> Path | None:
    """The run whose aligned backbone this one starts from (None: it aligns itself, or not at all)."""
    dataset, row, horizon, seed = job
    first = DATASETS[dataset].horizons[0]
    if row == "patchtst" or horizon == first:
        return None
    overrides = rows()[row][0]
    aligns = "stages.align.epochs=1" in overrides or ("stages.align.epochs=0" not in overrides and recipe_aligns())
    return runs / name((dataset, row, first, seed)) if aligns else None


def command(job: Job, runs: Path, extra: list[str]) -> list[str]:
    """Alignment does not depend on the horizon (its windows are L + stride long), so a row that aligns runs it
    once per seed, at the first horizon, and the other horizons start at LP from that run's aligned backbone
    (model.aligned_from): the same weights a fresh alignment would give, at a quarter of the cost. Only the
    first llm4ts seed runs the closing comparison (the baselines do not depend on the LLM's seed)."""
    dataset, row, horizon, seed = job
    data = DATASETS[dataset]
    if row == "patchtst":
        return [sys.executable, "-m", "llm4ts_scale.cli", "evaluate", "--baseline", "patchtst", *data.evaluate,
                "--pred-len", str(horizon), "--seed", str(seed), "--set", *data.patchtst,
                "--out", str(RESULTS / name(job) / "metrics.json")]
    overrides = [*data.overrides, *rows()[row][0], *extra]
    if not (row == "llm4ts" and seed == SEEDS[0]):
        overrides.append("train.compare_baselines=false")
    source = aligned_source(job, runs)
    if source is not None:
        overrides.append(f"model.aligned_from={source}")
    return [sys.executable, "launch/train.py", "--config", CONFIG, *overrides, f"data.pred_len={horizon}",
            f"seed={seed}", f"run_dir={runs / name(job)}"]


def _keep(job: Job, runs: Path, log: Path) -> None:
    dest = RESULTS / name(job)
    if job[1] != "patchtst":
        keep_small_files(runs / name(job), dest)
        return
    summary = [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
    (dest / "summary.json").write_text(json.dumps(json.loads(summary), indent=1) + "\n")


def train_all(jobs: list[Job], runs: Path, extra: list[str], parallel: int) -> None:
    """Run the jobs, `parallel` at a time (one torch thread each when > 1); logs next to the runs."""
    runs.mkdir(parents=True, exist_ok=True)
    pending, active = list(jobs), []
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if parallel > 1 else {})}

    def ready(job) -> bool:  # a job starting from another run's aligned backbone waits for it
        source = aligned_source(job, runs)
        return source is None or (source / "align" / "export" / "config.json").is_file()

    while pending or active:
        while pending and len(active) < parallel and any(ready(j) for j in pending):
            job = next(j for j in pending if ready(j))
            pending.remove(job)
            cmd = command(job, runs, extra)
            (RESULTS / name(job)).mkdir(parents=True, exist_ok=True)
            log_path = runs / f"{name(job)}.log"
            log = open(log_path, "w")
            print("$", shlex.join(cmd), f"> {log_path}", flush=True)
            active.append((job, subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if pending and not active and not any(ready(j) for j in pending):
            sys.exit(f"{name(pending[0])} needs the aligned backbone of {aligned_source(pending[0], runs)}, which is "
                     "missing; train that run first")
        time.sleep(5)
        for item in list(active):
            job, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                sys.exit(f"{name(job)} failed (exit {proc.returncode}); see {log.name}")
            _keep(job, runs, Path(log.name))
            print(f"{name(job)}: done", flush=True)


def _test_metrics(job: Job) -> tuple[dict, dict] | None:
    """(test metrics, facts) of a finished job, or None."""
    path = RESULTS / name(job)
    if job[1] == "patchtst":
        if not (path / "metrics.json").is_file():
            return None
        metrics = json.loads((path / "metrics.json").read_text())
        summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
        return metrics["test"], {"minutes": summary.get("wall_time_s", 0) / 60, "val_mse": metrics["val"]["mse"]}
    if not (path / "run.json").is_file():
        return None
    run = json.loads((path / "run.json").read_text())
    minutes = (sum(s.get("wall_time_s", 0) for s in run["stages"].values()) + run["test"].get("wall_time_s", 0)) / 60
    val = run["stages"][list(run["stages"])[-1]]["val"]["mse"]
    return run["test"]["metrics"], {"minutes": minutes, "val_mse": val, "run": run}


def _cell(values: list[dict], key: str = "mse", second: str = "mae") -> str:
    if not values:
        return "(not run)"
    first, other = [v[key] for v in values], [v[second] for v in values]
    if len(values) == 1:
        return f"{first[0]:.3f} / {other[0]:.3f}"
    return f"{statistics.mean(first):.3f} ± {statistics.stdev(first):.3f} / {statistics.mean(other):.3f}"


def dataset_table(data: Dataset) -> str:
    horizons = data.horizons
    lines = ["| model | " + " | ".join(f"H={h}" for h in horizons) + " | avg | minutes per run | seeds |",
             "|" + "---|" * (len(horizons) + 4)]

    def add(title: str, per_h: dict[int, list[dict]], minutes: str, seeds: str) -> None:
        avg = "-"
        if all(per_h.get(h) for h in horizons):  # average over horizons of each horizon's mean
            avg = (f"{statistics.mean(statistics.mean(v['mse'] for v in per_h[h]) for h in horizons):.3f} / "
                   f"{statistics.mean(statistics.mean(v['mae'] for v in per_h[h]) for h in horizons):.3f}")
        lines.append(f"| {title} | " + " | ".join(_cell(per_h.get(h, [])) for h in horizons) +
                     f" | {avg} | {minutes} | {seeds} |")

    found = {}
    for row, (_, title) in rows().items():
        seeds = SEEDS if row in MULTI_SEED else SEEDS[:1]
        done = {h: [(s, r) for s in seeds if (r := _test_metrics((data.key, row, h, s)))] for h in horizons}
        found[row] = done
        minutes = [f["minutes"] for h in horizons for _, (_, f) in done[h]]
        used = sorted({s for h in horizons for s, _ in done[h]})
        add(title, {h: [m for _, (m, _) in done[h]] for h in horizons},
            f"{statistics.mean(minutes):.1f}" if minutes else "-", ", ".join(map(str, used)) or "-")
    reference = {h: [f["run"] for s, (_, f) in found["llm4ts"][h] if s == SEEDS[0]] for h in horizons}
    for key, title in (("rlinear", "rlinear (RevIN + ridge, closed form)"), ("dlinear", "DLinear"),
                       ("naive", "naive (repeat the last value)")):
        per_h = {h: [r["test"]["baselines"][key] for r in reference[h] if key in r["test"].get("baselines", {})]
                 for h in horizons}
        add(title, per_h, "< 1" if key != "naive" else "-", str(SEEDS[0]) if key == "dlinear" else "-")
    for title, figures in data.published.items():
        add(title, {h: [{"mse": figures[h][0], "mae": figures[h][1]}] for h in horizons if h in figures}, "-", "-")
    lines += ["", data.caption, "", _validation(data, found), "", _intervals(data, found)]
    return "\n".join(lines)


def _validation(data: Dataset, found: dict) -> str:
    """What every choice was made on: each row's validation MSE next to rlinear's on the same windows."""
    lines = ["Validation MSE (seed mean) on the windows each run selected on:", "",
             "| H | " + " | ".join(found) + " | rlinear |", "|" + "---|" * (len(found) + 2)]
    for h in data.horizons:
        cells = [f"{statistics.mean(f['val_mse'] for _, (_, f) in found[row][h]):.4f}" if found[row][h] else "-"
                 for row in found]
        rl = [f["run"]["test"]["baselines"]["rlinear"]["val_mse"] for s, (_, f) in found["llm4ts"][h]
              if s == SEEDS[0] and "rlinear" in f["run"]["test"].get("baselines", {})]
        lines.append(f"| {h} | " + " | ".join(cells) + f" | {rl[0]:.4f} |" if rl else f"| {h} | " + " | ".join(cells) + " | - |")
    return "\n".join(lines)


def _intervals(data: Dataset, found: dict) -> str:
    """Split-conformal 80 % intervals on test: coverage, CRPS and MASE where the runs recorded them."""
    lines = ["Prediction intervals on test (split-conformal from validation residuals; runs made before intervals "
             "existed show -): coverage of the 80 % interval / CRPS / MASE", "",
             "| model | " + " | ".join(f"H={h}" for h in data.horizons) + " |", "|" + "---|" * (len(data.horizons) + 1)]

    def cell(values: list[dict]) -> str:
        values = [v for v in values if "coverage_80" in v]
        if not values:
            return "-"
        mean = {k: statistics.mean(v[k] for v in values) if all(k in v for v in values) else None
                for k in ("coverage_80", "crps", "mase")}
        mase = f"{mean['mase']:.2f}" if mean["mase"] is not None else "-"
        return f"{mean['coverage_80']:.3f} / {mean['crps']:.3f} / {mase}"

    for row in ("llm4ts", "patchtst"):
        lines.append(f"| {row} | " + " | ".join(cell([m for _, (m, _) in found[row][h]]) for h in data.horizons) + " |")
    for key in ("rlinear", "dlinear", "naive"):
        per_h = [[f["run"]["test"]["baselines"][key] for s, (_, f) in found["llm4ts"][h]
                  if s == SEEDS[0] and key in f["run"]["test"].get("baselines", {})] for h in data.horizons]
        lines.append(f"| {key} | " + " | ".join(cell(v) for v in per_h) + " |")
    return "\n".join(lines)


def tables(keys: list[str]) -> str:
    return "\n\n".join(f"## {DATASETS[k].key}\n\n{dataset_table(DATASETS[k])}" for k in keys)


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--horizons", nargs="+", type=int, default=None, help="a subset of each dataset's horizons")
    parser.add_argument("--rows", nargs="+", choices=list(rows()), default=None, help="rows to train (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each when > 1)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="extra key=value for every training run")
    args = parser.parse_args()
    if args.results_dir:
        RESULTS = Path(args.results_dir).resolve()
    if not args.report_only:
        jobs = []
        for key in args.datasets:
            data = DATASETS[key]
            # the first horizon first: the others start from its aligned backbones
            for h in [h for h in data.horizons if args.horizons is None or h in args.horizons]:
                jobs += [(key, row, h, seed) for row in args.rows or list(rows())
                         for seed in (SEEDS if row in MULTI_SEED else SEEDS[:1])]
        jobs = [j for j in jobs if _test_metrics(j) is None]
        train_all(jobs, Path(args.runs_dir).resolve(), args.overrides, args.jobs)
    publish_table(RESULTS, tables(list(DATASETS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
