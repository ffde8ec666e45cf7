"""Peak CUDA memory of training a 7B-shaped LLaMA backbone cut to K blocks (NF4 + LoRA, FT trainable set,
bf16 autocast), next to the `backbone_bytes` that `llm4ts-scale describe` predicts, extrapolated to K=6, 32.

No weights can be downloaded, so a checkpoint of Llama-2-7B's *shape* is written first: config.json says
32 blocks (hidden 4096, MLP 11008, 32 heads, vocab 32000, rotary), random bf16 weights are saved for
only the first max(--layers) blocks (the project loads only the first K blocks, so that is all it
reads). Then, for each K in --layers:

  * describe: `build_model(config, calendar_attrs_for(config))` + `model.summary()["backbone_bytes"]`,
    exactly what `llm4ts-scale describe model.backbone=DIR model.layers=K model.quantize=nf4 ...` does;
  * training: the same model built with precision bf16 (as a bf16 run builds it), moved to CUDA, the FT
    stage's trainable set, AdamW, --steps steps of forward + backward + step with bf16 autocast on
    random inputs; `torch.cuda.max_memory_allocated()` over those steps is the peak.

Peak memory is linear in K (every block holds the same weights and activations), so two layer counts
fit peak(K) = intercept + per_block * K, which is extrapolated to --extrapolate (default K=6 and 32).

    python benchmarks/gpu_memory.py [--layers 2 4] [--batch 16] [--seq-len 512] [--pred-len 96] [--steps 3]

Exit status: 0 on success, 2 when no CUDA device is present (one line), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json), the shape whose memory is measured.
LLAMA2_7B_SHAPE = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# A tiny shape of the same architecture, for a dry run of this script on a CPU (--dry-run-cpu).
TINY_SHAPE = {**LLAMA2_7B_SHAPE, "hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": 256, "max_position_embeddings": 512,
              "bos_token_id": 0, "eos_token_id": 0}

NO_CUDA_MESSAGE = ("error: no CUDA device (torch.cuda.is_available() is False); run benchmarks/gpu_memory.py on a "
                   "machine with an NVIDIA GPU and a CUDA build of torch")

MIB = 2**20


def llama_config(shape: dict | None = None, **overrides):
    """A transformers LlamaConfig of Llama-2-7B's shape (or `shape`), with `overrides` applied."""
    from transformers import LlamaConfig

    values = {**(LLAMA2_7B_SHAPE if shape is None else shape), **overrides}
    return LlamaConfig(**values)


