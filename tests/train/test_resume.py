"""Reliability: SIGKILL anywhere and resume exactly; corrupted checkpoints; full disk; world-size changes."""

from __future__ import annotations

import json

import pytest
from backbones import tiny_llama
from launching import child_env, launch_train, tiny_run_overrides

pytestmark = pytest.mark.slow

SMALL = {"train.limit_train_batches": 5, "train.checkpoint_every_steps": 2, "data.batch_size": 32,
         "stages.align.epochs": 2, "stages.lp.epochs": 2, "stages.ft.epochs": 2}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), layers=2, hidden=32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, backbone):
    """The uninterrupted run every resumed run must match."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = launch_train(tiny_run_overrides(backbone, run_dir, **SMALL), ds="zero2", processes=1)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())["test"]


def _attempt(backbone, run_dir, ds="zero2", processes=1, **env):
    return launch_train(tiny_run_overrides(backbone, run_dir, **SMALL), ds=ds, processes=processes,
                        env=child_env(**env))


def test_sigkill_anywhere_then_resume_gives_the_same_test_metrics(tmp_path, backbone, reference):
    run_dir = tmp_path / "run"
    # mid-epoch of each stage, inside validation, half-way through a checkpoint write, during the test pass
    for kill_at in ("align.step@3", "eval@2", "lp.step@4", "checkpoint@2", "ft.step@7", "test@3"):
        result = _attempt(backbone, run_dir, LLM4TS_KILL_AT=kill_at)
        assert result.returncode == -9, (kill_at, result.returncode, result.stderr[-3000:])
    result = _attempt(backbone, run_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resuming from" in result.stdout or "already finished" not in result.stdout
    resumed = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert resumed["samples"] == reference["samples"]
    assert resumed["mse"] == pytest.approx(reference["mse"], rel=1e-5)
    assert resumed["mae"] == pytest.approx(reference["mae"], rel=1e-5)


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, backbone, reference):
    run_dir = tmp_path / "run"
    result = _attempt(backbone, run_dir, LLM4TS_KILL_AT="lp.step@5")  # after lp checkpoints at steps 2 and 4
    assert result.returncode == -9
    checkpoints = sorted((run_dir / "lp" / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 2
    victim = max((p for p in checkpoints[-1].rglob("*") if p.is_file() and p.suffix in (".pt", ".safetensors", ".bin")),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = _attempt(backbone, run_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    warnings = [line for line in result.stderr.splitlines() if "is corrupted" in line]
    assert len(warnings) == 1 and str(victim) in warnings[0]
    assert f"resuming from {checkpoints[0].name}" in result.stdout
    resumed = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert resumed["mse"] == pytest.approx(reference["mse"], rel=1e-5)


def test_full_disk_during_checkpoint_keeps_the_previous_one_and_exits_2(tmp_path, backbone):
    run_dir = tmp_path / "run"
    result = _attempt(backbone, run_dir, LLM4TS_KILL_AT="align.step@3")
    assert result.returncode == -9
    ckpts = run_dir / "align" / "checkpoints"
    before = {p.name: p.stat().st_mtime_ns for p in ckpts.glob("step-*")}
    assert before
    result = _attempt(backbone, run_dir, LLM4TS_FAIL_WRITE="checkpoint")
    assert result.returncode == 2
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "Traceback" not in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in ckpts.glob("step-*")} == before
    assert not list(ckpts.glob(".tmp-*"))


def test_world_size_change_resumes_at_stage_boundary_and_refuses_mid_stage(tmp_path, backbone):
    run_dir = tmp_path / "run"
    # 2 processes: align finishes, killed in lp before its first checkpoint -> boundary resume with 1 process
    result = _attempt(backbone, run_dir, processes=2, LLM4TS_KILL_AT="lp.step@1")
    assert result.returncode != 0
    assert json.loads((run_dir / "run.json").read_text())["stages"]["align"]["status"] == "done"
    assert not list((run_dir / "lp").glob("checkpoints/step-*"))
    # now 1 process, killed mid-lp after a checkpoint; then 2 processes must refuse (exit 2, nothing deleted)
    result = _attempt(backbone, run_dir, processes=1, LLM4TS_KILL_AT="lp.step@3")
    assert result.returncode == -9
    saved = sorted(p.name for p in (run_dir / "lp" / "checkpoints").glob("step-*"))
    assert saved
    result = _attempt(backbone, run_dir, processes=2)
    assert result.returncode != 0
    assert "relaunch with 1 processes" in result.stderr
    assert sorted(p.name for p in (run_dir / "lp" / "checkpoints").glob("step-*")) == saved
    # the reverse: 1 process finishes lp and dies in ft before its first checkpoint; 2 processes take over
    result = _attempt(backbone, run_dir, processes=1, LLM4TS_KILL_AT="ft.step@1")
    assert result.returncode == -9
    assert json.loads((run_dir / "run.json").read_text())["stages"]["lp"]["status"] == "done"
    result = _attempt(backbone, run_dir, processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((run_dir / "run.json").read_text())["test"]["status"] == "done"


def test_a_dead_rank_stops_the_others_quickly_and_the_run_resumes(tmp_path, backbone):
    import time

    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = launch_train(tiny_run_overrides(backbone, run_dir, **SMALL, **{"train.collective_timeout_s": 60}),
                          ds="zero2", processes=2, env=child_env(LLM4TS_KILL_AT="lp.step@3", LLM4TS_KILL_RANK="1"),
                          timeout=600)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    report = result.stdout + result.stderr
    assert "rank      : 1" in report or "rank: 1" in report, report[-3000:]  # the launcher names the dead rank
    assert "Signal 9" in report or "SIGKILL" in report
    lp_started = json.loads((run_dir / "run.json").read_text())["stages"]["lp"]["status"] == "running"
    assert lp_started and elapsed < 600
    # the survivors did not wait for a collective timeout: the whole launch ended soon after the kill
    align_time = json.loads((run_dir / "run.json").read_text())["stages"]["align"]["wall_time_s"]
    assert elapsed < align_time + 180
    result = launch_train(tiny_run_overrides(backbone, run_dir, **SMALL, **{"train.collective_timeout_s": 60}),
                          ds="zero2", processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[lp] resuming from" in result.stdout


# fp32: on a CPU with AVX512-BF16 `auto` picks bf16, where 2 ranks and the 1-process evaluate score the windows in
# batches of other shapes and bf16 kernels round by shape (2e-4 relative apart, measured); the exactness asked here is
# resume's and the export's, not bf16's
ZERO3 = {**SMALL, "stages.align.epochs": 1, "stages.lp.epochs": 1, "train.mixed_precision": "no"}


def test_zero3_two_processes_killed_in_ft_resume_to_the_same_test_metrics_and_export(tmp_path, backbone):
    """Under ZeRO-3 every rank checkpoints its own shards; a SIGKILL mid-FT resumes to the uninterrupted run's test
    metrics, and the export (full tensors, gathered) scores the same in a fresh one-process `evaluate`."""
    from launching import cli

    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    result = launch_train(tiny_run_overrides(backbone, reference_dir, **ZERO3), ds="zero3", processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    result = launch_train(tiny_run_overrides(backbone, run_dir, **ZERO3), ds="zero3", processes=2,
                          env=child_env(LLM4TS_KILL_AT="ft.step@8"))  # epoch 2, after the checkpoint at its step 2
    assert result.returncode != 0
    assert json.loads((run_dir / "run.json").read_text())["stages"]["ft"]["status"] == "running"
    shards = list((run_dir / "ft" / "checkpoints").rglob("*optim_states.pt"))
    assert len({p.name for p in shards}) == 2  # one optimizer shard per rank in the checkpoint kept
    result = launch_train(tiny_run_overrides(backbone, run_dir, **ZERO3), ds="zero3", processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[ft] resuming from" in result.stdout
    expected = json.loads((reference_dir / "metrics.json").read_text())["test"]
    resumed = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert resumed["samples"] == expected["samples"]
    assert resumed["mse"] == pytest.approx(expected["mse"], rel=1e-5)
    scored = cli(["evaluate", str(run_dir)])
    assert scored.returncode == 0, scored.stderr[-3000:]
    fresh = json.loads(scored.stdout.strip().splitlines()[-1])
    assert fresh["samples"] == expected["samples"]
    assert fresh["mse"] == pytest.approx(resumed["mse"], rel=1e-5)
    assert fresh["mae"] == pytest.approx(resumed["mae"], rel=1e-5)
