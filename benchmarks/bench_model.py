"""Speed of the LLM4TS forecaster on this machine, today's code next to a baseline commit, in one run.

Shape: SmolLM2 cut to K=6 blocks, L=336, P=16, S=8 (T=42 tokens), H=96, NF4 + LoRA, the FT stage's
trainable set. Each setting runs in a fresh child process (so peak RSS is its own) and prints:
  * train samples/s: forward + backward + AdamW step, batch --batch (32);
  * eval samples/s: forecasts with the eval settings of that code (old: no_grad at the training
    batch size; new: inference_mode, the automatic eval batch, the run's precision);
  * LP samples/s: a linear-probing step (new: the head on cached frozen features; old: the frozen
    forward recomputed for every batch of every LP epoch);
  * MFU = useful FLOP/s / the best GEMM rate measured in the same child (fp32 or bf16, whichever
    is faster here).
The baseline (default: commit 719fbab, before the speed work) is checked out into a temporary git
worktree and imported from there, so both columns run on the same machine, minutes apart.

Useful FLOPs per sample (4-bit dequantization is overhead, not counted):
  forward    2 * N_block * T + 4 * K * T^2 * d (QK^T, AV) + 2 * N_tok * T + 2 * N_head
  training   4 * N_block * T (frozen weights: forward + input gradient) + 12 * K * T^2 * d
             + 6 * (N_tok + N_lora_norm) * T + 6 * N_head

    python benchmarks/bench_model.py [--steps 3] [--batch 32] [--baseline 719fbab] [--quantize nf4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine

REPO = Path(__file__).resolve().parents[1]
L, P, S, H = 336, 16, 8, 96
ATTRS = ["month", "day", "weekday", "hour"]


def gemm_gflops(dtype, device="cpu", n: int = 2048, reps: int = 8) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _build(quantize: str, device: str, layers: int):
    """Build with whatever API the imported llm4ts_scale has (today's or the baseline's)."""
    import inspect

    import torch

    from llm4ts_scale.core.config import load_config
    from llm4ts_scale.model import build_model

    cfg = load_config(None, [f"model.layers={layers}", f"model.quantize={quantize}", f"data.seq_len={L}",
                             f"data.pred_len={H}", f"data.patch_len={P}", f"data.stride={S}"])
    torch.manual_seed(0)
    new = "precision" in inspect.signature(build_model).parameters
    if new:
        from llm4ts_scale.core.precision import resolve_precision
        from llm4ts_scale.evaluation import eval_batch_size

        precision, reason = resolve_precision(cfg.train.mixed_precision, device)
        model = build_model(cfg, ATTRS, precision, device_type=device)
        eval_batch = eval_batch_size(cfg.data.eval_batch_size, cfg.data.batch_size, device)
    else:  # the baseline: fp32 on a CPU, bf16 autocast on a GPU, eval at the training batch size
        precision = "bf16" if device == "cuda" else "no"
        reason = "baseline default"
        model = build_model(cfg, ATTRS)
        eval_batch = None
    return model.to(device), precision, reason, eval_batch, new


def _flops(model, batch: int) -> tuple[float, float, float]:
    """(train, forward, head-only train) useful FLOPs for `batch` samples (the last for reference)."""
    groups = model.param_groups()
    info, T = model.info, model.num_patches

    def logical(p):
        state = getattr(p, "quant_state", None)
        return int(__import__("torch").Size(state.shape).numel()) if state is not None else p.numel()

    n_block = sum(logical(p) for n, p in groups["frozen"] if ".layers." in n and p.dim() >= 1 and "norm" not in n)
    n_tok = model.encoder.token.conv.weight.numel()
    n_head = sum(p.numel() for _, p in groups["head"])
    n_small = sum(p.numel() for g in ("lora", "norms") for _, p in groups[g])
    attn = info.layers_loaded * T * T * info.hidden_size
    forward = batch * (2 * n_block * T + 4 * attn + 2 * n_tok * T + 2 * n_head)
    train = batch * (4 * n_block * T + 12 * attn + 6 * (n_tok + n_small) * T + 6 * n_head)
    return train, forward, 6 * n_head * batch


def child(args) -> dict:
    import contextlib

    import torch

    sys.path.insert(0, args.code)  # the tree to measure
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rates = {"fp32": gemm_gflops(torch.float32, device), "bf16": gemm_gflops(torch.bfloat16, device)}
    best = max(rates.values())
    model, precision, reason, eval_batch, new = _build(args.quantize, device, args.layers)
    groups = {"head", "lora", "norms", "embeddings", "positions", "revin"}
    model.set_trainable(groups)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def inputs(b):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, L, generator=g).cumsum(1)
        steps = torch.arange(L).expand(b, L)
        marks = torch.stack([torch.full((b, L), 6), torch.full((b, L), 15), steps // 24 % 7, steps % 24], -1)
        return x.to(device), marks.to(device), torch.randn(b, H, generator=g).to(device)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(fn, steps):
        fn()  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - start) / steps

    x, xm, y = inputs(args.batch)

    def train_step():
        model.train()
        with autocast():
            pred = model(x, xm)
        torch.nn.functional.mse_loss(pred.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_s = timed(train_step, args.steps)
    eb = eval_batch or args.batch
    ex, exm, _ = inputs(eb)

    def eval_step():
        model.eval()
        mode = torch.inference_mode() if new else torch.no_grad()
        with mode, autocast():
            model(ex, exm).float()

    eval_s = timed(eval_step, args.steps)
    train_flops, _, _ = _flops(model, args.batch)
    _, eval_flops, _ = _flops(model, eb)
    out = {"code": args.label, "device": device, "precision": precision, "precision_reason": reason,
           "attention": getattr(model.info, "attention", "sdpa (transformers default)"),
           "lora_dropout": next((m.p for n, m in model.named_modules() if n.endswith("lora_dropout.default")
                                 and hasattr(m, "p")), 0.0),
           "gemm_fp32": rates["fp32"], "gemm_bf16": rates["bf16"], "best_gemm": best,
           "train_batch": args.batch, "train_sps": args.batch / train_s, "train_mfu": train_flops / train_s / 1e9 / best,
           "eval_batch": eb, "eval_sps": eb / eval_s, "eval_mfu": eval_flops / eval_s / 1e9 / best}
    # A linear-probing step: today on cached frozen features (the head alone); the baseline recomputes
    # the frozen encoder + backbone forward for every batch of every LP epoch.
    model.set_trainable({"head"})
    head_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    hidden = None
    if new:
        with torch.no_grad(), autocast():
            model.eval()
            hidden = model(x, xm, task="features")

    def lp_step():
        model.train()
        with autocast():
            pred = model(x, xm, hidden=hidden) if new else model(x, xm)
        torch.nn.functional.mse_loss(pred.float(), y).backward()
        head_opt.step()
        head_opt.zero_grad(set_to_none=True)

    lp_s = timed(lp_step, args.steps)
    out.update(lp_sps=args.batch / lp_s)
    if device == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(code: Path, label: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--code", str(code), "--label", label,
           "--steps", str(args.steps), "--batch", str(args.batch), "--layers", str(args.layers),
           "--quantize", args.quantize]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
    if proc.returncode != 0:
        sys.exit(f"{label} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--quantize", default="nf4", choices=("nf4", "fp4", "none"))
    parser.add_argument("--baseline", default="719fbab", help="git commit to compare with ('' to skip)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", default=str(REPO), help=argparse.SUPPRESS)
    parser.add_argument("--label", default="today", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    print(machine())
    print(f"shape: SmolLM2 K={args.layers}, L={L} P={P} S={S} (T=42) H={H}, quantize={args.quantize}, FT trainable "
          f"set, train batch {args.batch}, mean of {args.steps} steps after 1 warm-up")
    rows = [run_child(REPO, "today", args)]
    if args.baseline:
        tmp = Path(tempfile.mkdtemp(prefix="llm4ts-baseline-"))
        try:
            subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tmp / "tree"), args.baseline],
                           cwd=REPO, check=True)
            rows.insert(0, run_child(tmp / "tree", args.baseline, args))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "tree")], cwd=REPO, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    r = rows[-1]
    print(f"GEMM 2048^3 on {r['device']}: fp32 {r['gemm_fp32']:.0f} GFLOP/s, bf16 {r['gemm_bf16']:.0f} GFLOP/s "
          f"(MFU below is against the best: {r['best_gemm']:.0f})")
    print()
    print("| code | precision | attention | LoRA dropout | train samples/s (MFU) | eval batch | eval samples/s (MFU) "
          "| LP step samples/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lp = f"{r['lp_sps']:.0f}"
        print(f"| {r['code']} | {'bf16' if r['precision'] == 'bf16' else 'fp32'} | {r['attention']} | {r['lora_dropout']} "
              f"| {r['train_sps']:.1f} ({r['train_mfu']:.0%}) | {r['eval_batch']} | {r['eval_sps']:.1f} ({r['eval_mfu']:.0%}) "
              f"| {lp} | {r['peak_rss_mib']:.0f} |")
    if len(rows) == 2:
        old, new = rows
        print(f"\nspeed-up, today / {old['code']}: train x{new['train_sps'] / old['train_sps']:.2f}, "
              f"eval x{new['eval_sps'] / old['eval_sps']:.2f}, LP steps x{new['lp_sps'] / old['lp_sps']:.0f} "
              "(head on cached features, against the frozen forward redone every LP epoch)")
    print(f"precision chosen today: {rows[-1]['precision_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
