"""Run the real entry points in subprocesses: `accelerate launch` with 2 processes over gloo, or the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_LAUNCH_CONFIG = REPO / "launch" / "accelerate_cpu.yaml"


def data_dir() -> Path:
    """The first LLM4TS_DATA_PATH entry (absolute: the README sets a relative one), else ../shared/data."""
    env = os.environ.get("LLM4TS_DATA_PATH")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser().resolve()
    return REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra) -> dict:
    env = dict(os.environ)
    paths = [p for p in env.get("LLM4TS_DATA_PATH", "").split(os.pathsep) if p]
    # absolute, so that a child started in another directory finds the same data
    env["LLM4TS_DATA_PATH"] = os.pathsep.join(str(Path(p).expanduser().resolve()) for p in paths) or str(data_dir())
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list[str], timeout: float = 900, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=timeout)


def launch_train(overrides: list[str], *, ds: str | None = "zero2", processes: int = 2, extra_args: list[str] = (),
                 timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file launch/accelerate_cpu.yaml launch/train.py --ds ds_configs/<ds>.json ...`;
    one process runs `python launch/train.py ...` directly."""
    if processes == 1:
        cmd = [sys.executable, str(REPO / "launch" / "train.py")]
        if ds:
            cmd += ["--ds", str(REPO / "ds_configs" / f"{ds}.json")]
        return run(cmd + list(extra_args) + list(overrides), timeout=timeout, env=env)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_LAUNCH_CONFIG),
           "--num_processes", str(processes), "--main_process_port", str(free_port()),
           str(REPO / "launch" / "train.py")]
    if ds:
        cmd += ["--ds", str(REPO / "ds_configs" / f"{ds}.json")]
    return run(cmd + list(extra_args) + list(overrides), timeout=timeout, env=env)


def cli(args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "llm4ts_scale.cli", *args], timeout=timeout, env=env)


def tiny_run_overrides(backbone: Path, run_dir: Path, **over) -> list[str]:
    """Small but real: ETTh1, L=96, H=24, a tiny 4-bit LoRA backbone, few batches per epoch."""
    values = {
        "run_dir": run_dir, "data.path": data_dir() / "ETTh1.csv", "data.seq_len": 96, "data.pred_len": 24,
        "data.batch_size": 64, "data.eval_batch_size": 1024, "model.backbone": backbone, "model.layers": 2,
        "model.quantize": "nf4", "model.dequantize_frozen": "off", "model.lora.r": 4, "model.dropout": 0.0,
        "train.limit_train_batches": 10, "train.compare_baselines": False,
        "train.log_with": "tensorboard", "train.checkpoint_every_steps": 4,
        "stages.align.epochs": 2, "stages.align.lr": 3e-3, "stages.lp.epochs": 2, "stages.lp.lr": 3e-3,
        "stages.lp.solver": "sgd",  # these runs test the epoch loop (kill points, resume, ranks); exact LP: test_exact_probe.py
        "stages.ft.epochs": 2, "stages.ft.lr": 3e-3,
    }
    values.update(over)
    return [f"{k}={v}" for k, v in values.items()]


def ett_test_samples(seq_len: int, pred_len: int, channels: int = 7) -> int:
    """docs/ARCHITECTURE.md section 4: ETTh test rows are [11520 - L, 14400); windows = rows - L - H + 1 per channel."""
    rows = 14400 - (11520 - seq_len)
    return channels * (rows - seq_len - pred_len + 1)
