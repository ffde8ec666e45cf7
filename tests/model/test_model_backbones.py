"""LLM4TS on tiny random GPT-2 / LLaMA / Qwen2 / Mistral backbones loaded by path: shapes, layer
truncation, LoRA placement, 4-bit layers, parameter groups per stage, gradient flow."""

import bitsandbytes as bnb
import pytest
import torch
from backbones import BUILDERS
from peft import load_peft_weights, set_peft_model_state_dict
from safetensors.torch import load_file

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.stages import STAGE_GROUPS
from llm4ts_scale.model import GROUPS, LLM4TS, build_model
from llm4ts_scale.model.backbone import load_backbone

ATTRS = ["month", "day", "weekday", "hour"]
L, H, P, S = 64, 24, 16, 8
T = (L - P) // S + 2
LORA_TARGETS = {"gpt2": {"c_attn"}, "llama": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"},
                "mistral": {"q_proj", "v_proj"}}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {arch: build(root / arch, layers=4) for arch, build in BUILDERS.items()}


def make(paths, arch, *overrides, attrs=ATTRS) -> LLM4TS:
    torch.manual_seed(0)
    cfg = load_config(None, [f"model.backbone={paths[arch]}", "model.layers=2", "model.quantize=none",
                             "model.dequantize_frozen=off",  # these tests are about the 4-bit modules themselves
                             f"data.seq_len={L}", f"data.pred_len={H}", f"data.patch_len={P}", f"data.stride={S}",
                             *overrides])
    return build_model(cfg, attrs)


def batch(b=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, L, generator=g).cumsum(1)
    x_mark = torch.stack([torch.randint(1, 12, (b, L), generator=g), torch.randint(1, 31, (b, L), generator=g),
                          torch.randint(0, 7, (b, L), generator=g), torch.randint(0, 24, (b, L), generator=g)], -1)
    return x, x_mark


