"""Alignment on a corpus (llm4ts_scale/data/corpus.py, data/synthetic.py, train/aligned.py): weights give the
proportions, every window streams once per epoch at weight 1, no validation or test row of the target gets in,
synthetic series are deterministic, and an aligned backbone restarts LP bit for bit, or is refused."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from backbones import tiny_llama
from launching import child_env, cli, launch_train, tiny_run_overrides

from llm4ts_scale.core.weights import load_weights
from llm4ts_scale.data.corpus import corpus_loader, corpus_rank_samples, open_corpus
from llm4ts_scale.data.synthetic import SyntheticStore, kernelsynth_series
from llm4ts_scale.data.windows import Shuffle, WindowSpec

L, S = 96, 8
SYNTH = {"path": "synthetic:kernelsynth", "series": 30, "length": 400}


def _ids(sources, world=1, rank=0, epoch=0, workers=0):
    """(source, channel, start) of every window a rank streams in one epoch."""
    offsets = np.cumsum([0] + [s.store.n_channels for s in sources])
    out = []
    for batch in corpus_loader(sources, WindowSpec("train", L, S), 256, n_attrs=4, shuffle=Shuffle(seed=7, epoch=epoch),
                               rank=rank, world_size=world, num_workers=workers):
        for channel, start in zip(batch["channel"].tolist(), batch["start"].tolist()):
            source = int(np.searchsorted(offsets, channel, side="right") - 1)
            out.append((source, channel - int(offsets[source]), start))
    return out


def test_every_window_streams_once_per_epoch_at_weight_one_across_ranks(etth1_store):
    sources = open_corpus(["ETTh1", "national_illness", SYNTH], etth1_store, 10, seed=3)
    assert [s.is_target for s in sources] == [True, False, False]
    expected = sum(s.store.num_samples("train", L, S, s.few_shot_percent) for s in sources)
    ranks = [_ids(sources, world=2, rank=r) for r in range(2)]
    assert [len(r) for r in ranks] == [corpus_rank_samples(sources, L, S, r, 2) for r in range(2)]
    everything = ranks[0] + ranks[1]
    assert len(everything) == len(set(everything)) == expected
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(_ids(sources, workers=2)) == sorted(everything)  # DataLoader workers split shards too


def test_weights_set_the_proportions_and_fractional_weights_vary_by_epoch(etth1_store):
    sources = open_corpus([{"path": "ETTh1", "weight": 2}, {"path": "national_illness", "weight": 0.5},
                           {**SYNTH, "weight": 0.25}], etth1_store, 10, seed=3)
    sizes = [s.store.num_samples("train", L, S, s.few_shot_percent) for s in sources]
    epochs = [_ids(sources, epoch=e) for e in (0, 1)]
    for ids in epochs:
        counts = collections.Counter(source for source, _, _ in ids)
        assert [counts[i] for i in range(3)] == [2 * sizes[0], round(0.5 * sizes[1]), round(0.25 * sizes[2])]
        assert max(collections.Counter(i for i in ids if i[0] == 0).values()) == 2  # weight 2: every window twice
    ili = [set(i for i in ids if i[0] == 1) for ids in epochs]
    assert ili[0] != ili[1] and len(ili[0]) == len(ili[1])  # another half of ILI each epoch, of the same size


def test_no_validation_or_test_row_of_the_target_reaches_alignment(etth1_store, ili_store):
    sources = open_corpus(["ETTh1", "national_illness"], etth1_store, 10, seed=3)
    train_end = etth1_store.split_range("train", L, 10)[1]
    ili_end = ili_store.borders["train"][1]
    for source, _, start in _ids(sources):
        end = start + L + S  # the window's last row + 1
        assert end <= (train_end if source == 0 else ili_end)
    assert train_end < etth1_store.borders["train"][1]  # few-shot: well before the full train border


def test_synthetic_series_are_deterministic_per_seed_finite_and_not_constant():
    periods = (24, 168)
    a, b = kernelsynth_series(1, 5, 512, periods), kernelsynth_series(1, 5, 512, periods)
    assert np.array_equal(a, b)
    assert not np.allclose(a, kernelsynth_series(2, 5, 512, periods))
    assert not np.allclose(a, kernelsynth_series(1, 6, 512, periods))
    store = SyntheticStore(series=20, length=300, seed=4)
    windows = np.stack([store.read_channel(w, w + L + S, c) for c in range(20) for w in range(0, 300 - L - S, 37)])
    assert np.isfinite(windows).all() and (windows.std(axis=1) > 1e-3).all()
    assert SyntheticStore(series=20, length=300, seed=4).fingerprint == store.fingerprint
    assert SyntheticStore(series=20, length=300, seed=5).fingerprint != store.fingerprint


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("corpus-bb") / "llama", layers=2, hidden=32)


CORPUS = 'stages.align.data=[ETTh1, national_illness, {path: "synthetic:kernelsynth", weight: 0.02, series: 60, length: 600}]'


def _overrides(backbone, run_dir, **over):
    values = {"stages.align.epochs": 1, "stages.ft.epochs": 0, "stages.lp.solver": "exact", "stages.lp.epochs": 1,
              "model.head": "flatten+linear", "train.test": False, "model.quantize": "none", "train.log_with": "none",
              "data.few_shot_percent": 10, "train.mixed_precision": "no", "train.checkpoint_every_steps": 3, **over}
    return tiny_run_overrides(backbone, run_dir, **values)


@pytest.fixture(scope="module")
def aligned_run(backbone, tmp_path_factory):
    """`llm4ts-scale align` on the corpus, then `train` with the same config: it continues at LP."""
    run_dir = tmp_path_factory.mktemp("corpus-run") / "aligned"
    proc = cli(["align", *_overrides(backbone, run_dir), CORPUS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["stages"]["align"]["status"] == "done" and run["stages"]["lp"]["status"] == "pending"
    assert (run_dir / "align" / "export" / "model.safetensors").is_file()
    proc = launch_train([*_overrides(backbone, run_dir), CORPUS], ds=None, processes=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_aligned_backbone_restarts_lp_bit_for_bit_and_mismatches_are_refused(backbone, aligned_run, tmp_path):
    run = json.loads((aligned_run / "run.json").read_text())
    corpus = run["stages"]["align"]["corpus"]
    assert [c["source"] for c in corpus] == ["ETTh1", "national_illness", "synthetic:kernelsynth"]
    assert corpus[0]["target"] and corpus[0]["few_shot_percent"] == 10 and run["stages"]["lp"]["status"] == "done"
    second = launch_train(_overrides(backbone, tmp_path / "from", **{"model.aligned_from": aligned_run}),
                          ds=None, processes=1)
    assert second.returncode == 0, second.stderr[-3000:]
    a = load_weights(aligned_run / "lp" / "weights.safetensors")
    b = load_weights(tmp_path / "from" / "lp" / "weights.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "align" not in json.loads((tmp_path / "from" / "run.json").read_text())["stages"]
    for field, value in (("model.lora.r", 8), ("data.stride", 4), ("model.layers", 1)):
        bad = launch_train(_overrides(backbone, tmp_path / f"bad-{value}",
                                      **{"model.aligned_from": aligned_run, field: value}), ds=None, processes=1)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and field in bad.stderr, bad.stderr[-500:]
        assert not (tmp_path / f"bad-{value}").exists()
    missing = launch_train(_overrides(backbone, tmp_path / "none", **{"model.aligned_from": tmp_path}), ds=None,
                           processes=1)
    assert missing.returncode == 2 and "no aligned backbone" in missing.stderr
    other_horizon = launch_train(_overrides(backbone, tmp_path / "h48", **{"model.aligned_from": aligned_run,
                                                                         "data.pred_len": 48}), ds=None, processes=1)
    assert other_horizon.returncode == 0, other_horizon.stderr[-3000:]
    c = load_weights(tmp_path / "h48" / "lp" / "weights.safetensors")
    assert c["head.linear.bias"].shape == (48,)
    assert all(torch.equal(a[k], c[k]) for k in a if not k.startswith("head."))  # the aligned backbone itself


def test_sigkill_during_corpus_alignment_resumes_to_the_same_weights(backbone, aligned_run, tmp_path):
    """Killed mid-epoch of the corpus alignment, resumed: the weights of an uninterrupted run (aligned_run)."""
    killed = launch_train([*_overrides(backbone, tmp_path / "killed"), CORPUS], ds=None, processes=1,
                          env=child_env(LLM4TS_KILL_AT="align.step@5"))
    assert killed.returncode != 0
    resumed = launch_train([*_overrides(backbone, tmp_path / "killed"), CORPUS], ds=None, processes=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    for stage in ("align", "lp"):
        a = load_weights(aligned_run / stage / "weights.safetensors")
        b = load_weights(tmp_path / "killed" / stage / "weights.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), stage


def test_two_process_zero2_alignment_over_three_sources(backbone, tmp_path):
    proc = launch_train([*_overrides(backbone, tmp_path / "run"), CORPUS], ds="zero2", processes=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["world_size"] == 2
    (count0, sum0), (count1, sum1) = run["stages"]["align"]["history"][0]["rank_windows"]
    assert count0 == count1 > 0 and sum0 != sum1  # lockstep, different windows on each rank
    assert sum(c["windows_per_epoch"] for c in run["stages"]["align"]["corpus"]) >= count0 + count1
