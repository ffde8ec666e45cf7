"""Shared fixtures. Real data lives next to the repo in ../shared/data (override: LLM4TS_DATA_PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
# Tests hand the library dataset names (data.path: ETTh1) too: with nothing exported, the names resolve to the data
# next to the repository, so the README's test command passes in a fresh shell.
if not os.environ.get("LLM4TS_DATA_PATH") and DEFAULT_DATA_DIR.is_dir():
    os.environ["LLM4TS_DATA_PATH"] = str(DEFAULT_DATA_DIR)


def find_data_file(name: str) -> Path:
    """`name` in the first LLM4TS_DATA_PATH entry holding it, else in ../shared/data; fails loudly if absent."""
    dirs = [Path(p).expanduser().resolve() for p in os.environ.get("LLM4TS_DATA_PATH", "").split(os.pathsep) if p]
    dirs += [DEFAULT_DATA_DIR]
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    pytest.fail(f"test data {name} not found in {[str(d) for d in dirs]}; set LLM4TS_DATA_PATH to its folder")


@pytest.fixture(scope="session")
def etth1_csv() -> Path:
    return find_data_file("ETTh1.csv")


@pytest.fixture(scope="session")
def ili_csv() -> Path:
    return find_data_file("national_illness.csv")


@pytest.fixture(scope="session")
def etth1_store(tmp_path_factory, etth1_csv):
    """ETTh1 prepared once per session (ett-hourly split)."""
    from llm4ts_scale.data.prepare import prepare

    return prepare(etth1_csv, tmp_path_factory.mktemp("stores") / "ETTh1")


@pytest.fixture(scope="session")
def ili_store(tmp_path_factory, ili_csv):
    """national_illness prepared once per session (ratio split, weekly)."""
    from llm4ts_scale.data.prepare import prepare

    return prepare(ili_csv, tmp_path_factory.mktemp("stores") / "ILI")


ILI_L, ILI_H = 48, 24


@pytest.fixture(scope="session")
def ili_run_dir(tmp_path_factory):
    """A finished tiny run on ILI (966 weekly rows keep every evaluation pass to ~1,200 windows),
    shared by the report and predict tests."""
    from backbones import tiny_llama
    from launching import data_dir, launch_train, tiny_run_overrides

    root = tmp_path_factory.mktemp("ili-run")
    backbone = tiny_llama(root / "backbone", layers=2, hidden=32)
    run = root / "run"
    overrides = tiny_run_overrides(backbone, run, **{
        "data.path": data_dir() / "national_illness.csv", "data.seq_len": ILI_L, "data.pred_len": ILI_H,
        "data.few_shot_percent": 100, "train.compare_baselines": True, "train.limit_train_batches": 2,
        "train.log_with": "none", "stages.align.epochs": 1,
        "train.mixed_precision": "no",  # fp32 on every machine: batched and single forecasts then agree to 1e-6
        "stages.lp.epochs": 2, "stages.ft.epochs": 1})
    proc = launch_train(overrides, ds=None, processes=1, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return run
