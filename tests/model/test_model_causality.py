"""The alignment objective is strictly causal: token t predicts patch t+1 from patches <= t.

Tested on the RevIN-normalized series (`align_normalized`): RevIN's mean/std summarize the whole
window, so on raw inputs every position depends (through two detached scalars) on the future.
That is the LLM4TS design; causality is a property of the normalized path.
"""

import pytest
import torch
from backbones import BUILDERS

from llm4ts_scale.core.config import load_config
from llm4ts_scale.model import build_model
from llm4ts_scale.model.encoder import patchify

L, P, S = 64, 16, 8
T = (L - P) // S + 2


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {arch: BUILDERS[arch](root / arch, layers=2) for arch in ("gpt2", "llama", "qwen2")}


def model_for(path, *overrides):
    torch.manual_seed(0)
    cfg = load_config(None, [f"model.backbone={path}", "model.layers=2", f"data.seq_len={L}", "data.pred_len=8",
                             f"data.patch_len={P}", f"data.stride={S}", *overrides])
    return build_model(cfg, ["weekday", "hour"]).eval()


def marks(b):
    steps = torch.arange(L)
    return torch.stack([(steps // 24 % 7), steps % 24], -1).expand(b, L, 2).clone()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_future_patches_do_not_change_past_predictions(paths, arch, pooling, quantize):
    model = model_for(paths[arch], f"model.temporal_pooling={pooling}", f"model.quantize={quantize}",
                      "model.conv_kernel=5")
    z, x_mark = torch.randn(2, L), marks(2)
    future = torch.randn(2, S)
    with torch.no_grad():
        pred, _ = model.align_normalized(z, future, x_mark)
        for t in (0, T // 2, T - 3):
            cut = t * S + P  # patches 0..t end before `cut`; patch t+1 reaches past it
            z2, m2 = z.clone(), x_mark.clone()
            z2[:, cut:] += torch.randn(2, L - cut) * 3
            m2[:, cut:] = (m2[:, cut:] + 3) % 7
            pred2, _ = model.align_normalized(z2, future, m2)
            assert torch.allclose(pred[:, : t + 1], pred2[:, : t + 1], atol=1e-5), t
            assert not torch.allclose(pred[:, t + 1], pred2[:, t + 1], atol=1e-5), t


def test_target_is_the_next_patch_in_normalized_units(paths):
    """Every target is a true patch of the series (none is padding): the last one ends with the S values
    after the look-back, normalized with the look-back's statistics only."""
    model = model_for(paths["llama"])
    series = torch.randn(2, L + S) * 7 + 20
    x, future = series[:, :L], series[:, L:]
    pred, target = model(x, marks(2), task="align", future=future)
    mean, std = x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)
    z_series = (series - mean) / std
    assert pred.shape == target.shape == (2, T - 1, P)
    assert torch.allclose(target[:, 0], z_series[:, S:S + P], atol=1e-4)
    assert torch.allclose(target[:, -1], z_series[:, L + S - P:], atol=1e-4)
    assert torch.allclose(target[:, -1, -S:], (future - mean) / std, atol=1e-4)
    for t in range(T - 1):
        assert torch.allclose(target[:, t], z_series[:, (t + 1) * S:(t + 1) * S + P], atol=1e-4)
    assert not torch.allclose(target[:, -1], patchify(z_series[:, :L], P, S)[:, -1], atol=1e-3)  # not padding
