"""What makes the LLM add information beyond the look-back? Validation-only arms, each read out by exact
linear probing (minutes per arm), next to rlinear on the same validation windows.

Every arm is a real `launch/train.py` run with `train.test=false` (the test split is never scored here),
`stages.lp.solver=exact` and, unless the arm says otherwise, `model.head=flatten+linear` and no FT. The
table reports each arm's best validation MSE, rlinear's on the same windows (RevIN + ridge on the
look-back: the model with no LLM at all) and the gain over it.

    python tools/validation_sweep.py                       # every arm not yet in results/sweep/
    python tools/validation_sweep.py --only etth1-k6-a1     # some arms
    python tools/validation_sweep.py --jobs 2               # two runs at a time, one thread each
    python tools/validation_sweep.py --report-only          # the table from results/sweep/

Small files of every run (run.json, metrics.json, stage histories; never weights) are kept under
results/sweep/<arm>/ so that the table outlives the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from llm4ts_scale.inference.results import keep_small_files, publish_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "sweep"
COMMON = ["stages.lp.solver=exact", "stages.ft.epochs=0", "model.head=flatten+linear", "train.test=false",
          "train.log_with=none", "train.checkpoint_every_steps=100000", "model.backbone=smollm2-135m", "model.quantize=nf4"]
DATASETS = {
    # the few-shot target: 10 % of ETTh1's training windows, H=96; selection on every 4th validation window
    "etth1": ["data.path=ETTh1", "data.split=ett-hourly", "data.seq_len=336", "data.pred_len=96",
              "data.few_shot_percent=10", "data.val_stride=4", "data.batch_size=32"],
    # the second dataset, kept out of the tuning: ILI, all its training data, L=104, H=24 (GPT4TS / Time-LLM)
    "ili": ["data.path=national_illness", "data.split=ratio", "data.seq_len=104", "data.pred_len=24",
            "data.few_shot_percent=100", "data.val_stride=1", "data.batch_size=16"],
}
# name -> (dataset, overrides, what it tests)
ARMS: dict[str, tuple[str, list[str], str]] = {}
# arm -> the arm whose aligned backbone it starts from (model.aligned_from): read-out questions need no new alignment
BASES: dict[str, str] = {}


def arm(name: str, dataset: str, overrides: list[str], note: str, base: str | None = None) -> None:
    if base is not None:
        BASES[name] = base
        overrides = [*ARMS[base][1], *overrides]
    ARMS[name] = (dataset, overrides, note)


for ds in DATASETS:
    arm(f"{ds}-k6-a0", ds, ["model.layers=6", "stages.align.epochs=0"], "pretrained, 6 blocks, no alignment")
    arm(f"{ds}-k6-a1", ds, ["model.layers=6", "stages.align.epochs=1"], "pretrained, 6 blocks, 1 alignment epoch")
    arm(f"{ds}-rand-k6-a0", ds, ["model.layers=6", "stages.align.epochs=0", "model.backbone_init=random"],
        "random frozen weights, 6 blocks, no alignment")
    arm(f"{ds}-rand-k6-a1", ds, ["model.layers=6", "stages.align.epochs=1", "model.backbone_init=random"],
        "random frozen weights, 6 blocks, 1 alignment epoch")
    arm(f"{ds}-k2-a1", ds, ["model.layers=2", "stages.align.epochs=1"], "pretrained, 2 blocks, 1 alignment epoch")
for ds in DATASETS:  # the chosen depth: 2 blocks
    arm(f"{ds}-k2-a0", ds, ["model.layers=2", "stages.align.epochs=0"], "pretrained, 2 blocks, no alignment")
    arm(f"{ds}-rand-k2-a1", ds, ["model.layers=2", "stages.align.epochs=1", "model.backbone_init=random"],
        "random frozen weights, 2 blocks, 1 alignment epoch")
    arm(f"{ds}-k1-a1", ds, ["model.layers=1", "stages.align.epochs=1"], "pretrained, 1 block, 1 alignment epoch")
    arm(f"{ds}-k2-a1-ft-1e-5", ds, ["model.layers=2", "stages.align.epochs=1", "stages.ft.epochs=3",
                                    "stages.ft.lr=1e-5", "train.patience=2"],
        "2 blocks, 1 alignment epoch, exact LP, then FT 3 epochs at lr 1e-5")
    arm(f"{ds}-k2-a3", ds, ["model.layers=2", "stages.align.epochs=3", "train.patience=3"],
        "pretrained, 2 blocks, 3 alignment epochs")
# the other questions, asked at the chosen depth (2 blocks, 1 alignment epoch)
for ds in DATASETS:
    arm(f"{ds}-flatten-k2-a1", ds, ["model.head=flatten", "model.layers=2", "stages.align.epochs=1"],
        "the official head alone (no linear shortcut)")
arm("etth1-k4-a1", "etth1", ["model.layers=4", "stages.align.epochs=1"], "pretrained, 4 blocks, 1 alignment epoch")
arm("etth1-k30-a1", "etth1", ["model.layers=30", "stages.align.epochs=1"], "pretrained, all 30 blocks, 1 alignment epoch")
arm("etth1-k2-a10", "etth1", ["model.layers=2", "stages.align.epochs=10", "train.patience=10"],
    "2 blocks, 10 alignment epochs (the official length)")
arm("etth1-l512-k2-a1", "etth1", ["data.seq_len=512", "model.layers=2", "stages.align.epochs=1"],
    "look-back 512 (the official 10 % ETTh1 setting)")
arm("etth1-kernel7-k2-a1", "etth1", ["model.conv_kernel=7", "model.layers=2", "stages.align.epochs=1"],
    "token encoder kernel 7 (the official 10 % ETTh1 setting)")
arm("etth1-kernel1-k2-a1", "etth1", ["model.conv_kernel=1", "model.layers=2", "stages.align.epochs=1"],
    "token encoder kernel 1 (a per-patch linear map)")
arm("etth1-r32-k2-a1", "etth1", ["model.lora.r=32", "model.lora.alpha=32", "model.layers=2", "stages.align.epochs=1"],
    "LoRA rank 32 (alpha 32) during alignment")
# FT after exact LP: the stage keeps the LP weights unless an epoch validates better
for ds in DATASETS:
    arm(f"{ds}-k6-a0-ft-1e-4", ds, ["model.layers=6", "stages.align.epochs=0", "stages.ft.epochs=3",
                                    "stages.ft.lr=1e-4", "train.patience=2"],
        "6 blocks, no alignment, exact LP, then FT (default groups) 3 epochs at lr 1e-4")
arm("etth1-k6-a0-ft-1e-5", "etth1", ["model.layers=6", "stages.align.epochs=0", "stages.ft.epochs=3",
                                     "stages.ft.lr=1e-5", "train.patience=2"],
    "6 blocks, no alignment, exact LP, then FT 3 epochs at lr 1e-5")
# alignment on a corpus (llm4ts_scale/data/corpus.py), read out by exact LP on the target
SYNTH = '{path: "synthetic:kernelsynth", series: 1000, length: 2048, weight: %s}'
arm("etth1-corpus-own+ili+synth", "etth1", ["model.layers=6", "stages.align.epochs=1",
                                            f"stages.align.data=[ETTh1, national_illness, {SYNTH % 0.02}]"],
    "1 alignment epoch on ETTh1's 10 % + ILI + 34k synthetic windows")
arm("etth1-corpus-synth", "etth1", ["model.layers=6", "stages.align.epochs=1", f"stages.align.data=[{SYNTH % 0.02}]"],
    "1 alignment epoch on 34k synthetic windows alone")
arm("ili-corpus-own+etth1+synth", "ili", ["model.layers=6", "stages.align.epochs=1",
                                          f"stages.align.data=[national_illness, {{path: ETTh1, weight: 0.25}}, "
                                          f"{SYNTH % 0.01}]"],
    "1 alignment epoch on ILI + 15k ETTh1 + 19k synthetic windows")
arm("ili-corpus-synth", "ili", ["model.layers=6", "stages.align.epochs=1", f"stages.align.data=[{SYNTH % 0.01}]"],
    "1 alignment epoch on 19k synthetic windows alone")
arm("etth1-k2-a1-ft-lora", "etth1", ["model.layers=2", "stages.align.epochs=1", "stages.ft.epochs=3",
                                     "stages.ft.lr=1e-5", "stages.ft.groups=[head,lora]", "train.patience=2"],
    "2 blocks, 1 alignment epoch, exact LP, then FT of head + LoRA only at lr 1e-5")
# Levers the earlier sweep did not try (issue: make the LLM earn its place), at the chosen recipe (2 blocks, 3
# alignment epochs). Read-out arms start from the recipe arm's aligned backbone (BASES), so only LP (and FT) run.
for ds in DATASETS:
    recipe = f"{ds}-k2-a3"
    arm(f"{ds}-k2-a3-all", ds, ["model.read_layers=all"], "the head reads blocks 1 and 2 side by side "
        "(a ridge-weighted mix of layers)", base=recipe)
    arm(f"{ds}-k2-a3-mean", ds, ["model.read_pool=mean"], "the head reads block 2's tokens mean-pooled", base=recipe)
    arm(f"{ds}-k2-a3-all-mean", ds, ["model.read_layers=all", "model.read_pool=mean"],
        "blocks 1 and 2, mean-pooled", base=recipe)
    arm(f"{ds}-k2-a3-ft-enc", ds, ["stages.ft.epochs=5", "stages.ft.lr=1e-4", "stages.ft.groups=[embeddings,lora]",
                                   "train.patience=2"],
        "exact LP, then FT of the encoder + LoRA with the head frozen, lr 1e-4 (LP-FT's own argument)", base=recipe)
    arm(f"{ds}-k2-a3-ft-enc-1e-3", ds, ["stages.ft.epochs=5", "stages.ft.lr=1e-3", "stages.ft.groups=[embeddings,lora]",
                                        "train.patience=2"],
        "exact LP, then FT of the encoder + LoRA with the head frozen, lr 1e-3", base=recipe)
    arm(f"{ds}-k6-a3", ds, ["model.layers=6", "stages.align.epochs=3", "train.patience=3"],
        "6 blocks, 3 alignment epochs")
    arm(f"{ds}-k6-a3-all-mean", ds, ["model.read_layers=all", "model.read_pool=mean"],
        "6 blocks, the head reads blocks 1..6 mean-pooled", base=f"{ds}-k6-a3")
    arm(f"{ds}-scratch-k2-a3-ft", ds, ["model.layers=2", "stages.align.epochs=3", "train.patience=3",
                                       "model.backbone_init=scratch", "model.quantize=none", "stages.ft.epochs=10",
                                       "stages.ft.lr=1e-4"],
        "the same 2 blocks from random weights trained end to end: alignment, exact LP, FT of everything")
arm("etth1-k2-a3-corpus", "etth1", ["model.layers=2", "stages.align.epochs=3", "train.patience=3",
                                    f"stages.align.data=[ETTh1, {SYNTH % 0.02}]"],
    "2 blocks, 3 alignment epochs on ETTh1's 10 % + 34k synthetic windows")
arm("ili-k2-a3-corpus", "ili", ["model.layers=2", "stages.align.epochs=3", "train.patience=3",
                                f"stages.align.data=[national_illness, {SYNTH % 0.01}]"],
    "2 blocks, 3 alignment epochs on ILI + 19k synthetic windows")
arm("ili-k2-a10", "ili", ["model.layers=2", "stages.align.epochs=10", "train.patience=10"],
    "2 blocks, 10 alignment epochs (the official length)")
arm("ili-k6-a3-all", "ili", ["model.read_layers=all"], "6 blocks, the head reads blocks 1..6 side by side",
    base="ili-k6-a3")
arm("ili-k2-a3-p24s2", "ili", ["model.layers=2", "stages.align.epochs=3", "train.patience=3", "data.patch_len=24",
                               "data.stride=2"],
    "2 blocks, 3 alignment epochs, patches of 24 every 2 steps (PatchTST's ILI geometry: 42 tokens)")


def run_dir(name: str, runs: Path) -> Path:
    return runs / name


def aligned(name: str, runs: Path) -> bool:
    return (run_dir(name, runs) / "align" / "export" / "config.json").is_file()


def command(name: str, runs: Path) -> list[str]:
    dataset, overrides, _ = ARMS[name]
    base = [f"model.aligned_from={run_dir(BASES[name], runs)}"] if name in BASES else []
    return [sys.executable, "launch/train.py", *COMMON, *DATASETS[dataset], *overrides, *base,
            f"run_dir={run_dir(name, runs)}", "--restart"]


def with_bases(names: list[str], runs: Path) -> list[str]:
    """`names` after the arms they start from whose aligned backbone is not in `runs` (run again if need be)."""
    needed = [BASES[n] for n in names if n in BASES and not aligned(BASES[n], runs)]
    return list(dict.fromkeys([*needed, *names]))


def train_all(names: list[str], runs: Path, parallel: int) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    pending, active = with_bases(names, runs), []
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if parallel > 1 else {})}
    running = set()
    while pending or active:
        ready = [n for n in pending if n not in BASES or (aligned(BASES[n], runs) and BASES[n] not in running)]
        while ready and len(active) < parallel:
            name = ready.pop(0)
            pending.remove(name)
            running.add(name)
            cmd = command(name, runs)
            log = open(runs / f"{name}.log", "w")
            print("$", shlex.join(cmd), f"> {log.name}", flush=True)
            active.append((name, time.time(), subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                               env=env), log))
        time.sleep(5)
        for item in list(active):
            name, started, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            running.discard(name)
            if proc.returncode != 0:
                print(f"{name} failed (exit {proc.returncode}); see {log.name}", flush=True)
                pending = [n for n in pending if BASES.get(n) != name]  # nothing to start from
                continue
            keep_small_files(run_dir(name, runs), RESULTS / name)
            print(f"{name}: {(time.time() - started) / 60:.1f} min", flush=True)


def rlinear_val(dataset: str, overrides: list[str]) -> float:
    """rlinear's validation MSE on the arm's validation windows, at the arm's look-back (cached in
    results/sweep/rlinear-<dataset>[-L<seq_len>].json; the validation targets do not depend on L)."""
    look_back = [o for o in overrides if o.startswith("data.seq_len=")]
    suffix = f"-L{look_back[-1].split('=')[1]}" if look_back else ""
    path = RESULTS / f"rlinear-{dataset}{suffix}.json"
    if not path.is_file():
        from llm4ts_scale.baselines.rlinear import fit_rlinear
        from llm4ts_scale.core.config import load_config
        from llm4ts_scale.data.sources import open_run_store

        d = load_config(None, DATASETS[dataset] + look_back).data
        store = open_run_store(d)
        r = fit_rlinear(store, d.seq_len, d.pred_len, few_shot_percent=d.few_shot_percent, val_stride=d.val_stride,
                        score_test=False)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"val": r.val, "alpha": r.alpha, "wall_time_s": r.wall_time_s}, indent=1))
    return json.loads(path.read_text())["val"]["mse"]


def table() -> str:
    lines = ["| arm | what it tests | val MSE | rlinear val MSE | gain over rlinear | read-out (LP penalties) | "
             "FT | minutes |", "|---|---|---|---|---|---|---|---|"]
    for name, (dataset, overrides, note) in ARMS.items():
        path = RESULTS / name / "run.json"
        if not path.is_file():
            lines.append(f"| {name} | {note} | (not run) | | | | | |")
            continue
        run = json.loads(path.read_text())
        stages = run["stages"]
        last = [s for s in ("lp", "ft") if s in stages][-1]
        val = stages[last]["val"]["mse"]
        base = rlinear_val(dataset, overrides)
        lp = stages["lp"]["history"][0]
        alpha_u = lp.get("alpha_linear")
        readout = f"linear {alpha_u:.3g}, llm {lp.get('alpha_llm'):.3g}" if alpha_u else f"llm {lp.get('alpha_llm'):.3g}"
        ft = "-"
        if "ft" in stages:
            ft = "kept LP" if stages["ft"].get("kept_start") else f"epoch {stages['ft']['best_epoch']}"
        minutes = sum(s.get("wall_time_s", 0) for s in stages.values()) / 60
        lines.append(f"| {name} | {note} | {val:.4f} | {base:.4f} | {100 * (base - val) / base:+.1f} % | {readout} "
                     f"| {ft} | {minutes:.0f} |")
    lines += ["", "Validation only (train.test=false: no test window was scored). Every arm: " + " ".join(COMMON)
              + "; ETTh1: " + " ".join(DATASETS["etth1"]) + "; ILI: " + " ".join(DATASETS["ili"]) + ". Seed 2023. "
              "Gain: how much lower the arm's validation MSE is than rlinear's on the same windows."]
    return "\n".join(lines)


CORPUS_ROWS = {  # dataset -> [(arm, what alignment read)]
    "etth1": [("etth1-k6-a0", "(no alignment)"), ("etth1-k6-a1", "(a) ETTh1's own 10 %"),
              ("etth1-corpus-own+ili+synth", "(b) ETTh1 10 % + ILI + synthetic"), ("etth1-corpus-synth", "(c) synthetic alone")],
    "ili": [("ili-k6-a0", "(no alignment)"), ("ili-k6-a1", "(a) ILI's own training windows"),
            ("ili-corpus-own+etth1+synth", "(b) ILI + ETTh1 + synthetic"), ("ili-corpus-synth", "(c) synthetic alone")],
}


def corpus_table() -> str:
    """The corpus evidence: each target after alignment on (a) its own windows, (b) a mixed corpus, (c)
    synthetic series alone, read out by exact LP on the target's validation split."""
    lines = ["| target | alignment read | windows per epoch | alignment minutes | val MSE | rlinear val MSE | gain |",
             "|---|---|---|---|---|---|---|"]
    for dataset, arms in CORPUS_ROWS.items():
        for name, what in arms:
            path = RESULTS / name / "run.json"
            if not path.is_file():
                lines.append(f"| {dataset} | {what} | (not run) | | | | |")
                continue
            run = json.loads(path.read_text())
            align = run["stages"].get("align", {})
            if "corpus" in align:
                windows = " + ".join(f"{c['windows_per_epoch']:,} {c['source']}" for c in align["corpus"])
            elif align:
                windows = f"{sum(h['rank_windows'][0][0] for h in align['history'][:1]):,} (own)"
            else:
                windows = "-"
            val, base = run["stages"]["lp"]["val"]["mse"], rlinear_val(dataset, [])
            lines.append(f"| {dataset} | {what} | {windows} | {align.get('wall_time_s', 0) / 60:.1f} | {val:.4f} | "
                         f"{base:.4f} | {100 * (base - val) / base:+.1f} % |")
    lines += ["", "SmolLM2-135M, 6 blocks, NF4 + LoRA r=8, one alignment epoch, then exact LP (flatten + linear "
              "shortcut) on the target; validation only. Synthetic: synthetic:kernelsynth, 1,000 series of 2,048 steps "
              "at the target's frequency, a fraction of them per epoch (weight). Minutes on a 2-core CPU shared with "
              "other runs (AMD EPYC with AVX-512 and bf16)."]
    return "\n".join(lines)


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/sweep")
    parser.add_argument("--only", nargs="*", default=None, help="arm names to run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each when > 1)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    if args.results_dir:
        RESULTS = Path(args.results_dir).resolve()
    if not args.report_only:
        unknown = sorted(set(args.only or []) - set(ARMS))
        if unknown:
            parser.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
        names = [n for n in ARMS if (not args.only or n in args.only) and not (RESULTS / n / "run.json").is_file()]
        train_all(names, Path(args.runs_dir).resolve(), args.jobs)
    publish_table(RESULTS, table())
    from llm4ts_scale.core.io import atomic_write_text

    atomic_write_text(RESULTS / "corpus.md", corpus_table() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
