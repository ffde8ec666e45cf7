"""The alignment objective is strictly causal: token t predicts patch t+1 from patches <= t.

Tested on the RevIN-normalized series (`align_normalized`): RevIN's mean/std summarize the whole
window, so on raw inputs every position depends (through two detached scalars) on the future.
That is the LLM4TS design; causality is a property of the normalized path.
"""

import pytest
import torch

from backbones import BUILDERS
from llm4ts_scale.config import load_config
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
    with torch.no_grad():
        pred, _ = model.align_normalized(z, x_mark)
        for t in (0, T // 2, T - 3):
            cut = t * S + P  # patches 0..t end before `cut`; patch t+1 reaches past it
            z2, m2 = z.clone(), x_mark.clone()
            z2[:, cut:] += torch.randn(2, L - cut) * 3
            m2[:, cut:] = (m2[:, cut:] + 3) % 7
            pred2, _ = model.align_normalized(z2, m2)
            assert torch.allclose(pred[:, : t + 1], pred2[:, : t + 1], atol=1e-5), t
            assert not torch.allclose(pred[:, t + 1], pred2[:, t + 1], atol=1e-5), t


def test_target_is_the_next_patch_in_normalized_units(paths):
    model = model_for(paths["llama"])
    x = torch.randn(2, L) * 7 + 20
    pred, target = model(x, marks(2), task="align")
    z = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)
    assert pred.shape == target.shape == (2, T - 1, P)
    assert torch.allclose(target, patchify(z, P, S)[:, 1:], atol=1e-4)
    assert torch.allclose(target[:, 0], z[:, S:S + P], atol=1e-4)
