#!/usr/bin/env python
"""Does ZeRO-3 divide a backbone across ranks? Memory per rank of real FT stages, 1 vs 2 processes, next to `describe`.

Cells (each a real run of launch/train.py in fresh processes; per-rank telemetry, llm4ts_scale/train/telemetry.py):
  qwen2.5-1.5b (pretrained, NF4 held dequantized in fp32, as a CPU without bf16 holds it), K = 2, 6, 14, 28 blocks,
      under ds_configs/zero3.json with 1 and 2 processes, and with 1 process under zero2.json at K = 28 (the
      whole backbone in one process: what partitioning is measured against);
  qwen2.5-7b-arch: Qwen2.5-7B's architecture (configs/backbones/qwen2.5-7b/config.json, written from its published
      shape; nothing downloaded), random weights frozen in bf16, LoRA, all 28 blocks, zero3.json with 2 processes,
      and the same in one process under zero2.json (measured, or reported as killed for memory).
Each runs a few FT optimizer steps at a fixed global batch, then one validation pass over a few windows.

Memory is anonymous resident memory (RssAnon from /proc/<pid>/status, sampled every 10 ms from process start):
what the process allocated, not the memory-mapped checkpoint pages a load reads (the kernel can drop those). Per
rank: the peak while loading, the peak during the training steps, and `describe`'s prediction of the latter
(`llm4ts-scale describe --meta --ds ... --processes N`, llm4ts_scale/train/memory_plan.py). The per-block slope is a
least-squares line through K = 2..28. Resumable: each finished cell is kept in results/zero3_memory/<cell>.json.

    python benchmarks/bench_zero3_memory.py                  # every cell not yet measured (about an hour on 2 cores)
    python benchmarks/bench_zero3_memory.py --cells qwen2.5-1.5b-k28-zero3-2
    python benchmarks/bench_zero3_memory.py --report-only    # results/zero3_memory/table.md from the kept cells
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

import bench_train
from machine import cpu_model

from llm4ts_scale.core.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "zero3_memory"
QWEN7B = "configs/backbones/qwen2.5-7b"  # relative to the repository root, where the runs start
SETTINGS = {"zero3-1": (1, "zero3.json"), "zero3-2": (2, "zero3.json"), "zero2-1": (1, "zero2.json")}
MIB = 2**20


def cells() -> dict[str, dict]:
    """name -> what the cell runs."""
    out = {}
    for k in (2, 6, 14, 28):
        for setting in ("zero3-1", "zero3-2") + (("zero2-1",) if k == 28 else ()):
            out[f"qwen2.5-1.5b-k{k}-{setting}"] = {
                "backbone": "qwen2.5-1.5b", "layers": k, "setting": setting, "global_batch": 4, "steps": 3,
                "overrides": {"model.quantize": "nf4", "model.dequantize_frozen": "on", "train.mixed_precision": "no"}}
    for setting in ("zero3-2", "zero2-1"):
        out[f"qwen2.5-7b-arch-k28-{setting}"] = {
            "backbone": QWEN7B, "layers": 28, "setting": setting, "global_batch": 2, "steps": 3,
            "overrides": {"model.quantize": "none", "model.backbone_init": "random", "train.mixed_precision": "bf16",
                          "data.seq_len": 96, "data.pred_len": 24}}
    return out


def overrides(cell: dict, run_dir: Path) -> dict:
    processes = SETTINGS[cell["setting"]][0]
    return {"run_dir": run_dir, "data.path": "ETTh1", "data.seq_len": 336, "data.pred_len": 96,
            "data.few_shot_percent": 10, "data.batch_size": cell["global_batch"] // processes,
            "data.eval_batch_size": 8, "data.val_stride": 800, "model.backbone": cell["backbone"],
            "model.layers": cell["layers"], "train.limit_train_batches": cell["steps"],
            "train.checkpoint_every_steps": 10**9, "train.log_with": "none", "train.test": False,
            "train.compare_baselines": False, "stages.align.epochs": 0, "stages.lp.epochs": 0, "stages.ft.epochs": 1,
            **cell["overrides"]}


def command(cell: dict, run_dir: Path) -> list[str]:
    processes, ds = SETTINGS[cell["setting"]]
    cmd = [sys.executable, "launch/train.py"] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate_cpu.yaml",
        "--num_processes", str(processes), "--main_process_port", str(bench_train.free_port()), "launch/train.py"]
    return cmd + ["--ds", f"ds_configs/{ds}"] + [f"{k}={v}" for k, v in overrides(cell, run_dir).items()] + ["--restart"]


def predicted(cell: dict) -> dict:
    """describe's plan for the cell's launch (the training peak per rank), from the architecture alone."""
    processes, ds = SETTINGS[cell["setting"]]
    args = [f"{k}={v}" for k, v in overrides(cell, Path(tempfile.gettempdir()) / "plan").items()]
    out = subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", "describe", "--meta", "--ds", f"ds_configs/{ds}",
                          "--processes", str(processes), "--device", "cpu", *args],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])["memory_per_rank"]


def run_cell(name: str, cell: dict, workdir: Path, threads: int, timeout: float) -> dict:
    processes = SETTINGS[cell["setting"]][0]
    run_dir = workdir / name
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), LLM4TS_CPU_THREADS=str(threads))
    log = workdir / f"{name}.log"
    print(f"[{name}] load avg {os.getloadavg()[0]:.2f}", flush=True)
    started = time.time()
    with open(log, "w") as handle:
        try:
            rc = subprocess.run(command(cell, run_dir), cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    files = [run_dir / "ft" / f"rank{k}.json" for k in range(processes)]
    if rc != 0 or not all(f.is_file() for f in files):
        tail = log.read_text(errors="replace").splitlines()[-8:]
        killed = rc == -9 or any("SIGKILL" in line or "exitcode  : -9" in line for line in tail)
        print(f"  FAILED (exit {rc}){' killed for memory' if killed else ''}; log {log}", flush=True)
        return {"failed": "killed (SIGKILL: out of memory)" if killed else f"exit {rc}", "log_tail": tail,
                "wall_s": time.time() - started}
    ranks = [json.loads(f.read_text()) for f in files]
    out = bench_train.summarize(ranks, warmup=1)
    for key in ("peak_anon_bytes", "peak_anon_load_bytes", "peak_anon_train_bytes", "anon_train_bytes",
                "anon_floor_bytes"):
        out[key.replace("bytes", "mib")] = [round(r[key] / MIB, 1) if r.get(key) else None for r in ranks]
    out["seconds_per_step"] = max(sum(r["step_seconds"][1:]) / max(1, len(r["step_seconds"]) - 1) for r in ranks)
    out["eval_samples"], out["eval_seconds"] = ranks[0]["eval_samples"], max(r["eval_seconds"] for r in ranks)
    out["wall_s"] = time.time() - started
    return out


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MiB per block through (K, MiB)."""
    n = len(points)
    mx, my = sum(k for k, _ in points) / n, sum(v for _, v in points) / n
    return sum((k - mx) * (v - my) for k, v in points) / sum((k - mx) ** 2 for k, _ in points)


