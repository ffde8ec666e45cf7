"""Fast unit tests of llm4ts_scale/train/: step counts, schedules, progress, run state, DeepSpeed config
filling, checkpoint verification, tunable-state loading, and gradient accumulation across epochs."""

from __future__ import annotations

import pytest
import torch
from backbones import tiny_llama

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json
from llm4ts_scale.core.run_state import RunState
from llm4ts_scale.core.stages import stage_spec
from llm4ts_scale.core.weights import load_tunable_state
from llm4ts_scale.train.accelerator import cpu_threads
from llm4ts_scale.train.checkpoints import MANIFEST, PROGRESS, _manifest, usable_checkpoint, verify
from llm4ts_scale.train.ds_config import fill_auto
from llm4ts_scale.train.sgd_stage import make_scheduler
from llm4ts_scale.train.stage import Progress, stage_horizon, steps_per_epoch


def cfg(*overrides):
    return load_config(None, ["data.seq_len=336", "data.pred_len=96", "data.few_shot_percent=10", *overrides])


# ------------------------------------------------------------------ steps per epoch


def test_alignment_windows_do_not_depend_on_the_horizon(etth1_store):
    """Defect: alignment windows were built with H, dropping up to 87 % of them at H=720. Windows of length
    L + stride: 823 per channel at ETTh1 10 %, L=336, for every H."""
    counts = set()
    for horizon in (96, 192, 336, 720):
        config = cfg(f"data.pred_len={horizon}", "data.batch_size=1")
        assert stage_horizon(config, stage_spec("align")) == 8
        counts.add(steps_per_epoch(config, etth1_store, 1, "align"))
    assert counts == {823 * 7}
    assert steps_per_epoch(cfg("data.batch_size=1"), etth1_store, 1, "ft") == 735 * 7  # forecasting: L + H


def test_steps_are_a_multiple_of_grad_accum_and_the_same_on_every_rank(etth1_store):
    config = cfg("data.batch_size=32", "train.grad_accum=3", "train.limit_train_batches=10")
    assert steps_per_epoch(config, etth1_store, 1, "ft") == 9
    two = steps_per_epoch(cfg("data.batch_size=32", "train.grad_accum=4"), etth1_store, 2, "ft")
    assert two % 4 == 0 and two == (5145 // 2 // 32) // 4 * 4
    with pytest.raises(UserError, match="grad_accum"):
        steps_per_epoch(cfg("data.batch_size=2000", "train.grad_accum=4"), etth1_store, 1, "ft")


# ------------------------------------------------------------------ schedules


def _lrs(schedule: str, epochs: int = 5, steps: int = 4, warmup: float = 0.0) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    stage = cfg(f"stages.ft.schedule={schedule}", f"stages.ft.warmup_ratio={warmup}").stages.ft
    sched = make_scheduler(opt, stage, epochs * steps, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_time_series_library_schedules():
    per_epoch = lambda lrs: [lrs[i] for i in range(0, len(lrs), 4)]  # noqa: E731
    assert per_epoch(_lrs("type1")) == pytest.approx([1, 1, 0.5, 0.25, 0.125])
    assert per_epoch(_lrs("type3")) == pytest.approx([1, 1, 1, 1, 0.9])
    assert per_epoch(_lrs("constant")) == pytest.approx([1] * 5)
    cosine = _lrs("cosine", warmup=0.1)
    assert cosine[0] == 0 and max(cosine) == pytest.approx(1.0) and cosine[-1] < 0.05


# ------------------------------------------------------------------ progress and run state


def test_progress_round_trips_and_ignores_unknown_keys():
    p = Progress(epoch=2, step=5, global_step=17, best_val=0.4, best_epoch=1, history=[{"epoch": 1}], lrs=[0.1])
    again = Progress.from_dict({**p.to_dict(), "windows": [3, 4]})  # a key an older version wrote
    assert again == p


def test_run_state_records_precision_and_refuses_another_config(tmp_path):
    config = cfg(f"run_dir={tmp_path / 'run'}", "stages.ft.epochs=2")  # all three stages (the default skips FT)
    state = RunState.new(config, "abc", 2, "bf16", "auto: the CPU has native bf16 (amx_bf16)")
    state.save()
    read = RunState.read(tmp_path / "run")
    assert read.data["precision"] == "bf16" and read.data["world_size"] == 2
    assert set(read.data["stages"]) == {"align", "lp", "ft"} and not read.finished
    read.check_matches(config, "abc")
    with pytest.raises(UserError, match="different config"):
        read.check_matches(cfg(f"run_dir={tmp_path / 'run'}", "stages.ft.epochs=2", "stages.ft.lr=1"), "abc")
    with pytest.raises(UserError, match="different data"):
        read.check_matches(config, "other")
    for name in read.data["stages"]:
        read.update_stage(name, status="done")
    read.data["test"]["status"] = "done"
    assert read.finished
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupted"):
        RunState.read(tmp_path / "bad")


# ------------------------------------------------------------------ DeepSpeed config


def test_fill_auto_resolves_only_auto_values():
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
              "gradient_clipping": 0.5, "bf16": {"enabled": "auto"},
              "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": "auto"}}}
    out = fill_auto(config, micro_batch=16, grad_accum=2, world_size=4, max_grad_norm=1.0, bf16=True, on_gpu=False)
    assert out["train_batch_size"] == 16 * 2 * 4 and out["train_micro_batch_size_per_gpu"] == 16
    assert out["gradient_clipping"] == 0.5  # explicit values win
    assert out["bf16"]["enabled"] is True and out["zero_optimization"]["offload_optimizer"]["pin_memory"] is False
    assert config["train_batch_size"] == "auto"  # the input is not modified


