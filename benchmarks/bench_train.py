#!/usr/bin/env python
"""Benchmark the training stack (issue #4): 1 process without DeepSpeed vs 2 processes under ZeRO-2 and ZeRO-3.

Every setting is a real run of the main entry point in a subprocess, on the same tiny random LLaMA
backbone built here, one after the other on this machine:
  single  python launch/train.py ...                                            (plain torch AdamW)
  zero2   accelerate launch --config_file launch/accelerate_cpu.yaml --num_processes 2
              launch/train.py --ds ds_configs/zero2.json ...
  zero3   the same with ds_configs/zero3.json
Held constant: the GLOBAL batch (--global-batch, split evenly over the processes), the number of
optimizer steps (train.limit_train_batches), the data (ETTh1, default L=96, H=24) and the stage (ft only: head,
LoRA, norms and embeddings train). The figures come from what each rank writes at the end of the stage,
`<run_dir>/ft/rank<k>.json` (llm4ts_scale/train/telemetry.py):
  samples/s      training windows over all ranks / training-loop seconds (slowest rank). The loop only:
                 model loading, validation and the test pass are excluded. "steady" drops the first
                 --warmup steps (the first batch fills the shuffle buffer; DeepSpeed warms up).
  peak RSS       ru_maxrss of each rank process at the end of the training loop (before validation);
                 the largest rank is shown, with the value at stage end (after validation) next to it.
  speed-up       steady samples/s relative to the 1-process setting.
  optimizer      bytes of tensors in the state of the torch optimizer that does the update on that rank
                 (Adam moments + step), read after its first step; ratio = per-rank bytes / 1-process
                 bytes. ZeRO-2 partitions optimizer state over ranks, so its ratio must be about 0.5.
The rest of each run still happens, untimed: validation (whole val split) and the final val/test pass;
--eval-batch-size keeps them short.
Threads: every process gets OMP_NUM_THREADS=--threads (default 1, so 2 processes use 2 cores and 1 process
one). On a shared 2-core machine a 2-thread process collapses when other work competes for the cores
(measured here under load ~5: 37 samples/s with 2 threads vs 2030 with 1), so `--threads auto` (CPUs per
process) is only meaningful on an otherwise idle machine. The load average is printed next to each
setting; scale up with --batches / --hidden / --layers for steadier numbers.

    python benchmarks/bench_train.py [--batches 100] [--global-batch 64] [--layers 2] [--hidden 64]
                                [--quantize nf4] [--settings single,zero2,zero3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> (processes, DeepSpeed config or None)
    "single": (1, None),
    "zero2": (2, "zero2.json"),
    "zero3": (2, "zero3.json"),
}
ZERO2_RATIO_TOLERANCE = 0.05


def default_data() -> Path:
    env = os.environ.get("LLM4TS_DATA_PATH")
    folder = Path(env.split(os.pathsep)[0]) if env else REPO.parent / "shared" / "data"
    return folder / "ETTh1.csv"


def build_tiny_llama(directory: Path, layers: int, hidden: int, seed: int = 0) -> Path:
    """A random-weight LLaMA decoder saved with save_pretrained (no hub download needed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(hidden // 16, 2)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1), vocab_size=256,
                         max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(setting: str, args, backbone: Path, run_dir: Path) -> list[str]:
    processes, ds = SETTINGS[setting]
    if processes == 1:
        cmd = [sys.executable, "launch/train.py"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate_cpu.yaml",
               "--num_processes", str(processes), "--main_process_port", str(free_port()), "launch/train.py"]
    if ds:
        cmd += ["--ds", f"ds_configs/{ds}"]
    overrides = {
        "run_dir": run_dir, "data.path": args.data, "data.seq_len": args.seq_len, "data.pred_len": args.pred_len,
        "data.batch_size": args.global_batch // processes, "data.eval_batch_size": args.eval_batch_size,
        "model.backbone": backbone, "model.layers": args.layers, "model.quantize": args.quantize,
        "model.lora.r": args.lora_r, "model.dropout": 0.0,
        "train.limit_train_batches": args.batches, "train.checkpoint_every_steps": 10**9, "train.log_with": "none",
        "stages.align.epochs": 0, "stages.lp.epochs": 0, "stages.ft.epochs": 1,
    }
    return cmd + [f"{k}={v}" for k, v in overrides.items()]


def summarize(ranks: list[dict], warmup: int) -> dict:
    def rate(records, skip):
        samples = sum(sum(r["step_samples"][skip:]) for r in records)
        seconds = max(sum(r["step_seconds"][skip:]) for r in records)
        return samples / seconds if seconds > 0 else float("nan")

    return {
        "processes": len(ranks),
        "samples": sum(r["train_samples"] for r in ranks),
        "samples_per_s": sum(r["train_samples"] for r in ranks) / max(r["train_seconds"] for r in ranks),
        "steady_samples_per_s": rate(ranks, warmup),
        "peak_rss_train_mib": max(r["peak_rss_train_bytes"] for r in ranks) / 2**20,
        "peak_rss_stage_mib": max(r["peak_rss_bytes"] for r in ranks) / 2**20,
        "optimizer_state_bytes": [r["optimizer_state_bytes"] for r in ranks],
        "optimizer_master_bytes": [r["optimizer_master_bytes"] for r in ranks],
        "optimizer_chain": ranks[0].get("optimizer_chain"),
        "trainable_params": ranks[0]["trainable_params"],
        "torch_threads": ranks[0]["torch_threads"],
    }


def run_setting(setting: str, args, backbone: Path, workdir: Path) -> dict:
    run_dir = workdir / f"run-{setting}"
    cmd = command(setting, args, backbone, run_dir)
    threads = max(os.cpu_count() // SETTINGS[setting][0], 1) if args.threads == "auto" else int(args.threads)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("LLM4TS_DATA_PATH", str(Path(args.data).parent))
    print(f"\n[{setting}] load avg {os.getloadavg()[0]:.2f}; running:\n  OMP_NUM_THREADS={threads} "
          f"{' '.join(map(str, cmd))}", flush=True)
    log = workdir / f"{setting}.log"
    started = time.time()
    with open(log, "w") as handle:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=args.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - started
    processes = SETTINGS[setting][0]
    files = [run_dir / "ft" / f"rank{k}.json" for k in range(processes)]
    if rc != 0 or not all(f.is_file() for f in files):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"[{setting}] FAILED (exit {rc}) after {wall:.0f}s; log {log}:\n  " + "\n  ".join(tail), flush=True)
        return {"setting": setting, "failed": f"exit {rc}", "log": str(log)}
    result = {"setting": setting, **summarize([json.loads(f.read_text()) for f in files], args.warmup),
              "wall_s": wall, "load_avg_after": os.getloadavg()[0]}
    print(f"[{setting}] done in {wall:.0f}s (whole run: loading, training, validation, test); "
          f"load avg {result['load_avg_after']:.2f}", flush=True)
    return result


def print_table(results: list[dict], args) -> bool:
    base = next((r for r in results if r["setting"] == "single" and "failed" not in r), None)
    base_bytes = base["optimizer_state_bytes"][0] if base else None
    print(f"\nglobal batch {args.global_batch}, {args.batches} steps, ft stage, tiny LLaMA layers={args.layers} "
          f"hidden={args.hidden}, quantize={args.quantize}, L={args.seq_len} H={args.pred_len}; "
          f"steady = after {args.warmup} warm-up step(s)")
    header = (f"{'setting':<8} {'procs':>5} {'threads':>7} {'samples/s':>10} {'steady/s':>9} {'RSS train MiB':>13} "
              f"{'RSS end MiB':>11} {'opt state B/rank':>18} {'ratio':>6} {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    ok = True
    for r in results:
        if "failed" in r:
            print(f"{r['setting']:<8} FAILED ({r['failed']}), log {r['log']}")
            ok = False
            continue
        per_rank = max(r["optimizer_state_bytes"])
        ratio = per_rank / base_bytes if base_bytes else float("nan")
        speedup = r["steady_samples_per_s"] / base["steady_samples_per_s"] if base else float("nan")
        r["ratio_to_single"] = ratio
        print(f"{r['setting']:<8} {r['processes']:>5} {r['torch_threads']:>7} {r['samples_per_s']:>10.1f} "
              f"{r['steady_samples_per_s']:>9.1f} {r['peak_rss_train_mib']:>13.0f} {r['peak_rss_stage_mib']:>11.0f} "
              f"{per_rank:>18,} {ratio:>6.3f} {speedup:>7.2f}x")
    print("\nper-rank optimizer bytes (state = Adam moments + step; master = fp32 tensors the optimizer updates):")
    for r in results:
        if "failed" not in r:
            print(f"  {r['setting']:<7} {r['optimizer_chain']:<36} state {r['optimizer_state_bytes']}  "
                  f"master {r['optimizer_master_bytes']}  trainable params {r['trainable_params']:,}")
    zero2 = next((r for r in results if r["setting"] == "zero2" and "failed" not in r), None)
    if zero2 and base_bytes:
        passed = abs(zero2["ratio_to_single"] - 0.5) <= ZERO2_RATIO_TOLERANCE
        print(f"\nZeRO-2 per-rank optimizer state / 1-process: {zero2['ratio_to_single']:.3f} "
              f"(expected ~0.5 within {ZERO2_RATIO_TOLERANCE}): {'OK' if passed else 'NOT OK'}")
        ok = ok and passed
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="single,zero2,zero3", help="comma list of: " + ", ".join(SETTINGS))
    parser.add_argument("--batches", type=int, default=100, help="optimizer steps per setting")
    parser.add_argument("--global-batch", type=int, default=64, help="windows per step over all processes")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the steady rate")
    parser.add_argument("--threads", default="1", help="torch threads per process (OMP_NUM_THREADS), or 'auto' = "
                        "CPUs / processes; default 1: held constant per process (see the module doc)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lora-r", type=int, default=4)
    parser.add_argument("--quantize", default="nf4", choices=["nf4", "fp4", "none"])
    parser.add_argument("--seq-len", type=int, default=96)
    parser.add_argument("--pred-len", type=int, default=24)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--data", default=str(default_data()),
                        help="ETTh1.csv (default: in $LLM4TS_DATA_PATH, else <repo>/../shared/data)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per setting")
    parser.add_argument("--workdir", help="where backbone, runs and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        parser.error(f"unknown setting(s) {unknown}; choose from {', '.join(SETTINGS)}")
    if any(args.global_batch % SETTINGS[s][0] for s in settings):
        parser.error("--global-batch must divide evenly over the processes of every setting")
    if not Path(args.data).is_file():
        parser.error(f"data file {args.data} not found; pass --data or set LLM4TS_DATA_PATH")
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) > 0):
        parser.error("--threads must be a positive integer or 'auto'")
    if args.batches <= args.warmup:
        parser.error("--batches must exceed --warmup")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import deepspeed  # noqa: F401  (versions for the header; imported here so --help stays fast)
    import torch

    print(f"{machine()}; torch {torch.__version__}, deepspeed {deepspeed.__version__}, "
          f"work dir {workdir}", flush=True)
    backbone = build_tiny_llama(workdir / "tiny-llama", args.layers, args.hidden)
    results = [run_setting(s, args, backbone, workdir) for s in settings]
    ok = print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str) + "\n")
    if args.keep or not ok:
        print(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
