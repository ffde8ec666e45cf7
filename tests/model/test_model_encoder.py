"""Encoder parts on their own: patching, RevIN, the causal token conv, temporal embeddings."""

import pytest
import torch

from llm4ts_scale.model.encoder import (
    CALENDAR_SIZES,
    CalendarSpec,
    CausalTokenConv,
    PatchEncoder,
    Patching,
    RevIN,
    TemporalEmbedding,
    num_patches,
    patchify,
)


def test_calendar_sizes_match_the_data_contract():
    assert CALENDAR_SIZES == {"month": 13, "day": 32, "weekday": 7, "hour": 24, "minute": 60, "second": 60}
    assert list(CALENDAR_SIZES) == ["month", "day", "weekday", "hour", "minute", "second"]


@pytest.mark.parametrize("L,P,S", [(336, 16, 8), (512, 16, 8), (64, 16, 16), (40, 8, 4)])
def test_patchify_pads_the_end_by_stride(L, P, S):
    x = torch.arange(L, dtype=torch.float32).repeat(2, 1)
    patches = patchify(x, P, S)
    assert patches.shape == (2, (L - P) // S + 2, P) and patches.shape[1] == num_patches(L, P, S)
    assert torch.equal(patches[0, 1], torch.arange(S, S + P, dtype=torch.float32))
    assert torch.all(patches[0, -1, -S:] == L - 1)  # replication padding


def test_patchify_keeps_trailing_dims_for_marks():
    marks = torch.arange(20).view(1, 20, 1).repeat(1, 1, 3)
    assert patchify(marks, 8, 4).shape == (1, 5, 8, 3)


def test_revin_round_trip_and_statistics_are_detached():
    revin = RevIN(affine=True)
    x = (torch.randn(4, 50) * 5 + 3).requires_grad_()
    stats = revin.statistics(x)
    assert not stats[0].requires_grad and not stats[1].requires_grad
    z = revin.normalize(x, stats)
    assert torch.allclose(z.mean(1), torch.zeros(4), atol=1e-5)
    with torch.no_grad():
        revin.weight.fill_(2.0), revin.bias.fill_(0.5)
    assert torch.allclose(revin.denormalize(revin.affine(z), stats), x, atol=1e-4)


def test_token_conv_is_causal():
    conv = CausalTokenConv(patch_len=8, d_model=16, kernel=3)
    patches = torch.randn(2, 10, 8)
    changed = patches.clone()
    changed[:, 6:] += 1.0
    a, b = conv(patches), conv(changed)
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6], b[:, 6])


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_temporal_embedding_varies_with_time(pooling):
    attrs = ["month", "day", "weekday", "hour"]
    temporal = TemporalEmbedding(attrs, d_model=16, patch_len=8, stride=4, pooling=pooling)
    marks = torch.stack([torch.randint(0, CALENDAR_SIZES[a], (2, 40)) for a in attrs], dim=-1)
    later = marks.clone()
    later[..., 3] = (later[..., 3] + 5) % 24  # same window, other hours
    emb, emb_later = temporal(marks), temporal(later)
    assert emb.shape == (2, num_patches(40, 8, 4), 16)
    assert (emb - emb_later).abs().amax(-1).min() > 0  # every patch differs


def test_temporal_first_pooling_uses_the_patch_first_timestamp():
    temporal = TemporalEmbedding(["hour"], d_model=4, patch_len=8, stride=4, pooling="first")
    hours = torch.arange(40).remainder(24).view(1, 40, 1)
    emb = temporal(hours)
    assert torch.equal(emb[0, 2], temporal.tables["hour"].weight[8])


def test_encoder_output_differs_for_windows_that_differ_only_in_timestamps():
    torch.manual_seed(0)
    enc = PatchEncoder(Patching(48, 8, 4), 16, CalendarSpec(("weekday", "hour"), zero_init=False)).eval()
    z = torch.randn(1, 48)
    marks = torch.stack([torch.zeros(1, 48, dtype=torch.long), torch.arange(48).view(1, 48) % 24], -1)
    shifted = marks.clone()
    shifted[..., 0] = 3
    assert not torch.allclose(enc(z, marks), enc(z, shifted))


def test_zero_initialized_calendar_tables_learn_only_the_values_training_sees():
    """A calendar value never seen in training (a month outside a few-shot split) adds nothing at test time,
    while the values training indexes get gradients from the first step."""
    torch.manual_seed(0)
    enc = PatchEncoder(Patching(48, 8, 4), 16, CalendarSpec(("month", "hour"))).train()
    enc.dropout.p = 0.0
    z = torch.randn(2, 48)
    seen = torch.stack([torch.full((2, 48), 7), torch.arange(48).expand(2, 48) % 24], -1)
    unseen = seen.clone()
    unseen[..., 0] = 11
    assert torch.equal(enc(z, seen), enc(z, unseen))  # zero tables: no effect yet
    enc(z, seen).square().sum().backward()
    grad = enc.temporal.tables["month"].weight.grad
    assert grad[7].abs().sum() > 0 and grad[11].abs().sum() == 0


def test_unknown_calendar_attribute_and_wrong_width_are_refused():
    with pytest.raises(ValueError, match="unknown calendar attribute"):
        TemporalEmbedding(["week"], 8, 8, 4)
    temporal = TemporalEmbedding(["hour"], 8, 8, 4)
    with pytest.raises(ValueError, match="calendar columns"):
        temporal(torch.zeros(1, 40, 2, dtype=torch.long))


def test_calendar_sizes_equal_the_data_side():
    """The model keeps its own copy (no data import in model code); this guards that they agree."""
    calendar = pytest.importorskip("llm4ts_scale.data.calendar")
    assert calendar.CALENDAR_SIZES == CALENDAR_SIZES
