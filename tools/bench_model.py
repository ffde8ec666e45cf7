"""Benchmark the LLM4TS forecaster on this machine (CPU by default).

Prints the fp32 GEMM rate (2048x2048 torch.mm), then for SmolLM2 K=6, L=336, P=16, S=8, H=96,
batch 32: forward+backward samples/s with the FT stage's trainable set, peak memory (ru_maxrss of
a fresh subprocess per setting), and model FLOP utilization for quantize=none and nf4.

FLOPs per training step (useful work only; 4-bit dequantization is overhead, not counted):
  blocks     4 * N_block * B*T      frozen linear weights: forward 2, input-gradient 2, no weight-gradient
  attention  12 * K * B * T^2 * d   QK^T and AV: forward 4*T^2*d, backward twice that
  trainable  6 * N_tok * B*T + 6 * N_head * B + 6 * N_lora_norm * B*T   (encoder conv per token, head per
             sample, LoRA/norms per token: forward 2, backward 4)
MFU = (FLOPs per step / seconds per step) / fp32 GEMM FLOP/s measured in the same child process.

    python tools/bench_model.py [--steps 3] [--batch 32] [--layers 6]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def gemm_gflops(n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args) -> dict:
    """One setting in this (fresh) process: build, warm up, time forward+backward steps."""
    import psutil
    import torch

    from llm4ts_scale.config import load_config
    from llm4ts_scale.model import STAGE_GROUPS, build_model

    gemm = gemm_gflops()  # measured in the same process and time window as the model, for the MFU
    rss_imports = maxrss_mib()
    L, P, S, H, B = 336, 16, 8, 96, args.batch
    cfg = load_config(None, [f"model.layers={args.layers}", f"model.quantize={args.quantize}", f"data.seq_len={L}",
                             f"data.pred_len={H}", f"data.patch_len={P}", f"data.stride={S}"])
    torch.manual_seed(0)
    model = build_model(cfg, ["month", "day", "weekday", "hour"])
    model.set_trainable(STAGE_GROUPS["ft"])
    model.train()
    rss_built = psutil.Process().memory_info().rss / 2**20
    maxrss_built = maxrss_mib()

    x = torch.randn(B, L).cumsum(1)
    steps = torch.arange(L).expand(B, L)
    x_mark = torch.stack([torch.full((B, L), 6), torch.full((B, L), 15), steps // 24 % 7, steps % 24], -1)
    y = torch.randn(B, H)

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x, x_mark), y).backward()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps

    groups = model.param_groups()
    info, T = model.info, model.num_patches
    n_block = sum(p.numel() if not hasattr(p, "quant_state") else int(torch.Size(p.quant_state.shape).numel())
                  for n, p in groups["frozen"] if ".layers." in n and p.dim() >= 1 and "norm" not in n)
    n_tok = model.encoder.token.conv.weight.numel()
    n_head = sum(p.numel() for _, p in groups["head"])
    n_small = sum(p.numel() for g in ("lora", "norms") for _, p in groups[g])
    flops = (4 * n_block * B * T + 12 * info.layers_loaded * B * T * T * info.hidden_size
             + 6 * n_tok * B * T + 6 * n_head * B + 6 * n_small * B * T)
    return {
        "quantize": args.quantize, "gemm_gflops": gemm, "seconds_per_step": seconds, "samples_per_s": B / seconds,
        "flops_per_step": flops, "gflops_per_s": flops / seconds / 1e9,
        "n_block_params": n_block, "tokens_per_step": B * T,
        "rss_after_build_mib": rss_built, "maxrss_imports_mib": rss_imports,
        "maxrss_after_build_mib": maxrss_built, "maxrss_peak_mib": maxrss_mib(),
        "backbone_bytes": model.summary()["backbone_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--quantize", default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.prepare:
        import torch

        from llm4ts_scale.model import smollm2

        smollm2.ensure_cached()
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "gemm": gemm_gflops()}))
        return
    if args.quantize:
        print(json.dumps(child(args)))
        return

    # This parent imports no torch: ru_maxrss survives fork+exec, so a heavy parent would set
    # the floor of every child's peak. Conversion (if needed) and a first GEMM run in a child.
    def run_child(*extra):
        proc = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = run_child("--prepare")
    print(f"machine: torch {first['torch']}, {first['threads']} threads")
    print(f"fp32 GEMM 2048x2048 torch.mm: {first['gemm']:.1f} GFLOP/s")
    print(f"LLM4TS SmolLM2 K={args.layers}, L=336 P=16 S=8 H=96, batch {args.batch}, FT trainable set, "
          f"forward+backward, mean of {args.steps} steps after 1 warm-up")
    for quantize in ("none", "nf4"):
        r = run_child("--quantize", quantize, "--steps", str(args.steps), "--batch", str(args.batch),
                      "--layers", str(args.layers))
        print(f"  quantize={quantize:4s}: {r['samples_per_s']:6.1f} samples/s ({r['seconds_per_step']:.2f} s/step), "
              f"{r['gflops_per_s']:.1f} GFLOP/s = MFU {r['gflops_per_s'] / r['gemm_gflops']:.1%} of "
              f"{r['gemm_gflops']:.0f} GFLOP/s GEMM measured in the same child "
              f"[{r['flops_per_step'] / 1e9:.1f} GFLOP/step; N_block={r['n_block_params'] / 1e6:.2f}M, "
              f"B*T={r['tokens_per_step']}]")
        print(f"      memory: peak RSS {r['maxrss_peak_mib']:.0f} MiB (after imports {r['maxrss_imports_mib']:.0f}, "
              f"peak while building {r['maxrss_after_build_mib']:.0f}, resident after build "
              f"{r['rss_after_build_mib']:.0f}); training delta over imports "
              f"{r['maxrss_peak_mib'] - r['maxrss_imports_mib']:.0f} MiB; backbone weights "
              f"{r['backbone_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
