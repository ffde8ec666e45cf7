"""The fast path keeps the numbers: automatic precision follows the CPU, bf16 forecasts agree with fp32,
LP on cached features trains exactly like LP without the cache, and `evaluate RUN_DIR` reuses the run's
precision."""

from __future__ import annotations

import json

import pytest
import torch
from backbones import tiny_gpt2, tiny_llama
from launching import cli, launch_train, tiny_run_overrides

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.precision import cpu_flags, resolve_precision
from llm4ts_scale.model import build_model


def test_automatic_precision_follows_the_cpu():
    assert resolve_precision("auto", "cpu", {"avx2", "avx512f", "amx_bf16", "amx_tile"})[0] == "bf16"
    assert resolve_precision("auto", "cpu", {"avx512f", "avx512_bf16"})[0] == "bf16"
    precision, reason = resolve_precision("auto", "cpu", {"avx2", "avx512f", "avx512_vnni"})
    assert precision == "no" and "no native bf16" in reason
    assert resolve_precision("bf16", "cpu", set()) == ("bf16", "train.mixed_precision=bf16")
    assert resolve_precision("no", "cpu", {"amx_bf16"})[0] == "no"
    here = resolve_precision("auto", "cpu")[0]  # this machine: whatever its flags say
    assert here == ("bf16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "no")


@pytest.mark.parametrize("builder", [tiny_llama, tiny_gpt2])
def test_bf16_forecasts_agree_with_fp32(tmp_path, builder):
    """One fixed model (same weights), computed in fp32 and on the bf16 fast path (bf16 frozen weights,
    bf16 autocast). bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 % per operation); through
    two blocks, norms and a 256-input head the errors add up to about 1 % of the forecast's spread, so
    we require the largest difference below 3 % of it and the mean below 1 %."""
    path = builder(tmp_path / "backbone", layers=2, hidden=64)
    config = load_config(None, [f"model.backbone={path}", "model.layers=2", "model.quantize=nf4", "data.seq_len=96",
                                "data.pred_len=24", "model.dropout=0"])
    torch.manual_seed(0)
    fp32 = build_model(config, ["weekday", "hour"], "no").eval()
    torch.manual_seed(0)
    fast = build_model(config, ["weekday", "hour"], "bf16").eval()
    fast.load_state_dict(fp32.state_dict(), strict=False)  # same tunable weights; frozen ones are the same file
    assert any(p.dtype == torch.bfloat16 for p in fast.backbone.parameters())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 96, generator=g).cumsum(1)
    steps = torch.arange(96)
    marks = torch.stack([steps // 24 % 7, steps % 24], -1).expand(16, 96, 2)
    with torch.inference_mode():
        ref = fp32(x, marks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fast(x, marks).float()
    spread = ref.std()
    assert (got - ref).abs().max() < 0.03 * spread
    assert (got - ref).abs().mean() < 0.01 * spread


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "llama", layers=2, hidden=32)


def _lp_run(tmp_path_factory, backbone, cache: str):
    run_dir = tmp_path_factory.mktemp(f"lp-{cache}") / "run"
    over = {"stages.align.epochs": 0, "stages.ft.epochs": 0, "stages.lp.epochs": 3, "model.dropout": 0.0,
            "train.lp_feature_cache": cache, "train.limit_train_batches": 4, "train.log_with": "none",
            "data.few_shot_percent": 5, "model.dequantize_frozen": "on"}
    result = launch_train(tiny_run_overrides(backbone, run_dir, **over), ds=None, processes=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return run_dir, result.stdout


def test_lp_on_cached_features_trains_like_lp_without_cache(tmp_path_factory, backbone):
    """With no dropout in the frozen part, caching the encoder + backbone output changes nothing: the same
    training and validation losses every epoch (to 1e-5), the same test score."""
    (cached, out_cached), (plain, out_plain) = (_lp_run(tmp_path_factory, backbone, c) for c in ("on", "off"))
    assert "LP features cached once" in out_cached and "LP features cached once" not in out_plain
    h_cached = json.loads((cached / "run.json").read_text())["stages"]["lp"]["history"]
    h_plain = json.loads((plain / "run.json").read_text())["stages"]["lp"]["history"]
    assert len(h_cached) == len(h_plain) == 3
    for a, b in zip(h_cached, h_plain):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-7)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5, abs=1e-7)
    assert h_cached[-1]["train_loss"] < h_cached[0]["train_loss"]
    m_cached = json.loads((cached / "metrics.json").read_text())["test"]
    m_plain = json.loads((plain / "metrics.json").read_text())["test"]
    assert m_cached["mse"] == pytest.approx(m_plain["mse"], rel=1e-5)
    state = json.loads((cached / "run.json").read_text())
    assert state["precision"] in ("no", "bf16") and state["precision_reason"].startswith("auto")


def test_evaluate_reuses_the_precision_of_the_run(tmp_path, backbone):
    """Defect: `evaluate RUN_DIR` scored in fp32 what training scored in bf16. A bf16 run (emulated where
    the CPU has no native bf16) records its precision, and evaluation reproduces its test metrics."""
    run_dir = tmp_path / "run"
    over = {"train.mixed_precision": "bf16", "stages.align.epochs": 0, "stages.ft.epochs": 1, "stages.lp.epochs": 1,
            "train.limit_train_batches": 2, "train.log_with": "none"}
    result = launch_train(tiny_run_overrides(backbone, run_dir, **over), ds=None, processes=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["precision"] == "bf16"
    assert json.loads((run_dir / "export" / "config.json").read_text())["precision"] == "bf16"
    scored = cli(["evaluate", str(run_dir)])
    assert scored.returncode == 0, scored.stderr[-2000:]
    got = json.loads(scored.stdout.strip().splitlines()[-1])
    expected = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert got["precision"] == "bf16" and got["samples"] == expected["samples"]
    assert got["mse"] == pytest.approx(expected["mse"], rel=1e-5)