def write_config(directory: str | os.PathLike, config) -> Path:
    """Write `config` as `directory/config.json` (save_pretrained) and return the directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    return path


def write_backbone(directory: str | os.PathLike, saved_layers: int, shape: dict | None = None, seed: int = 0,
                   device: str = "cpu") -> Path:
    """A checkpoint directory of Llama-2-7B's shape whose config.json declares all its blocks (32) but
    whose safetensors hold random bf16 weights for only the first `saved_layers` blocks (plus the
    token-embedding table, final norm and LM head, as a real checkpoint has).

    Built with `from_config` on `device` (4 blocks of the 7B shape with the embedding table and LM head
    are ~1.1 B parameters, 2.1 GB in bf16: ~50 s of random init on one CPU core, a second on a GPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    total = llama_config(shape).num_hidden_layers
    if not 0 < saved_layers <= total:
        raise ValueError(f"saved_layers must be in [1, {total}], got {saved_layers}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(llama_config(shape, num_hidden_layers=saved_layers),
                                                 dtype=torch.bfloat16)
    model.to("cpu").save_pretrained(path, safe_serialization=True)
    config = model.config  # as saved (model_type, architectures, dtype), but declaring every block
    del model
    _free(device)
    config.num_hidden_layers = total
    write_config(path, config)  # overwrites config.json; the weights stay those of the first `saved_layers` blocks
    return path


def fit_line(xs, ys) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = intercept + slope * x; exact for two points."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    if len(set(xs)) < 2:
        raise ValueError("a line needs at least two distinct x values (layer counts)")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    return my - slope * mx, slope


def extrapolate(xs, ys, targets) -> dict:
    """{target: intercept + slope * target} for the least-squares line through (xs, ys)."""
    intercept, slope = fit_line(xs, ys)
    return {t: intercept + slope * t for t in targets}


# ---------------------------------------------------------------- measurement


def overrides_for(backbone_dir: Path, layers: int, args) -> list[str]:
    return [f"model.backbone={backbone_dir}", f"model.layers={layers}", "model.quantize=nf4",
            "model.dequantize_frozen=off", f"data.seq_len={args.seq_len}", f"data.pred_len={args.pred_len}",
            f"data.patch_len={args.patch_len}", f"data.stride={args.stride}", f"data.batch_size={args.batch}"]


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def describe_summary(overrides: list[str], device: str) -> dict:
    """What `llm4ts-scale describe <overrides>` prints (its run(): load_config, build_model, summary)."""
    from llm4ts_scale.commands.describe import calendar_attrs_for
    from llm4ts_scale.core.config import load_config
    from llm4ts_scale.core.stages import STAGE_GROUPS
    from llm4ts_scale.model import build_model

    config = load_config(None, overrides)
    model = build_model(config, calendar_attrs_for(config), device_type=device)
    summary = model.summary(STAGE_GROUPS)
    del model
    _free(device)
    return summary


def measure_training(overrides: list[str], args, device: str) -> dict:
    """Peak memory of `args.steps` FT training steps (bf16 autocast, AdamW) of the model `overrides` builds."""
    import torch

    from llm4ts_scale.commands.describe import calendar_attrs_for
    from llm4ts_scale.core.config import load_config
    from llm4ts_scale.core.stages import STAGE_GROUPS
    from llm4ts_scale.model import build_model

    cuda = device == "cuda"
    _free(device)
    base = torch.cuda.memory_allocated() if cuda else 0
    config = load_config(None, overrides)
    attrs = calendar_attrs_for(config)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, attrs, "bf16", device_type=device).to(device)
    load_s = time.perf_counter() - start
    info = model.info
    backbone_bytes = model.summary()["backbone_bytes"]  # of this bf16 build (describe builds with fp32 compute)
    if cuda:
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated() - base
        off_gpu = [n for n, p in model.named_parameters() if p.device.type != "cuda"]
        if off_gpu:
            raise RuntimeError(f"parameter {off_gpu[0]} is not on the GPU after .to('cuda')")
    else:
        resident = None
    model.set_trainable(STAGE_GROUPS["ft"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the FT trainable set is empty")
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    b, length, horizon = args.batch, args.seq_len, args.pred_len
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, length, generator=g).cumsum(1)
    steps = torch.arange(length).expand(b, length)
    values = {"month": torch.full((b, length), 6), "day": torch.full((b, length), 15), "weekday": steps // 24 % 7,
              "hour": steps % 24, "minute": torch.zeros(b, length, dtype=torch.long),
              "second": torch.zeros(b, length, dtype=torch.long)}
    x_mark = torch.stack([values[a] for a in attrs], -1)
    y = torch.randn(b, horizon, generator=g)
    x, x_mark, y = x.to(device), x_mark.to(device), y.to(device)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses = []
    start = time.perf_counter()
    for _ in range(args.steps):
        with torch.autocast(device, dtype=torch.bfloat16):
            pred = model(x, x_mark)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if cuda:
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / args.steps
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite training loss {losses}")
    lora = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    if not lora:
        raise RuntimeError("no trainable LoRA parameter in the FT set")
    out = {
        "layers": info.layers_loaded, "layers_total": info.layers_total, "quantize": info.quantize,
        "attention": info.attention, "trainable_params": sum(p.numel() for p in params),
        "train_backbone_bytes": backbone_bytes, "resident_bytes": resident, "losses": losses, "load_s": load_s, "step_s": step_s,
        "peak_bytes": (torch.cuda.max_memory_allocated() - base) if cuda else None,
        "peak_reserved_bytes": (torch.cuda.max_memory_reserved()) if cuda else None,
    }
    del model, optimizer, params, lora, pred, loss
    _free(device)
    return out


def _mib(v) -> str:
    return "n/a" if v is None else f"{v / MIB:,.1f}"


def report(rows: list[dict], targets: list[int], gpu: str, total_bytes: int | None) -> list[str]:
    """The table: measured rows, then the linear extrapolations."""
    ks = [r["layers"] for r in rows]
    lines = ["| layers K | describe backbone_bytes MiB | resident after load MiB | peak CUDA MiB (training) | "
             "s/step |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layers']} | {_mib(r['backbone_bytes'])} | {_mib(r['resident_bytes'])} "
                     f"| {_mib(r['peak_bytes'])} | {r['step_s']:.3f} |")
    bb = extrapolate(ks, [r["backbone_bytes"] for r in rows], targets)
    measured = all(r["peak_bytes"] is not None for r in rows)
    peak = extrapolate(ks, [r["peak_bytes"] for r in rows], targets) if measured else {t: None for t in targets}
    for t in targets:
        lines.append(f"| {t} (extrapolated) | {_mib(bb[t])} | | {_mib(peak[t])} | |")
    b0, b1 = fit_line(ks, [r["backbone_bytes"] for r in rows])
    lines.append("")
    lines.append(f"fit: backbone_bytes = {b0 / MIB:,.1f} + {b1 / MIB:,.1f} MiB x K")
    if measured:
        p0, p1 = fit_line(ks, [r["peak_bytes"] for r in rows])
        lines.append(f"fit: peak CUDA = {p0 / MIB:,.1f} + {p1 / MIB:,.1f} MiB x K "
                     f"(per block: {p1 / b1:.1f}x its describe bytes: weights + activations + dequantized "
                     "4-bit weights in flight)")
        if total_bytes:
            for t in targets:
                lines.append(f"K={t}: {peak[t] / MIB:,.0f} MiB of {total_bytes / MIB:,.0f} MiB on {gpu} "
                             f"({peak[t] / total_bytes:.0%}){'' if peak[t] < total_bytes else ' -- DOES NOT FIT'}")
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4], help="layer counts to measure (>= 2 distinct)")
    parser.add_argument("--extrapolate", type=int, nargs="+", default=[6, 32], help="layer counts to extrapolate to")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--pred-len", type=int, default=96)
    parser.add_argument("--patch-len", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work-dir", default=None, help="where to write the 7B-shaped checkpoint (default: a temp dir, removed)")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    parser.add_argument("--dry-run-cpu", action="store_true", help=argparse.SUPPRESS)  # tiny shape on the CPU
    args = parser.parse_args(argv)
    if len(set(args.layers)) < 2:
        parser.error("--layers needs at least two distinct layer counts, e.g. --layers 2 4")
    if min(args.layers) < 1 or args.steps < 1 or args.batch < 1:
        parser.error("--layers, --steps and --batch must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = "cpu" if args.dry_run_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    shape = TINY_SHAPE if args.dry_run_cpu else LLAMA2_7B_SHAPE
    if max(args.layers) > shape["num_hidden_layers"]:
        sys.exit(f"error: --layers {max(args.layers)} exceeds the {shape['num_hidden_layers']} blocks of the shape")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu, total_bytes = props.name, props.total_memory
    else:
        gpu, total_bytes = "CPU (dry run, tiny shape)", None
    print(f"device: {gpu}" + (f", {total_bytes / 2**30:.1f} GiB" if total_bytes else ""))
    name = "tiny LLaMA (dry run)" if args.dry_run_cpu else "Llama-2-7B"
    print(f"shape: {name} (hidden {shape['hidden_size']}, MLP {shape['intermediate_size']}, "
          f"{shape['num_attention_heads']} heads, {shape['num_hidden_layers']} blocks, vocab {shape['vocab_size']}), "
          f"random weights; NF4 + LoRA, FT trainable set, bf16 autocast, batch {args.batch}, L={args.seq_len} "
          f"P={args.patch_len} S={args.stride} H={args.pred_len}, {args.steps} steps", flush=True)

    tmp = None
    work = Path(args.work_dir) if args.work_dir else Path(tmp := tempfile.mkdtemp(prefix="llm4ts-gpu-memory-"))
    try:
        start = time.perf_counter()
        backbone_dir = write_backbone(work / "llama2-7b-shape", max(args.layers), shape, device=device)
        print(f"wrote the checkpoint ({max(args.layers)} of {shape['num_hidden_layers']} blocks) in "
              f"{time.perf_counter() - start:.1f} s: {backbone_dir}", flush=True)
        rows = []
        for k in sorted(set(args.layers)):
            overrides = overrides_for(backbone_dir, k, args)
            summary = describe_summary(overrides, device)
            row = measure_training(overrides, args, device)
            if row["layers"] != k:
                raise RuntimeError(f"model.layers={k} built a backbone of {row['layers']} blocks")
            row["backbone_bytes"] = summary["backbone_bytes"]
            row["describe"] = {key: summary[key] for key in ("layers_loaded", "layers_total", "params_total",
                                                             "backbone_bytes", "trainable")}
            if summary["layers_loaded"] != k or summary["layers_total"] != shape["num_hidden_layers"]:
                raise RuntimeError(f"describe reports {summary['layers_loaded']} of {summary['layers_total']} blocks, "
                                   f"expected {k} of {shape['num_hidden_layers']}")
            print(f"K={k}: describe backbone_bytes {_mib(row['backbone_bytes'])} MiB (bf16 build: "
                  f"{_mib(row['train_backbone_bytes'])} MiB), resident "
                  f"{_mib(row['resident_bytes'])} MiB, peak {_mib(row['peak_bytes'])} MiB, load {row['load_s']:.1f} s, "
                  f"{row['step_s']:.3f} s/step, losses {[round(v, 4) for v in row['losses']]}", flush=True)
            rows.append(row)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("\n".join(report(rows, args.extrapolate, gpu, total_bytes)))
    command = " ".join(overrides_for(Path("<dir>"), 0, args)).replace("model.layers=0", "model.layers=K")
    print(f"\ndescribe's command for K: llm4ts-scale describe {command}")

    if device == "cuda":
        ks = [r["layers"] for r in rows]
        _, slope = fit_line(ks, [r["peak_bytes"] for r in rows])
        if slope <= 0:
            sys.exit(f"error: peak CUDA memory does not grow with the layer count ({[_mib(r['peak_bytes']) for r in rows]} MiB)")
        for r in rows:
            if r["peak_bytes"] < r["backbone_bytes"]:
                sys.exit(f"error: K={r['layers']}: peak {_mib(r['peak_bytes'])} MiB is below describe's backbone_bytes "
                         f"{_mib(r['backbone_bytes'])} MiB; the measurement is wrong")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": gpu, "total_bytes": total_bytes, "rows": rows,
                                               "extrapolated_peak_bytes": (extrapolate(
                                                   [r["layers"] for r in rows], [r["peak_bytes"] for r in rows],
                                                   args.extrapolate) if device == "cuda" else None)},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
