"""ZeRO-3 builds the backbone partitioned from load on (llm4ts_scale/model/partitioned.py), in every setting.

Real DeepSpeed (gloo, 1 and 2 processes) loads tiny LLaMA and GPT-2 backbones through tests/zero3_load.py; each is
compared with a plain one-process load in this process: gathered, every parameter (and every 4-bit quantization
state) must equal it bit for bit, random weights included (seeded per parameter name, so the same on any world
size), and with 2 processes no rank may hold or gather the whole backbone at any point of the load.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from backbones import tiny_gpt2, tiny_llama
from launching import CPU_LAUNCH_CONFIG, REPO, child_env, free_port
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

LAYERS = 3
# hidden 128: the matrices (16k elements and up) are partitioned; GPT-2's Conv1D becomes Linear4bit when quantized
SETTINGS = {
    "llama-none": ("llama", ["model.quantize=none"]),
    "llama-nf4-dequantized": ("llama", ["model.quantize=nf4", "model.dequantize_frozen=on"]),
    "llama-nf4-packed": ("llama", ["model.quantize=nf4", "model.dequantize_frozen=off"]),
    "llama-fp4-packed-single-quant": ("llama", ["model.quantize=fp4", "model.double_quant=false",
                                                "model.dequantize_frozen=off"]),
    "llama-random-none": ("llama", ["model.quantize=none", "model.backbone_init=random"]),
    "llama-random-nf4-packed": ("llama", ["model.quantize=nf4", "model.backbone_init=random",
                                          "model.dequantize_frozen=off"]),
    "llama-scratch": ("llama", ["model.quantize=none", "model.backbone_init=scratch"]),
    "gpt2-none": ("gpt2", ["model.quantize=none"]),
    "gpt2-nf4-dequantized": ("gpt2", ["model.quantize=nf4", "model.dequantize_frozen=on"]),
    "gpt2-nf4-packed": ("gpt2", ["model.quantize=nf4", "model.dequantize_frozen=off"]),
    "gpt2-random-none": ("gpt2", ["model.quantize=none", "model.backbone_init=random"]),
}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero3-backbones")
    return {"llama": tiny_llama(root / "llama", layers=LAYERS + 1, hidden=128, heads=4, kv_heads=2),
            "gpt2": tiny_gpt2(root / "gpt2", layers=LAYERS + 1, hidden=128, heads=4)}


def _overrides(backbones, arch: str, extra: list[str]) -> list[str]:
    return [f"model.backbone={backbones[arch]}", f"model.layers={LAYERS}", "train.mixed_precision=no", *extra]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory, backbones):
    """world size -> output folder of tests/zero3_load.py run with that many processes."""
    root = tmp_path_factory.mktemp("zero3-dumps")
    settings = root / "settings.json"
    settings.write_text(json.dumps({name: _overrides(backbones, arch, extra) for name, (arch, extra) in SETTINGS.items()}))
    out = {}
    for world in (1, 2):
        folder = root / f"world{world}"
        script = [str(REPO / "tests" / "zero3_load.py"), str(folder), str(settings)]
        if world == 1:
            cmd = [sys.executable, *script]
        else:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_LAUNCH_CONFIG),
                   "--num_processes", "2", "--main_process_port", str(free_port()), *script]
        proc = subprocess.run(cmd, cwd=REPO, env=child_env(OMP_NUM_THREADS=1), capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
        out[world] = folder
    return out


def _bits(t: torch.Tensor) -> bytes:
    """The tensor's bytes (packed 4-bit data viewed as floats holds NaN patterns, which never compare equal)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _plain_load(backbones, name: str):
    """The same backbone loaded whole in this process (no DeepSpeed), as every non-ZeRO-3 run loads it."""
    from llm4ts_scale.core.config import load_config
    from llm4ts_scale.model.backbone import is_quantized, load_backbone
    from llm4ts_scale.model.partitioned import zero3_enabled

    assert not zero3_enabled()
    arch, extra = SETTINGS[name]
    m = load_config(None, _overrides(backbones, arch, extra)).model
    model, info = load_backbone(m.backbone, m.layers, m.quantize, m.double_quant, compute_dtype=torch.float32,
                                attention="eager", init=m.backbone_init, dequantize=m.dequantize_frozen == "on")
    tensors = {}
    for pname, p in model.named_parameters():
        tensors[pname] = p.detach()
        if is_quantized(p):
            from zero3_load import quant_state_tensors

            tensors.update(quant_state_tensors(p.quant_state, pname))
    return tensors, info


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_gathered_weights_equal_a_plain_load(dumps, backbones, name, world):
    record = json.loads((dumps[world] / f"{name}.rank0.json").read_text())
    assert record["world_size"] == world and record["partitioned"] and not record["left_gathered"]
    gathered = load_file(str(dumps[world] / f"{name}.safetensors"))
    plain, info = _plain_load(backbones, name)
    assert set(gathered) == set(plain)
    for key, value in plain.items():
        got = gathered[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert _bits(got) == _bits(value), f"{name}: {key} differs from a one-process load"
    assert record["embed_std"] == pytest.approx(info.embed_std, rel=1e-12)


@pytest.mark.parametrize("name", ["llama-none", "llama-nf4-dequantized", "llama-random-none", "gpt2-nf4-packed"])
def test_no_rank_holds_or_gathers_the_whole_backbone(dumps, name):
    ranks = [json.loads((dumps[2] / f"{name}.rank{k}.json").read_text()) for k in (0, 1)]
    full = ranks[0]["full_bytes"]
    for record in ranks:
        assert record["held_bytes"] <= 0.55 * full, (name, record)  # half, and a padded shard at most
        # the load gathered a module (or a block's attention, to initialize it) at a time, never the backbone
        assert 0 < record["gather_peak_elements"] <= record["logical_elements"] / LAYERS, (name, record)
    assert sum(r["held_bytes"] for r in ranks) >= full  # together they hold all of it
