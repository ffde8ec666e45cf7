#!/usr/bin/env python
"""What a big backbone costs per rank: peak RSS, backbone bytes and train / eval samples/s of a real FT stage
(head + LoRA + norms + encoder train, NF4 backbone) under each launcher setting, next to `describe`'s figures.

Every cell is a real run of launch/train.py in fresh processes (tools/bench_train.py's launcher and per-rank
telemetry, llm4ts_scale/train/telemetry.py): a few optimizer steps at a fixed GLOBAL batch, then one validation
pass over a fixed number of windows. Settings: plain torch (1 process) and ZeRO-2, ZeRO-3 and ZeRO-3 with
optimizer and parameter offload (ds_configs/zero3_offload.json), each with 1 and 2 processes over gloo.
Resumable: each finished cell is kept in results/backbone_cost/<cell>.json and skipped next time.

    python tools/bench_backbone_cost.py                          # qwen2.5-1.5b, K = 28 every setting, then K = 2, 6, 14
    python tools/bench_backbone_cost.py --layers 2 6 --settings zero2-1 zero3-2
    python tools/bench_backbone_cost.py --report-only

Predictions (from `describe`, no run): backbone_bytes as held on this machine (NF4 dequantized to the compute
dtype on a CPU, llm4ts_scale/model/backbone.py:should_dequantize), backbone_bytes_4bit as held on a GPU, and the
ZeRO arithmetic for the trainable part: two fp32 Adam moments = 8 bytes per trainable parameter,
divided by the process count under ZeRO-2/3; under ZeRO-3 the backbone too is divided (its parameters are
partitioned like any other).
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

import bench_scaling
import bench_train

from llm4ts_scale.core.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "backbone_cost"
SETTINGS = {  # name -> (processes, DeepSpeed config or None)
    "torch-1": (1, None),
    "zero2-1": (1, "zero2.json"), "zero2-2": (2, "zero2.json"),
    "zero3-1": (1, "zero3.json"), "zero3-2": (2, "zero3.json"),
    "offload-1": (1, "zero3_offload.json"), "offload-2": (2, "zero3_offload.json"),
}
CURVE_SETTINGS = ("zero3-2",)  # the cost curve in K
ADAM_BYTES_PER_PARAM = 8  # exp_avg + exp_avg_sq in fp32 (the fp32 master copy is reported apart)


def cell_name(backbone: str, layers: int, setting: str) -> str:
    return f"{backbone}-k{layers}-{setting}"


def command(setting: str, args, layers: int, run_dir: Path) -> list[str]:
    processes, ds = SETTINGS[setting]
    if processes == 1:
        cmd = [sys.executable, "launch/train.py"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate_cpu.yaml",
               "--num_processes", str(processes), "--main_process_port", str(bench_train.free_port()), "launch/train.py"]
    if ds:
        cmd += ["--ds", f"ds_configs/{ds}"]
    overrides = {
        "run_dir": run_dir, "data.path": "ETTh1", "data.seq_len": 336, "data.pred_len": 96,
        "data.few_shot_percent": 10, "data.batch_size": args.global_batch // processes,
        "data.eval_batch_size": args.eval_batch, "data.val_stride": args.val_stride,
        "model.backbone": args.backbone, "model.layers": layers, "model.quantize": "nf4",
        "train.limit_train_batches": args.steps, "train.checkpoint_every_steps": 10**9, "train.log_with": "none",
        "train.test": False, "train.compare_baselines": False,
        "stages.align.epochs": 0, "stages.lp.epochs": 0, "stages.ft.epochs": 1,
    }
    return cmd + [f"{k}={v}" for k, v in overrides.items()] + ["--restart"]


def describe(backbone: str, layers: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", "describe", f"model.backbone={backbone}",
                          f"model.layers={layers}", "model.quantize=nf4", "data.seq_len=336", "data.pred_len=96"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out[out.index("{"):])
    return {k: summary[k] for k in ("params_total", "backbone_bytes", "backbone_bytes_4bit", "precision")} | {
        "trainable_ft": summary["trainable"]["ft"]}


def described(backbone: str, layers: int) -> dict:
    """describe's figures for (backbone, K), computed once and kept in results/ (precision as a run here)."""
    path = RESULTS / f"describe-{backbone}-k{layers}.json"
    if not path.is_file():
        atomic_write_json(path, describe(backbone, layers))
    return json.loads(path.read_text())


def predicted_rank_bytes(pred: dict, setting: str) -> dict:
    processes, ds = SETTINGS[setting]
    shards = processes if ds else 1
    backbone = pred["backbone_bytes"] / (processes if ds and "zero3" in ds else 1)
    return {"backbone_bytes": backbone, "optimizer_bytes": pred["trainable_ft"] * ADAM_BYTES_PER_PARAM / shards}


