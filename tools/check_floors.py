#!/usr/bin/env python
"""Keep the dependency floors true: install every runtime dependency at its floor's release series, then run a smoke.

For each `name>=X.Y` in pyproject.toml's dependencies this installs `name==X.Y.*` (all together, in a fresh virtual
environment), the project itself with --no-deps, and runs what a user runs first:
  describe on a tiny LLaMA written here, a three-stage run (align, LP, FT) under ZeRO-2 and under ZeRO-3 with one
  process on ETTh1, and `evaluate` on the ZeRO-2 run's export.
torch is the exception: its floor is the 2.13.0 CPU build every test runs on (older wheels here are multi-GB CUDA
builds), installed exactly. CI runs this after the test suite (.ci/run); it fails the day a floor stops being true.

    python tools/check_floors.py                 # builds $TMPDIR/llm4ts-floors (reused when its pins match)
    python tools/check_floors.py --print-pins    # the pip arguments only
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

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def floor_pins() -> list[str]:
    """`name==X.Y.*` for every `name>=X.Y...` runtime dependency (torch: the exact build the tests run on)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [TORCH]
    for line in deps:
        req = Requirement(line)
        if req.name == "torch":
            continue
        floors = [s.version for s in req.specifier if s.operator == ">="]
        if len(floors) != 1:
            sys.exit(f"check_floors: {line!r} has no single >= floor; declare one")
        series = ".".join(floors[0].split(".")[:2]) if "." in floors[0] else floors[0]
        pins.append(f"{req.name}=={series}.*")
    return pins


def run(cmd: list, **kwargs) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def environment(root: Path, pins: list[str]) -> Path:
    """A virtual environment holding exactly `pins` and the project (rebuilt when the pins changed)."""
    python = root / "bin" / "python"
    stamp = root / "pins.json"
    if not (python.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == pins):
        run([sys.executable, "-m", "venv", "--clear", str(root)])
        run([python, "-m", "pip", "install", "--quiet", TORCH])
        run([python, "-m", "pip", "install", "--quiet", *pins])  # torch==2.13.0 among them: the resolver keeps it
        stamp.write_text(json.dumps(pins))
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(REPO)])
    run([python, "-m", "pip", "check"])
    return python


def smoke(python: Path, work: Path, data: Path) -> dict:
    """describe, ZeRO-2 and ZeRO-3 three-stage runs, evaluate: returns each step's wall seconds and test MSEs."""
    env = dict(os.environ, LLM4TS_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    backbone = work / "tiny-llama"
    steps = {"backbone": [python, "-c", (
        "import torch; from transformers import LlamaConfig, LlamaForCausalLM; torch.manual_seed(0); "
        "LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, "
        "num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, "
        f"pad_token_id=0)).save_pretrained({str(backbone)!r})")],
             "describe": [python, "-m", "llm4ts_scale.cli", "describe", f"model.backbone={backbone}", "model.layers=2"]}
    common = [f"data.path={data}", "data.seq_len=96", "data.pred_len=24", "data.batch_size=64",
              "data.eval_batch_size=1024", f"model.backbone={backbone}", "model.layers=2", "model.quantize=nf4",
              "model.lora.r=4", "train.limit_train_batches=3", "train.compare_baselines=false", "train.log_with=none",
              "stages.align.epochs=1", "stages.lp.epochs=1", "stages.ft.epochs=1"]
    for stage in ("zero2", "zero3"):
        steps[stage] = [python, "launch/train.py", "--ds", f"ds_configs/{stage}.json", f"run_dir={work / stage}", *common]
    steps["evaluate"] = [python, "-m", "llm4ts_scale.cli", "evaluate", str(work / "zero2")]
    report = {}
    for name, cmd in steps.items():
        started = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
            sys.exit(f"check_floors: {name} failed at the floors (exit {proc.returncode})")
        report[name] = round(time.time() - started, 1)
        print(f"  {name}: ok in {report[name]} s", flush=True)
    for stage in ("zero2", "zero3"):
        report[f"{stage}_test_mse"] = json.loads((work / stage / "metrics.json").read_text())["test"]["mse"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "llm4ts-floors")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ETTh1.csv")
    parser.add_argument("--print-pins", action="store_true")
    args = parser.parse_args()
    pins = floor_pins()
    if args.print_pins:
        print(" ".join(f"'{p}'" for p in pins))
        return 0
    python = environment(args.venv, pins)
    versions = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                              check=True).stdout.split()
    print("at the floors:", " ".join(v for v in versions if v.split("==")[0].lower() in
                                     {Requirement(p).name.lower() for p in pins}), flush=True)
    with tempfile.TemporaryDirectory(prefix="floors-smoke-") as work:
        report = smoke(python, Path(work), args.data)
    print("floors hold:", json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