@pytest.mark.parametrize("arch", list(BUILDERS))
@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_heads_shapes_and_layers_loaded(paths, arch, quantize):
    model = make(paths, arch, f"model.quantize={quantize}")
    x, x_mark = batch()
    assert model(x, x_mark).shape == (3, H)
    pred, target = model(x, x_mark, task="align", future=x[:, -S:])
    assert pred.shape == target.shape == (3, T - 1, P)
    assert model.info.layers_loaded == 2 and model.info.layers_total == 4
    blocks = [m for m in model.backbone.modules() if type(m).__name__.endswith(("Block", "DecoderLayer"))]
    assert len(blocks) == 2


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loaded_blocks_are_the_first_ones_of_the_checkpoint(paths, arch):
    saved = load_file(paths[arch] / "model.safetensors")
    backbone, _ = load_backbone(str(paths[arch]), layers=2)
    prefix = "transformer." if arch == "gpt2" else "model."
    loaded = backbone.state_dict()
    assert loaded and all(torch.equal(v, saved[prefix + k]) for k, v in loaded.items() if k in {
        n.removeprefix(prefix) for n in saved})
    block = "h" if arch == "gpt2" else "layers"
    assert any(k.startswith(f"{prefix}{block}.3.") for k in saved)
    assert not any(k.startswith((f"{block}.2.", f"{block}.3.")) for k in loaded)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_token_embeddings_are_dropped_and_inputs_embeds_drive_the_backbone(paths, arch):
    model = make(paths, arch)
    assert not any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == 256 for m in model.backbone.modules())
    with pytest.raises(RuntimeError, match="inputs_embeds"):
        model.backbone(input_ids=torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("arch", list(BUILDERS))
@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_lora_on_the_architecture_default_projections(paths, arch, quantize):
    model = make(paths, arch, f"model.quantize={quantize}")
    wrapped = {name.split(".")[-1] for name, m in model.backbone.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == LORA_TARGETS[arch]
    lora = [n for n, _ in model.param_groups()["lora"]]
    assert len(lora) == 2 * 2 * len(LORA_TARGETS[arch])  # A and B, per target, per block


def test_lora_targets_override_and_bad_targets(paths):
    model = make(paths, "llama", "model.lora.targets=[k_proj,o_proj,down_proj]")
    wrapped = {name.split(".")[-1] for name, m in model.backbone.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"k_proj", "o_proj", "down_proj"}
    with pytest.raises(UserError, match="match no module"):
        make(paths, "llama", "model.lora.targets=[c_attn]")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_4bit_layers_present_only_when_asked(paths, arch):
    def count(model):
        return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    assert count(make(paths, arch, "model.quantize=none")) == 0
    nf4 = make(paths, arch, "model.quantize=nf4")
    assert count(nf4) == (4 if arch == "gpt2" else 7) * 2  # every linear of every block
    assert {m.weight.quant_state.quant_type for m in nf4.modules() if isinstance(m, bnb.nn.Linear4bit)} == {"nf4"}
    fp4 = make(paths, arch, "model.quantize=fp4", "model.double_quant=false")
    assert {m.weight.quant_state.quant_type for m in fp4.modules() if isinstance(m, bnb.nn.Linear4bit)} == {"fp4"}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("quantize", ["none", "nf4"])
@pytest.mark.parametrize("stage", list(STAGE_GROUPS))
def test_trainable_and_gradients_exactly_the_stage_groups(paths, arch, quantize, stage):
    model = make(paths, arch, f"model.quantize={quantize}")
    model.set_trainable(STAGE_GROUPS[stage])
    groups = model.param_groups()
    assert set(groups) == set(GROUPS)
    for group, params in groups.items():
        for name, p in params:
            assert p.requires_grad == (group in STAGE_GROUPS[stage]), (group, name)
    x, x_mark = batch()
    if stage == "align":
        pred, target = model(x, x_mark, task="align", future=x[:, -S:])
        loss = torch.nn.functional.mse_loss(pred, target)
    else:
        loss = torch.nn.functional.mse_loss(model(x, x_mark), torch.randn(3, H))
    loss.backward()
    for group, params in groups.items():
        if group in STAGE_GROUPS[stage]:
            assert all(p.grad is not None for _, p in params), group
            if params:
                assert any(p.grad.abs().sum() > 0 for _, p in params), f"no gradient reaches {group}"
        else:
            assert all(p.grad is None for _, p in params), group


def test_groups_follow_config_switches(paths):
    gpt2 = make(paths, "gpt2")
    assert [n.split(".")[-2:] for n, _ in gpt2.param_groups()["positions"]] == [["wpe", "weight"]]
    assert gpt2.param_groups()["norms"] and gpt2.param_groups()["revin"]
    off = make(paths, "gpt2", "model.tune_norms=false", "model.tune_positions=false", "model.revin_affine=false")
    groups = off.param_groups()
    assert not groups["norms"] and not groups["positions"] and not groups["revin"]
    assert sum(p.numel() for _, p in groups["frozen"]) > sum(p.numel() for _, p in gpt2.param_groups()["frozen"])
    llama = make(paths, "llama")
    assert not llama.param_groups()["positions"]  # rotary: no learned position table


def test_quantized_weights_never_train(paths):
    model = make(paths, "llama", "model.quantize=nf4")
    model.set_trainable(set(GROUPS) - {"frozen"})
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    with pytest.raises(ValueError):
        model.set_trainable({"frozen"})
    with pytest.raises(ValueError):
        model.set_trainable({"lora", "nope"})


def test_parameter_names_are_deterministic(paths):
    a, b = make(paths, "qwen2"), make(paths, "qwen2")
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_forecast_is_in_input_units(paths):
    """RevIN: shifting and scaling the window shifts and scales the forecast the same way."""
    model = make(paths, "llama").eval()
    x, x_mark = batch()
    with torch.no_grad():
        y = model(x, x_mark)
        assert torch.allclose(model(x * 3 + 100, x_mark), y * 3 + 100, rtol=1e-4, atol=1e-3)


def test_adapter_round_trip_with_save_pretrained(paths, tmp_path):
    model = make(paths, "gpt2", "model.quantize=nf4")
    for _, p in model.param_groups()["lora"]:
        torch.nn.init.normal_(p)
    model.backbone.save_pretrained(tmp_path / "adapter")
    other = make(paths, "gpt2", "model.quantize=nf4")
    set_peft_model_state_dict(other.backbone, load_peft_weights(str(tmp_path / "adapter")))
    x, x_mark = batch()
    model.eval(), other.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, x_mark), other(x, x_mark))


def test_user_errors(paths, tmp_path):
    with pytest.raises(UserError, match="exceeds the 4 blocks"):
        make(paths, "llama", "model.layers=5")
    with pytest.raises(UserError, match="not a model directory"):
        make(paths, "llama", f"model.backbone={tmp_path / 'missing'}")
    with pytest.raises(UserError, match="positions"):
        make(paths, "gpt2", "data.seq_len=1048")  # 130 patches > 128 positions of the tiny GPT-2


