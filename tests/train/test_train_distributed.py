"""End to end: align -> lp -> ft on ETTh1 with 2 processes over gloo under DeepSpeed ZeRO-2 and ZeRO-3."""

from __future__ import annotations

import json
import math

import pytest
from backbones import tiny_llama
from launching import cli, ett_test_samples, launch_train, tiny_run_overrides
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), layers=3, hidden=32)


def _finished_run(tmp_path_factory, backbone, ds: str, **over):
    run_dir = tmp_path_factory.mktemp(f"run-{ds}") / "run"
    result = launch_train(tiny_run_overrides(backbone, run_dir, **over), ds=ds)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return run_dir, result


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory, backbone):
    return _finished_run(tmp_path_factory, backbone, "zero2")


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory, backbone):
    return _finished_run(tmp_path_factory, backbone, "zero3")


def _check_run(run_dir, stdout: str):
    state = json.loads((run_dir / "run.json").read_text())
    assert state["world_size"] == 2
    assert "2 process(es)" in stdout and stdout.count("2 process(es)") == 1  # logs come from rank 0 only
    for stage in ("align", "lp", "ft"):
        info = state["stages"][stage]
        assert info["status"] == "done"
        history = info["history"]
        assert history[-1]["train_loss"] < history[0]["train_loss"], (stage, history)
        (count0, sum0), (count1, sum1) = history[0]["rank_windows"]
        assert count0 == count1 == 10 * 64  # both ranks really trained, in lockstep
        assert sum0 != sum1  # on different windows
        assert (run_dir / stage / "weights.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["samples"] == ett_test_samples(96, 24)
    assert math.isfinite(metrics["test"]["mse"]) and metrics["test"]["mse"] > 0
    assert state["test"]["status"] == "done"
    export = run_dir / "export"
    assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    assert (export / "adapter" / "adapter_config.json").is_file()
    assert list((run_dir / "logs").rglob("events.out.tfevents*")) or list(run_dir.rglob("events.out.tfevents*"))
    return metrics


def test_zero2_two_processes_run_all_stages(zero2_run):
    run_dir, result = zero2_run
    _check_run(run_dir, result.stdout)


def test_zero3_two_processes_run_all_stages(zero3_run):
    run_dir, result = zero3_run
    metrics = _check_run(run_dir, result.stdout)
    # ZeRO-3 shards every parameter; the consolidated files must hold full tensors
    weights = load_file(str(run_dir / "export" / "model.safetensors"))
    lora = {k: v for k, v in weights.items() if "lora_A" in k}
    assert lora and all(v.numel() == v.shape[0] * v.shape[1] and v.shape[0] == 4 for v in lora.values())
    assert metrics["test"]["samples"] == ett_test_samples(96, 24)


def test_export_reproduces_test_mse_in_fresh_process(zero2_run):
    run_dir, _ = zero2_run
    result = cli(["evaluate", str(run_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    expected = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert scored["samples"] == expected["samples"]
    assert scored["mse"] == pytest.approx(expected["mse"], rel=1e-5)
    assert scored["mae"] == pytest.approx(expected["mae"], rel=1e-5)


@pytest.fixture(scope="module")
def lp_only_one_process(tmp_path_factory, backbone):
    """LP alone, one process, the same LP settings and optimizer-step count as the 2-process runs."""
    lp_only = tmp_path_factory.mktemp("lp-only") / "run"
    result = launch_train(tiny_run_overrides(backbone, lp_only, **{"stages.align.epochs": 0, "stages.ft.epochs": 0}),
                          ds=None, processes=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return lp_only


def test_lr_schedule_does_not_depend_on_process_count(zero2_run, lp_only_one_process):
    """Defect: Accelerate stepped a prepared scheduler once per process, so with 2 processes the cosine
    reached 0 at mid-stage and climbed back. Now the learning rate each optimizer step used (read from
    the optimizer DeepSpeed steps) is the same sequence with 2 processes as with 1."""
    two = json.loads((zero2_run[0] / "run.json").read_text())["stages"]["lp"]["history"]
    one = json.loads((lp_only_one_process / "run.json").read_text())["stages"]["lp"]["history"]
    lrs_two = [lr for epoch in two for lr in epoch["lrs"]]
    lrs_one = [lr for epoch in one for lr in epoch["lrs"]]
    assert len(lrs_two) == len(lrs_one) == 2 * 10
    assert lrs_two == pytest.approx(lrs_one, rel=1e-6)
    peak = max(lrs_one)
    assert lrs_one[9] > 0.4 * peak  # mid-stage: half-way down the cosine, not at zero
    assert lrs_one[-1] < 0.05 * peak and lrs_one[-1] == min(lrs_one[2:])  # the end: the lowest, not back up


def test_alignment_hands_off_to_linear_probing(zero2_run, lp_only_one_process):
    run_dir, _ = zero2_run
    lp_only = lp_only_one_process
    aligned = load_file(str(run_dir / "align" / "weights.safetensors"))
    lp_after_align = load_file(str(run_dir / "lp" / "weights.safetensors"))
    lp_from_scratch = load_file(str(lp_only / "lp" / "weights.safetensors"))
    assert not any(k.startswith("align_head.") for k in lp_after_align)  # dropped after alignment
    carried = [k for k in lp_after_align if not k.startswith(("head.", "revin."))]
    assert carried and any("lora_" in k for k in carried)
    for key in carried:  # LP trains only the head: the rest is exactly what alignment left
        assert (lp_after_align[key] == aligned[key]).all(), key
    assert any(not (lp_after_align[k] == lp_from_scratch[k]).all() for k in carried)


def test_rerun_of_finished_run_does_no_training(zero2_run, backbone):
    run_dir, _ = zero2_run
    before = (run_dir / "ft" / "weights.safetensors").stat().st_mtime_ns
    result = launch_train(tiny_run_overrides(backbone, run_dir), ds="zero2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished" in result.stdout
    assert (run_dir / "ft" / "weights.safetensors").stat().st_mtime_ns == before


def test_changed_config_on_existing_run_dir_exits_2(zero2_run, backbone):
    run_dir, _ = zero2_run
    result = launch_train(tiny_run_overrides(backbone, run_dir, **{"stages.ft.lr": 5e-4}), ds=None, processes=1)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert lines and "--restart" in lines[-1] and "Traceback" not in result.stderr


@pytest.mark.parametrize("ds", ["zero2", "zero3"])
def test_two_machines_simulated_on_this_host(tmp_path, backbone, ds):
    """Two `accelerate launch` commands, one process each, rendezvous on 127.0.0.1 (static, like 2 nodes); the
    README's launch table pairs several machines with zero3.json too."""
    import subprocess
    import sys

    from launching import CPU_LAUNCH_CONFIG, REPO, child_env, free_port

    run_dir = tmp_path / "two-nodes"
    port = free_port()
    overrides = tiny_run_overrides(backbone, run_dir, **{"stages.align.epochs": 1, "stages.lp.epochs": 1,
                                                         "stages.ft.epochs": 1, "train.limit_train_batches": 3})
    procs = []
    for machine_rank in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_LAUNCH_CONFIG),
               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine_rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               str(REPO / "launch" / "train.py"), "--ds", str(REPO / "ds_configs" / f"{ds}.json"), *overrides]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["world_size"] == 2
    assert all(s["status"] == "done" for s in state["stages"].values())
    counts = state["stages"]["lp"]["history"][0]["rank_windows"]
    assert counts[0][0] == counts[1][0] == 3 * 64 and counts[0][1] != counts[1][1]
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["samples"] == ett_test_samples(96, 24)
