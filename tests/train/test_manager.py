"""llm4ts_scale/train/manager.py in-process: a finished run is not trained again (its test metrics come
back from run.json), and the closing comparison scores the floors on the same test windows."""

from __future__ import annotations

import json
import math

import pytest

from llm4ts_scale.core.config import config_from_dict
from llm4ts_scale.data.sources import open_store
from llm4ts_scale.train.manager import compare_with_baselines, train


def _config(run_dir):
    return config_from_dict(json.loads((run_dir / "run.json").read_text())["config"])


def test_a_finished_run_returns_its_metrics_without_training(ili_run_dir, capsys):
    from accelerate.state import AcceleratorState, GradientState

    before = (ili_run_dir / "run.json").read_text()
    try:
        outcome = train(_config(ili_run_dir))
    finally:  # the in-process Accelerator must not leak into other tests
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert outcome.test == json.loads(before)["test"]["metrics"]
    assert outcome.val == json.loads(before)["stages"]["ft"]["val"] and outcome.run_dir == ili_run_dir
    assert "already finished" in capsys.readouterr().out
    assert (ili_run_dir / "run.json").read_text() == before


def test_the_floors_are_scored_on_the_runs_test_windows(ili_run_dir):
    config = _config(ili_run_dir)
    d = config.data
    floors = compare_with_baselines(config, open_store(d.path, split=d.split))
    recorded = json.loads((ili_run_dir / "run.json").read_text())["test"]
    assert set(floors) == {"naive", "dlinear", "patchtst", "rlinear"}
    assert all(f["samples"] == recorded["metrics"]["samples"] for f in floors.values())
    assert all(math.isfinite(f["mse"]) for f in floors.values())
    assert floors["rlinear"]["mse"] == pytest.approx(recorded["baselines"]["rlinear"]["mse"], rel=1e-9)
    # the trained floors are deterministic for the run's seed: the same figures as the run recorded
    for name in ("dlinear", "patchtst"):
        assert floors[name]["mse"] == pytest.approx(recorded["baselines"][name]["mse"], abs=1e-6)
