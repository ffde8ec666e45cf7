"""`llm4ts-scale describe`: the JSON a user reads before renting GPUs, and its one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backbones import tiny_gpt2, tiny_llama

from llm4ts_scale.cli import main

KEYS = {"backbone", "backbone_class", "layers_loaded", "params_total", "groups", "trainable", "backbone_bytes"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {"llama": tiny_llama(root / "llama", layers=4, hidden=64), "gpt2": tiny_gpt2(root / "gpt2", layers=3)}


def describe(capsys, *args):
    assert main(["describe", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_describe_prints_the_keys(paths, capsys):
    out = describe(capsys, f"model.backbone={paths['llama']}", "model.layers=2", "model.quantize=none")
    assert KEYS <= set(out)
    assert out["backbone"] == str(paths["llama"]) and out["backbone_class"] == "LlamaModel"
    assert out["layers_loaded"] == 2
    assert set(out["groups"]) == {"head", "align_head", "embeddings", "lora", "norms", "positions", "revin", "backbone", "frozen"}
    assert out["params_total"] == sum(out["groups"].values())
    g = out["groups"]
    assert out["trainable"] == {
        "align": g["align_head"] + g["lora"] + g["norms"] + g["embeddings"] + g["positions"],
        "lp": g["head"],
        "ft": g["head"] + g["lora"] + g["norms"] + g["embeddings"] + g["positions"] + g["revin"],
    }


def test_nf4_backbone_takes_fewer_bytes(paths, capsys):
    common = [f"model.backbone={paths['llama']}", "model.layers=2", "model.dequantize_frozen=off"]
    none = describe(capsys, *common, "model.quantize=none")
    nf4 = describe(capsys, *common, "model.quantize=nf4")
    assert nf4["backbone_bytes"] < none["backbone_bytes"] / 2
    assert nf4["params_total"] == none["params_total"]  # 4-bit weights counted as the values they hold


def test_describe_reads_a_config_file(paths, capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  backbone: {paths['gpt2']}\n  layers: 3\n  quantize: none\n")
    out = describe(capsys, "--config", str(config))
    assert out["layers_loaded"] == 3 and out["groups"]["positions"] > 0


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", "describe", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_unknown_backbone_is_one_line_exit_2():
    proc = _cli("model.backbone=no-such-org/no-such-model")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no-such-org/no-such-model" in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0]


def test_too_many_layers_is_one_line_exit_2(paths, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["describe", f"model.backbone={paths['gpt2']}", "model.layers=4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.layers=4 exceeds the 3 blocks" in err[0]


def test_describe_reports_what_this_machine_holds_and_the_4bit_size(paths, capsys):
    """On a CPU the NF4 weights are held dequantized (model.dequantize_frozen=auto): backbone_bytes says what
    this machine holds, backbone_bytes_4bit what a GPU holds."""
    common = [f"model.backbone={paths['llama']}", "model.layers=2"]
    held = describe(capsys, *common, "model.quantize=nf4", "model.dequantize_frozen=on")
    packed = describe(capsys, *common, "model.quantize=nf4", "model.dequantize_frozen=off")
    full = describe(capsys, *common, "model.quantize=none")
    assert held["backbone_bytes"] == full["backbone_bytes"] and "backbone_bytes_4bit" not in full
    assert held["backbone_bytes_4bit"] == packed["backbone_bytes"] == packed["backbone_bytes_4bit"]
    assert packed["backbone_bytes"] < full["backbone_bytes"] / 2


def test_describe_holds_the_backbone_in_the_precision_a_run_would_use(paths, capsys):
    common = [f"model.backbone={paths['llama']}", "model.layers=2", "model.quantize=none"]
    fp32 = describe(capsys, *common, "train.mixed_precision=no")
    bf16 = describe(capsys, *common, "train.mixed_precision=bf16")
    assert (fp32["precision"], bf16["precision"]) == ("no", "bf16")
    assert bf16["backbone_bytes"] < 0.6 * fp32["backbone_bytes"]  # frozen matrices in bf16, small weights stay fp32


QWEN7B = [f"model.backbone={Path(__file__).resolve().parents[2] / 'configs' / 'backbones' / 'qwen2.5-7b'}",
          "model.layers=28", "model.backbone_init=random", "model.quantize=none", "train.mixed_precision=bf16",
          "data.seq_len=96", "data.pred_len=24", "data.batch_size=1"]


def test_memory_plan_of_a_7b_architecture_without_its_weights(capsys):
    """--meta counts the architecture on the meta device (the folder holds a config.json only); under ZeRO-3 the
    backbone's share per rank is divided by the ranks, under ZeRO-2 it is not."""
    ds = str(Path(__file__).resolve().parents[2] / "ds_configs")
    plans = {(stage, n): describe(capsys, "--meta", "--ds", f"{ds}/{stage}.json", "--processes", str(n),
                                  "--device", "cpu", *QWEN7B)["memory_per_rank"]
             for stage in ("zero2", "zero3") for n in (1, 2)}
    whole = plans["zero2", 1]["backbone_bytes"]
    assert 13.0e9 < whole < 13.2e9  # 28 blocks x 233.1M parameters x 2 bytes (bf16)
    assert plans["zero2", 2]["backbone_bytes"] == whole
    assert plans["zero3", 2]["backbone_bytes"] == pytest.approx(whole / 2, rel=0.001)
    assert plans["zero3", 2]["gathered_bytes"] > 0 == plans["zero2", 2]["gathered_bytes"]
    assert plans["zero3", 2]["total_bytes"] < 0.6 * plans["zero2", 1]["total_bytes"]
    assert plans["zero2", 2]["trainable_bytes"] < plans["zero2", 1]["trainable_bytes"]  # optimizer state divided


def test_memory_plan_for_nf4_on_gpus_holds_half_a_byte_per_value(capsys):
    ds = str(Path(__file__).resolve().parents[2] / "ds_configs" / "zero3.json")
    nf4 = describe(capsys, "--meta", "--ds", ds, "--processes", "8", "--device", "cuda",
                   *[o for o in QWEN7B if o != "model.quantize=none"], "model.quantize=nf4")["memory_per_rank"]
    assert nf4["backbone_held_as"] == "nf4 packed"
    assert nf4["backbone_bytes"] == pytest.approx(28 * 233.1e6 * 0.516 / 8, rel=0.01)