def table() -> str:
    kept = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*-k*-*.json")}
    rows = ["| backbone | K | setting | procs | peak per rank, loading MiB | peak per rank, training MiB "
            "| in training after the first epoch MiB | predicted (describe) MiB | error | s / step |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in cells():
        if name not in kept:
            continue
        c, r = kept[name], kept[name]["result"]
        label = "qwen2.5-7b arch" if "7b" in name else "qwen2.5-1.5b"
        if "failed" in r:
            rows.append(f"| {label} | {c['layers']} | {c['setting']} | {SETTINGS[c['setting']][0]} | {r['failed']} "
                        f"after {r['wall_s']:.0f} s | | | {c['predicted']['total_bytes'] / MIB:.0f} | | |")
            continue
        train, pred = max(r["peak_anon_train_mib"]), c["predicted"]["total_bytes"] / MIB
        rows.append(f"| {label} | {c['layers']} | {c['setting']} | {r['processes']} | {max(r['peak_anon_load_mib']):.0f} "
                    f"| {train:.0f} | {max(r['anon_train_mib']):.0f} | {pred:.0f} | {100 * (pred / train - 1):+.0f} % "
                    f"| {r['seconds_per_step']:.1f} |")
    lines = ["Per rank, anonymous resident memory (RssAnon); the largest rank shown.", "", *rows, ""]
    for setting in ("zero3-1", "zero3-2"):
        curve = [(c["layers"], max(c["result"]["peak_anon_train_mib"])) for n, c in kept.items()
                 if n.startswith("qwen2.5-1.5b") and c["setting"] == setting and "failed" not in c["result"]]
        if len(curve) >= 2:
            lines.append(f"- qwen2.5-1.5b, {setting}: training peak per rank grows {slope(curve):.0f} MiB per block "
                         f"(K = {', '.join(str(k) for k, _ in sorted(curve))}).")
    for backbone in ("qwen2.5-1.5b", "qwen2.5-7b-arch"):
        one, two = kept.get(f"{backbone}-k28-zero2-1"), kept.get(f"{backbone}-k28-zero3-2")
        if one and two and "failed" not in one["result"] and "failed" not in two["result"]:
            for key, what in (("peak_anon_load_mib", "loading"), ("peak_anon_train_mib", "training")):
                lines.append(f"- {backbone} K=28, peak in {what}: 2 ranks under ZeRO-3 hold "
                             f"{max(two['result'][key]) / max(one['result'][key]):.2f} x one whole-backbone process "
                             "(ZeRO-2, 1 process) each.")
    meta = next(iter(kept.values()), None)
    if meta:
        lines.append(f"- CPU: {meta['cpu']}; {meta['result'].get('torch_threads', '?')} torch thread(s) per process; "
                     "global batch 4 (1.5B, L=336) or 2 (7B, L=96), 3 optimizer steps, the first left out of s / step.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", help="cell names (default: all); " + ", ".join(cells()))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: two ranks use both cores)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--retry-failed", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="the table from the kept cells, each beside what describe predicts now (the plan changes "
                             "with the code, the measurement does not)")
    args = parser.parse_args()
    if not args.report_only:
        workdir = Path(tempfile.mkdtemp(prefix="bench-zero3-"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name in args.cells or list(cells()):
            cell, path = cells()[name], RESULTS / f"{name}.json"
            if path.is_file() and not (args.retry_failed and "failed" in json.loads(path.read_text())["result"]):
                continue
            result = run_cell(name, cell, workdir, args.threads, args.timeout)
            atomic_write_json(path, {**cell, "result": result, "predicted": predicted(cell),
                                     "cpu": cpu_model()})
            print(f"  {json.dumps(result)[:400]}", flush=True)
    else:
        planned = cells()
        for path in sorted(RESULTS.glob("*-k*-*.json")):
            atomic_write_json(path, {**json.loads(path.read_text()), "predicted": predicted(planned[path.stem])})
    text = table()
    atomic_write_text(RESULTS / "table.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
