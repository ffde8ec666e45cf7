"""Every backbone setting the config admits trains under ZeRO-3 to test metrics, with 1 process and with 2.

The matrix: quantize none / nf4 / fp4 x backbone_init pretrained / random / scratch x dequantize_frozen on / off,
with 1 process (scratch trains the backbone's weights, so 4-bit scratch is refused when the config loads:
tests/model/test_model_backbones.py); none, random and nf4 with 2 processes (nf4: test_train_distributed.py),
GPT-2 (the paper configs' backbone) among them; one cell under ds_configs/zero3_offload.json. Each cell is a real
run of launch/train.py (align, exact LP, FT) on ILI with tiny backbones; the 1-process cells run two at a time.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from backbones import tiny_gpt2, tiny_llama
from launching import child_env, data_dir, launch_train, tiny_run_overrides

pytestmark = pytest.mark.slow

L, H = 32, 12
CELLS = {  # name -> (processes, DeepSpeed config, backbone, overrides)
    "none-pretrained-gpt2": (1, "zero3", "gpt2", {"model.quantize": "none"}),
    "none-random": (1, "zero3", "llama", {"model.quantize": "none", "model.backbone_init": "random"}),
    "none-scratch": (1, "zero3", "llama", {"model.quantize": "none", "model.backbone_init": "scratch"}),
    "nf4-pretrained-dequantized-gpt2": (1, "zero3", "gpt2", {"model.dequantize_frozen": "on"}),
    "nf4-pretrained-packed": (1, "zero3", "llama", {}),
    "nf4-random-dequantized": (1, "zero3", "llama", {"model.backbone_init": "random", "model.dequantize_frozen": "on"}),
    "nf4-random-packed": (1, "zero3", "llama", {"model.backbone_init": "random"}),
    "fp4-pretrained-dequantized": (1, "zero3", "llama", {"model.quantize": "fp4", "model.dequantize_frozen": "on"}),
    "fp4-pretrained-packed": (1, "zero3", "llama", {"model.quantize": "fp4"}),
    "fp4-random-dequantized": (1, "zero3", "llama", {"model.quantize": "fp4", "model.backbone_init": "random",
                                                     "model.dequantize_frozen": "on"}),
    "fp4-random-packed-gpt2": (1, "zero3", "gpt2", {"model.quantize": "fp4", "model.backbone_init": "random"}),
    "nf4-random-offload": (1, "zero3_offload", "llama", {"model.backbone_init": "random", "model.dequantize_frozen": "on"}),
    "none-pretrained-gpt2-2proc": (2, "zero3", "gpt2", {"model.quantize": "none"}),
    "none-random-2proc": (2, "zero3", "llama", {"model.quantize": "none", "model.backbone_init": "random"}),
}


def _expected_test_samples() -> int:
    """ILI, ratio split (docs/ARCHITECTURE.md section 4): the last int(0.2 n) rows are the test targets; 7 channels."""
    rows = sum(1 for _ in open(data_dir() / "national_illness.csv")) - 1
    return 7 * (int(rows * 0.2) - H + 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero3-matrix")
    backbones = {"llama": tiny_llama(root / "llama", layers=3, hidden=32),
                 "gpt2": tiny_gpt2(root / "gpt2", layers=3, hidden=32)}

    def run(name: str):
        processes, ds, arch, over = CELLS[name]
        run_dir = root / name
        overrides = tiny_run_overrides(backbones[arch], run_dir, **{
            "data.path": data_dir() / "national_illness.csv", "data.seq_len": L, "data.pred_len": H,
            "data.few_shot_percent": 100, "data.batch_size": 32, "train.limit_train_batches": 2,
            "train.log_with": "none", "stages.align.epochs": 1, "stages.lp.solver": "exact", "stages.ft.epochs": 1,
            **over})
        env = child_env(OMP_NUM_THREADS=1, LLM4TS_CPU_THREADS=1) if processes == 1 else None
        return name, run_dir, launch_train(overrides, ds=ds, processes=processes, timeout=900, env=env)

    single = [n for n, cell in CELLS.items() if cell[0] == 1]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one core each
        results = list(pool.map(run, single))
    results += [run(n) for n, cell in CELLS.items() if cell[0] > 1]
    return {name: (run_dir, proc) for name, run_dir, proc in results}


@pytest.mark.parametrize("name", list(CELLS))
def test_zero3_setting_trains_to_test_metrics(runs, name):
    run_dir, proc = runs[name]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["world_size"] == CELLS[name][0]
    assert all(state["stages"][s]["status"] == "done" for s in ("align", "lp", "ft"))
    assert state["stages"]["lp"]["solver"] == "exact"
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["samples"] == _expected_test_samples()
    assert math.isfinite(test["mse"]) and 0 < test["mse"] < 10
    assert (run_dir / "export" / "adapter" / "adapter_model.safetensors").is_file()