# ------------------------------------------------------------------ checkpoints


def _fake_checkpoint(root, name):
    path = root / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights" + name.encode())
    atomic_write_json(path / MANIFEST, _manifest(path))
    atomic_write_json(path / PROGRESS, {"epoch": 1})
    return path


def test_usable_checkpoint_skips_a_corrupted_one(tmp_path, capsys):
    older = _fake_checkpoint(tmp_path, "step-00000004")
    newer = _fake_checkpoint(tmp_path, "step-00000008")
    assert verify(newer) is None and usable_checkpoint(tmp_path) == newer
    (newer / "model.safetensors").write_bytes(b"bit rot")
    assert verify(newer).endswith("model.safetensors")
    assert usable_checkpoint(tmp_path) == older
    assert "corrupted" in capsys.readouterr().err
    (older / PROGRESS).unlink()
    with pytest.raises(UserError, match="every checkpoint"):
        usable_checkpoint(tmp_path)
    assert usable_checkpoint(tmp_path / "none") is None


def test_cpu_threads_undo_accelerates_one_thread_default_but_keep_a_users_choice(monkeypatch):
    cores = len(__import__("os").sched_getaffinity(0))
    for name in ("LLM4TS_CPU_THREADS", "OMP_NUM_THREADS", "ACCELERATE_DYNAMO_BACKEND", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cpu_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == 1  # set by the user (no launcher): kept
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    assert cpu_threads() == cores  # `accelerate launch`'s default: every core of this process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
    assert cpu_threads() == 1  # shared among the node's processes
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.setenv("LLM4TS_CPU_THREADS", "5")
    assert cpu_threads() == 5
    monkeypatch.setenv("LLM4TS_CPU_THREADS", "two")
    with pytest.raises(UserError, match="LLM4TS_CPU_THREADS"):
        cpu_threads()


# ------------------------------------------------------------------ tunable state


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from llm4ts_scale.model import build_model

    path = tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", layers=2, hidden=32)
    config = load_config(None, [f"model.backbone={path}", "model.layers=2", "model.quantize=none", "data.seq_len=64",
                                "data.pred_len=8"])
    return build_model(config, ["weekday", "hour"])


def test_load_tunable_state_refuses_foreign_weights(tiny_model):
    from llm4ts_scale.core.weights import collect_tunable_state

    state = collect_tunable_state(tiny_model)
    assert "head.proj.weight" in state and not any(".base_layer." in k or "q_proj.weight" == k for k in state)
    changed = {k: v + 1 for k, v in state.items()}
    load_tunable_state(tiny_model, changed)
    assert torch.equal(tiny_model.head.proj.weight.detach(), changed["head.proj.weight"])
    with pytest.raises(UserError, match="does not have"):
        load_tunable_state(tiny_model, {"nope.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="shape"):
        load_tunable_state(tiny_model, {"head.proj.weight": torch.zeros(2, 2)})


# ------------------------------------------------------------------ gradient accumulation across epochs


def test_an_epoch_leaves_no_stale_gradient_with_grad_accum(etth1_store, tmp_path):
    """Defect: with train.grad_accum > 1 the last partial accumulation window of an epoch carried its
    gradients into the next epoch (and stage). Now an epoch runs a multiple of grad_accum batches
    (10 available, 9 run with grad_accum=3), Accelerate's counter restarts every epoch, and nothing is
    left in .grad afterwards."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from llm4ts_scale.train.sgd_stage import SgdStage

    backbone = tiny_llama(tmp_path / "llama", layers=2, hidden=32)
    config = load_config(None, [f"model.backbone={backbone}", "model.layers=2", "model.quantize=none",
                                "data.seq_len=96", "data.pred_len=24", "data.batch_size=16", "train.grad_accum=3",
                                "train.limit_train_batches=10", "train.log_with=none", f"run_dir={tmp_path / 'run'}"])
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3)
    try:
        recipe = SgdStage(accelerator, config, etth1_store, "ft", None, "no")
        recipe.setup()
        assert recipe.steps == 9
        for epoch in range(2):
            accelerator.step = 2  # as if a previous epoch had stopped inside an accumulation window
            recipe.train_epoch()
            assert recipe.progress.step == 9 and len(recipe.progress.lrs) == 3 * (epoch + 1)
            assert all(p.grad is None or not p.grad.any() for p in recipe.model.parameters()), epoch
            recipe.progress.step = 0
            recipe.progress.epoch += 1
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