def run_cell(setting: str, args, layers: int, workdir: Path) -> dict:
    run_dir = workdir / cell_name(args.backbone, layers, setting)
    processes = SETTINGS[setting][0]
    threads = args.threads or max((os.cpu_count() or 2) // processes, 1)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), LLM4TS_CPU_THREADS=str(threads))
    cmd = command(setting, args, layers, run_dir)
    log = workdir / f"{cell_name(args.backbone, layers, setting)}.log"
    print(f"[{setting} K={layers}] load avg {os.getloadavg()[0]:.2f}", flush=True)
    started = time.time()
    with open(log, "w") as handle:
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    files = [run_dir / "ft" / f"rank{k}.json" for k in range(processes)]
    if rc != 0 or not all(f.is_file() for f in files):
        tail = log.read_text(errors="replace").splitlines()[-6:]
        print(f"  FAILED (exit {rc}); log {log}:\n  " + "\n  ".join(tail), flush=True)
        return {"failed": f"exit {rc}", "log_tail": tail}
    ranks = [json.loads(f.read_text()) for f in files]
    out = bench_train.summarize(ranks, warmup=1)
    out["eval_samples"] = ranks[0]["eval_samples"]
    out["eval_samples_per_s"] = ranks[0]["eval_samples"] / max(r["eval_seconds"] for r in ranks)
    out["peak_rss_per_rank_mib"] = [r["peak_rss_bytes"] / 2**20 for r in ranks]
    out["rss_train_per_rank_mib"] = [r.get("rss_train_bytes", float("nan")) / 2**20 for r in ranks]
    out["wall_s"] = time.time() - started
    return out


def failure(result: dict) -> str:
    """One phrase for a failed cell: a SIGKILL from the kernel is the out-of-memory killer on these machines."""
    tail = result.get("log_tail") or []
    if any("SIGKILL" in line or "exitcode  : -9" in line for line in tail):
        return "a rank was killed (SIGKILL: out of memory)"
    meaningful = [line.strip() for line in tail if line.strip().strip("=")]
    return (meaningful[-1] if meaningful else result["failed"])[:120]


def table(backbone: str) -> str:
    cells = [json.loads(p.read_text()) for p in RESULTS.glob(f"{backbone}-k*-*.json")]
    cells.sort(key=lambda c: (c["layers"], list(SETTINGS).index(c["setting"])))
    lines = [f"`{backbone}`, NF4 + LoRA r=8, FT stage (head, LoRA, norms, encoder train), ETTh1 L=336 H=96:",
             "", "| K | setting | procs | RSS per rank in training MiB | peak RSS per rank MiB (loading included) "
             "| predicted backbone MiB per rank (describe) | predicted Adam state MiB per rank "
             "| optimizer state per rank MiB (measured) | train samples/s "
             "| eval samples/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        r, pred = cell["result"], predicted_rank_bytes(described(backbone, cell["layers"]), cell["setting"])
        if "failed" in r:
            lines.append(f"| {cell['layers']} | {cell['setting']} | {SETTINGS[cell['setting']][0]} | failed: "
                         f"{failure(r)} | | | | | | |")
            continue
        in_training = max(r.get("rss_train_per_rank_mib") or [float("nan")])
        lines.append(f"| {cell['layers']} | {cell['setting']} | {r['processes']} | {in_training:.0f} | "
                     f"{max(r['peak_rss_per_rank_mib']):.0f} | {pred['backbone_bytes'] / 2**20:.0f} | "
                     f"{pred['optimizer_bytes'] / 2**20:.1f} | {max(r['optimizer_state_bytes'] or [0]) / 2**20:.1f} | "
                     f"{r['steady_samples_per_s']:.2f} | {r['eval_samples_per_s']:.1f} |")
    meta = next((c for c in cells if "failed" not in c["result"]), None)
    if meta:
        lines += ["", f"Global batch {meta['global_batch']}, {meta['steps']} optimizer steps (the first left out of the "
                  f"rate), one validation pass of {meta['result']['eval_samples']} (window, channel) pairs; "
                  f"{meta['result']['torch_threads']} torch thread(s) per process; "
                  f"2-core {bench_scaling.cpu_model()}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="qwen2.5-1.5b")
    parser.add_argument("--layers", type=int, nargs="*", default=None, help="default: all blocks, then 2 6 14")
    parser.add_argument("--settings", nargs="*", default=None, help=f"default: all at full depth, {CURVE_SETTINGS} "
                        "for the K curve; choose from " + ", ".join(SETTINGS))
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--val-stride", type=int, default=400, help="every k-th validation window (400: 49 pairs)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: CPUs / processes); "
                        "default 1, as in tools/bench_train.py: a 2-thread process collapses when other work shares the cores")
    parser.add_argument("--retry-failed", action="store_true", help="run again the cells that failed (e.g. killed "
                        "for memory while other work shared the machine)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        if args.backbone not in bench_scaling.BACKBONES:
            parser.error(f"--backbone: one of {', '.join(bench_scaling.BACKBONES)}")
        total = bench_scaling.BACKBONES[args.backbone]
        plan = []
        for k in args.layers or [total, 2, 6, 14]:
            chosen = args.settings or (list(SETTINGS) if k == total else list(CURVE_SETTINGS))
            plan += [(k, s) for s in chosen]
        workdir = Path(tempfile.mkdtemp(prefix="bench-cost-"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        for k, setting in plan:
            path = RESULTS / f"{cell_name(args.backbone, k, setting)}.json"
            if path.is_file() and not (args.retry_failed and "failed" in json.loads(path.read_text())["result"]):
                continue
            result = run_cell(setting, args, k, workdir)
            atomic_write_json(path, {"backbone": args.backbone, "layers": k, "setting": setting, "result": result,
                                     "global_batch": args.global_batch, "steps": args.steps,
                                     "cpu": bench_scaling.cpu_model()})
            print(f"  {json.dumps(result)[:300]}", flush=True)
    text = table(args.backbone)
    atomic_write_text(RESULTS / "table.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
