"""CPU checks of the GPU tools (tools/gpu_check.sh, benchmarks/gpu_memory.py): they only run for real on a GPU,
so what can be checked without one is checked here: the script parses and fails cleanly without a GPU,
the 7B-shaped checkpoint is what it claims to be, and the extrapolation arithmetic is right."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"
GPU_MEMORY = REPO / "benchmarks" / "gpu_memory.py"
LLAMA2_7B_PARAMS = 6_738_415_616  # meta-llama/Llama-2-7b-hf, LM head untied


def _load_gpu_memory():
    spec = importlib.util.spec_from_file_location("gpu_memory", GPU_MEMORY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gm = _load_gpu_memory()


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi"):
        return True
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- tools/gpu_check.sh


def test_gpu_check_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    for needed in ('--ds "ds_configs/$ds.json"', "train_run zero2", "train_run zero3", "--num_processes 1",
                   "train.mixed_precision=bf16", "model.quantize=nf4", "model.dequantize_frozen=off",
                   "benchmarks/bench_model.py --steps 3 --baseline ''", "benchmarks/gpu_memory.py",
                   'OUT_DIR="${OUT:-runs/gpu_check}"'):
        assert needed in text, needed
    for ds in ("zero2", "zero3"):
        assert (REPO / "ds_configs" / f"{ds}.json").is_file()


@pytest.mark.skipif(_has_gpu(), reason="on a GPU machine the script would run its full 8-minute check")
def test_gpu_check_without_gpu_fails_with_a_summary(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OUT": str(tmp_path / "out")}, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert summary[-1] == "gpu_check: FAIL"
    assert summary[0].startswith("FAIL  env:")
    steps = [line.split()[1].rstrip(":") for line in summary[:-1]]
    assert steps == ["env", "backbone", "zero2", "zero3", "bench", "memory"]
    assert all("not run" in line for line in summary[1:-1])
    assert "gpu_check: FAIL" in result.stdout
    assert (tmp_path / "out" / "env.log").is_file()


@pytest.mark.skipif(_has_gpu(), reason="needs a machine without a GPU")
def test_gpu_check_single_step_fails_without_gpu(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--step", "env"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OUT": str(tmp_path / "out")})
    assert result.returncode != 0


# ---------------------------------------------------------------- benchmarks/gpu_memory.py: no CUDA


def test_gpu_memory_without_cuda_exits_2_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(GPU_MEMORY)], capture_output=True, text=True, timeout=120, env=env,
                            cwd=REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "CUDA" in lines[0]
    assert result.stdout == ""


def test_gpu_memory_refuses_a_single_layer_count():
    with pytest.raises(SystemExit) as info:
        gm.parse_args(["--layers", "2", "2"])
    assert info.value.code == 2


# ---------------------------------------------------------------- the 7B-shaped checkpoint


def test_config_has_llama2_7b_shape(tmp_path):
    from transformers import AutoConfig

    gm.write_config(tmp_path, gm.llama_config())
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.model_type == "llama"
    assert config.num_hidden_layers == 32
    assert config.hidden_size == 4096
    assert config.intermediate_size == 11008
    assert config.num_attention_heads == 32
    assert config.num_key_value_heads == 32
    assert config.vocab_size == 32000
    assert config.max_position_embeddings == 4096
    assert config.hidden_act == "silu"
    assert config.rms_norm_eps == pytest.approx(1e-5)
    assert config.tie_word_embeddings is False
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}
    assert rope["rope_theta"] == pytest.approx(10000.0)
    assert rope.get("rope_type", "default") == "default"


def test_config_counts_exactly_llama2_7b_parameters():
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(gm.llama_config())
    assert sum(p.numel() for p in model.parameters()) == LLAMA2_7B_PARAMS


def test_project_reads_the_config_cut_to_k_blocks(tmp_path):
    from llm4ts_scale.model.backbone import backbone_config
    from llm4ts_scale.model.build import _approx_params

    gm.write_config(tmp_path, gm.llama_config())
    source, cut, total = backbone_config(str(tmp_path), 6)
    assert (source, total, cut.num_hidden_layers, cut.hidden_size) == (str(tmp_path), 32, 6, 4096)
    assert _approx_params(cut) == 6 * (4 * 4096**2 + 3 * 4096 * 11008)


def test_write_backbone_declares_every_block_but_saves_the_first(tmp_path):
    """Same mechanics on a tiny shape: config.json says 32 blocks, the weights hold the first 2."""
    from safetensors import safe_open

    from llm4ts_scale.model.backbone import backbone_config

    path = gm.write_backbone(tmp_path / "ckpt", 2, gm.TINY_SHAPE)
    config = json.loads((path / "config.json").read_text())
    assert config["num_hidden_layers"] == 32
    assert config["hidden_size"] == gm.TINY_SHAPE["hidden_size"]
    files = sorted(path.glob("*.safetensors"))
    assert files
    keys = set()
    for f in files:
        with safe_open(str(f), "pt") as handle:
            keys |= set(handle.keys())
    blocks = {k.split(".layers.")[1].split(".")[0] for k in keys if ".layers." in k}
    assert blocks == {"0", "1"}
    assert "model.embed_tokens.weight" in keys
    _, cut, total = backbone_config(str(path), 2)
    assert (total, cut.num_hidden_layers) == (32, 2)
    with pytest.raises(ValueError):
        gm.write_backbone(tmp_path / "too-many", 33, gm.TINY_SHAPE)


# ---------------------------------------------------------------- extrapolation


def test_fit_line_two_points_is_exact():
    intercept, slope = gm.fit_line([2, 4], [1000, 1600])
    assert (intercept, slope) == pytest.approx((400, 300))
    assert gm.extrapolate([2, 4], [1000, 1600], [6, 32]) == pytest.approx({6: 2200, 32: 10000})


def test_fit_line_least_squares():
    # y = 5 + 2x with residuals +1, -2, +1 (they sum to zero and are orthogonal to x - mean(x))
    intercept, slope = gm.fit_line([1, 2, 3], [8, 7, 12])
    assert (intercept, slope) == pytest.approx((5.0, 2.0))
    xs, ys = [1, 2, 3, 4], [7.0, 9.0, 11.0, 13.0]
    assert gm.fit_line(xs, ys) == pytest.approx((5.0, 2.0))
    assert gm.extrapolate(xs, ys, [32])[32] == pytest.approx(69.0)


def test_fit_line_refuses_degenerate_input():
    with pytest.raises(ValueError):
        gm.fit_line([4, 4], [1, 2])
    with pytest.raises(ValueError):
        gm.fit_line([2, 4], [1])


def test_report_table_extrapolates_peak_and_backbone_bytes():
    mib = 2**20
    rows = [
        {"layers": 2, "backbone_bytes": 200 * mib, "resident_bytes": 260 * mib, "peak_bytes": 1000 * mib, "step_s": 0.1},
        {"layers": 4, "backbone_bytes": 400 * mib, "resident_bytes": 460 * mib, "peak_bytes": 1600 * mib, "step_s": 0.2},
    ]
    lines = gm.report(rows, [6, 32], "GPU", 80 * 1024 * mib)
    text = "\n".join(lines)
    assert "| 2 | 200.0 | 260.0 | 1,000.0 | 0.100 |" in text
    assert "| 6 (extrapolated) | 600.0 | | 2,200.0 | |" in text
    assert "| 32 (extrapolated) | 3,200.0 | | 10,000.0 | |" in text
    assert "fit: peak CUDA = 400.0 + 300.0 MiB x K" in text
    assert "DOES NOT FIT" not in text
    assert "DOES NOT FIT" in "\n".join(gm.report(rows, [32], "GPU", 9000 * mib))
