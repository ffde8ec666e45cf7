"""Why does the forecaster lose to a linear model? Ablations on the VALIDATION split of ETTh1 10 %, H=96.

Every variant is the same LP-FT run (SmolLM2 K=6, NF4 + LoRA, L=336, no alignment unless the variant
says so) with one thing changed; each runs to its best validation epoch (early stopping) and the
table reports that best validation MSE/MAE. No test number is read here: choices are made on
validation only. Model selection scores every 4th validation window (data.val_stride=4, 4,879 of
19,495 windows) to fit a 2-core CPU; the table says so.

    python tools/ablation.py                       # run every variant not finished yet, then the table
    python tools/ablation.py --only calendar-none  # some variants
    python tools/ablation.py --report-only         # table from results/ablation/

Small result files (run.json, each stage's history.json and metrics.json; never weights) are copied
to results/ablation/<variant>/ so that the table outlives the run directories.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from llm4ts_scale.inference.results import keep_small_files, publish_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "ablation"  # --results-dir moves it (e.g. when running from a snapshot checkout)
BASE = [
    "data.path=ETTh1", "data.split=ett-hourly", "data.seq_len=336", "data.pred_len=96", "data.few_shot_percent=10",
    "data.batch_size=32", "data.val_stride=4", "model.backbone=smollm2-135m", "model.layers=6", "model.quantize=nf4",
    "train.log_with=none", "train.patience=2", "train.checkpoint_every_steps=100000",
    "stages.align.epochs=0", "stages.lp.epochs=10", "stages.lp.lr=1e-4", "stages.ft.epochs=3", "stages.ft.lr=1e-4",
    "model.calendar_init=zero",
]
# name -> (overrides on top of BASE, what it tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "as-before": (["model.embed_init=default", "model.calendar=auto", "model.calendar_init=normal"],
                  "encoder with PyTorch's default init (output std ~2.6) and every calendar table N(0,1): as before"),
    "scaled": (["model.embed_init=backbone", "model.calendar=auto"],
               "encoder on the backbone's token-embedding scale (std ~0.14), calendar tables start at zero"),
    "scaled-calendar-none": (["model.embed_init=backbone", "model.calendar=none"], "scaled encoder, no calendar"),
    "default-calendar-none": (["model.embed_init=default", "model.calendar=none"],
                              "PyTorch's default encoder init (input-dominated residual stream), no calendar"),
    "default-hour-weekday": (["model.embed_init=default", "model.calendar=[hour,weekday]"],
                             "default init, hour and weekday tables only (zero-init)"),
    "default-calendar-none-align": (["model.embed_init=default", "model.calendar=none", "stages.align.epochs=1"],
                                    "default init, no calendar, one epoch of time-series alignment first"),
}


def run_variant(name: str, overrides: list[str], runs_dir: Path) -> Path:
    run_dir = runs_dir / name
    cmd = [sys.executable, "launch/train.py", *BASE, *overrides, f"run_dir={run_dir}", "--restart"]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return run_dir


def table() -> str:
    lines = ["| variant | what it tests | best val MSE | best val MAE | stage, epoch | LP best val | minutes |",
             "|---|---|---|---|---|---|---|"]
    for name, (_, note) in VARIANTS.items():
        path = RESULTS / name / "run.json"
        if not path.is_file():
            lines.append(f"| {name} | {note} | (not run) | | | | |")
            continue
        run = json.loads(path.read_text())
        stages = run["stages"]
        last = [s for s in ("align", "lp", "ft") if s in stages and s != "align"][-1]
        best = stages[last]
        lp = stages.get("lp", {}).get("val", {}).get("mse")
        minutes = sum(s.get("wall_time_s", 0) for s in stages.values()) / 60
        lp_text = f"{lp:.4f}" if lp is not None else "-"
        lines.append(f"| {name} | {note} | {best['val']['mse']:.4f} | {best['val']['mae']:.4f} | {last} {best['best_epoch']} "
                     f"| {lp_text} | {minutes:.0f} |")
    lines.append("")
    lines.append("ETTh1, 10 % of the training windows, L=336, H=96, SmolLM2-135M first 6 blocks (NF4 + LoRA r=8), "
                 "best epoch on validation (every 4th window, 4,879 samples), one seed (2023). Common settings: "
                 + " ".join(BASE))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/ablation")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results-dir", default=None, help="where the small result files and table.md go")
    args = parser.parse_args()
    if args.results_dir:
        global RESULTS
        RESULTS = Path(args.results_dir).resolve()
    if not args.report_only:
        for name, (overrides, _) in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            started = time.time()
            run_dir = run_variant(name, overrides, Path(args.runs_dir))
            keep_small_files(REPO / run_dir if not run_dir.is_absolute() else run_dir, RESULTS / name)
            print(f"{name}: {(time.time() - started) / 60:.1f} min", flush=True)
    publish_table(RESULTS, table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