def test_eval_then_train_with_4bit_keeps_numerics_and_backward(paths):
    """bitsandbytes' CPU eval fast path would repack 4-bit weights in place (see backbone.py)."""
    model = make(paths, "llama", "model.quantize=nf4", "model.dropout=0", "model.lora.dropout=0")
    x, x_mark = batch()
    before = model(x, x_mark)
    model.eval()
    with torch.no_grad():
        during = model(x, x_mark)
    model.train()
    after = model(x, x_mark)
    after.sum().backward()
    assert torch.equal(before, during) and torch.equal(before, after)
    assert all(p.grad is not None for _, p in model.param_groups()["lora"])


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_backbone_takes_inputs_embeds_with_or_without_an_all_ones_mask(paths, arch):
    backbone, info = load_backbone(str(paths[arch]), layers=2)
    e = torch.randn(2, T, info.hidden_size)
    with torch.no_grad():
        plain = backbone(inputs_embeds=e).last_hidden_state
        masked = backbone(inputs_embeds=e, attention_mask=torch.ones(2, T, dtype=torch.long)).last_hidden_state
    assert plain.shape == (2, T, info.hidden_size) and torch.allclose(plain, masked, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dequantized_frozen_weights_compute_exactly_like_4bit(paths, arch):
    """model.dequantize_frozen=on (the CPU default) holds the NF4 weights dequantized once: no 4-bit module
    is left, and forecasts and gradients equal those of the 4-bit model bit for bit."""
    packed = make(paths, arch, "model.quantize=nf4", "model.dropout=0")
    plain = make(paths, arch, "model.quantize=nf4", "model.dropout=0", "model.dequantize_frozen=on")
    assert not any(type(m).__name__ == "Linear4bit" and hasattr(m.weight, "quant_state") for m in plain.modules())
    assert any(hasattr(getattr(m, "weight", None), "quant_state") for m in packed.modules())
    x, x_mark = batch()
    grads = []
    for model in (packed, plain):
        model.set_trainable(STAGE_GROUPS["ft"])
        torch.manual_seed(1)  # GPT-2 keeps its own dropout
        out = model(x, x_mark)
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert torch.isfinite(out).all()
    assert torch.equal(packed.eval()(x, x_mark), plain.eval()(x, x_mark))
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_scratch_backbone_trains_its_weights_and_a_random_one_keeps_them_frozen(paths, arch):
    """model.backbone_init: scratch is the architecture without its pretraining, trained end to end (Tan et al.
    2024's ablation); random is the same fresh weights, frozen. One alignment step tells them apart."""
    from llm4ts_scale.core.config import RunConfig, stage_groups

    def one_align_step(init):
        model = make(paths, arch, f"model.backbone_init={init}")
        model.set_trainable(stage_groups(RunConfig(), "align"))
        groups = model.param_groups()  # the blocks' own weight matrices: not LoRA, norms or position tables
        blocks = {n: p.detach().clone() for g in ("frozen", "backbone") for n, p in groups[g] if p.dim() == 2}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        x, x_mark = batch()
        pred, target = model(x, x_mark, task="align", future=x[:, -S:])
        torch.nn.functional.mse_loss(pred, target).backward()
        optimizer.step()
        changed = {n for n, p in model.named_parameters() if n in blocks and not torch.equal(p.detach(), blocks[n])}
        return model, blocks, changed

    scratch, blocks, changed = one_align_step("scratch")
    assert scratch.param_groups()["frozen"] == []
    assert blocks and changed == set(blocks)  # every weight matrix of the blocks moved after one step
    assert all(p.dtype == torch.float32 for _, p in scratch.param_groups()["backbone"])
    random, blocks, changed = one_align_step("random")
    assert random.param_groups()["backbone"] == [] and changed == set()
    with pytest.raises(UserError, match="model.quantize=none"):
        load_config(None, ["model.backbone_init=scratch", "model.quantize=nf4"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_head_reads_the_chosen_layers_side_by_side_and_pooled(paths, arch):
    """model.read_layers / read_pool: block K's states are what the official head reads; earlier blocks enter
    through the backbone's final norm, next to it; mean and last pool the tokens."""
    from llm4ts_scale.model.llm4ts import final_norm

    x, x_mark = batch()
    official = make(paths, arch).eval()
    both = make(paths, arch, "model.read_layers=all").eval()
    first = make(paths, arch, "model.read_layers=[1]", "model.read_pool=mean").eval()
    with torch.no_grad():
        h = official.features(x, x_mark)
        hb = both.features(x, x_mark)
        z = both.revin.normalize(x, both.revin.statistics(x))
        states = both._backbone_states(z, x_mark, every_layer=True)
        h1 = first.features(x, x_mark)
    d = official.info.hidden_size
    assert official.feature_shape == (T, d) and h.shape == (3, T, d)
    assert both.feature_shape == (T, 2 * d) and hb.shape == (3, T, 2 * d)
    torch.testing.assert_close(hb[..., d:], h)  # the same weights (seed 0): block K's part is the official features
    torch.testing.assert_close(hb[..., :d], final_norm(both.backbone)(states[1]))
    assert first.feature_shape == (1, d) and h1.shape == (3, 1, d)
    torch.testing.assert_close(h1[:, 0], hb[..., :d].mean(dim=1))
    assert both.head.proj.in_features == T * 2 * d and first.head.proj.in_features == d
    assert both(x, x_mark).shape == first(x, x_mark).shape == (3, H)
    with pytest.raises(UserError, match="read_layers"):
        load_config(None, ["model.layers=2", "model.read_layers=[3]"])
