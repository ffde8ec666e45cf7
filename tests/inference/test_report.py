"""`llm4ts-scale report RUN_DIR` on a real (tiny) finished run: numbers, tables and images."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import ILI_H as H
from conftest import ILI_L as L
from launching import cli, data_dir
from PIL import Image

from llm4ts_scale.cli import main

DATA = "national_illness.csv"


@pytest.fixture(scope="module")
def run_dir(ili_run_dir):
    return ili_run_dir


def naive_step_mse(step: int) -> float:
    """Naive (last value) test MSE at one step, straight from the CSV (docs/ARCHITECTURE.md section 4: 70/10/20 borders,
    train-only population statistics, test rows start L before the border)."""
    values = pd.read_csv(data_dir() / DATA).iloc[:, 1:].to_numpy(np.float64)
    n = len(values)
    train = values[:int(n * 0.7)]
    z = (values - train.mean(0)) / train.std(0)
    test = z[n - int(n * 0.2) - L:]
    starts = np.arange(len(test) - L - H + 1)
    last, target = test[starts + L - 1], test[starts + L - 1 + step]
    return float(((target - last) ** 2).mean())


def image_ok(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_report_holds_the_run_numbers_and_valid_figures(run_dir):
    proc = cli(["report", str(run_dir)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())

    # the overall metrics, exactly as metrics.json holds them: one row per metric, one column per split
    assert {"mse", "mae", "samples"} <= set(metrics["test"])
    splits = ["test"] + [s for s in metrics if s != "test"]
    for key in metrics["test"]:
        cells = " | ".join(_cell(metrics[s][key]) if key in metrics[s] else "–" for s in splits)
        row = f"| {key} | {cells} |"
        assert row in text.splitlines(), row
    # config summary and per-stage facts
    for needle in (f"look-back L | {L}", f"horizon H | {H}", "quantize | nf4", "few-shot % | 100", DATA):
        assert needle in text, needle
    stage_rows = [line for line in text.splitlines() if re.match(r"\| (align|lp|ft) \|", line)]
    assert [row.split()[1] for row in stage_rows] == ["align", "lp", "ft"]  # training order
    for name, stage in run["stages"].items():
        row = next(line for line in stage_rows if line.startswith(f"| {name} |"))
        assert f"{stage['trainable_params']:,}" in row and f"{stage['wall_time_s']:.1f} s" in row, row
    assert len(run["stages"]["lp"]["history"]) == 2

    # per-step table at 1, H/4, H/2, 3H/4, H; the naive column matches an independent computation
    rows = {m.group(1): [float(v) for v in m.group(2, 3, 4, 5)] for m in re.finditer(
        r"^\| (\d+|all \d+ steps) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)}
    assert list(rows) == ["1", "6", "12", "18", "24", "all 24 steps"]
    for step in (1, 24):
        assert rows[str(step)][1] == pytest.approx(naive_step_mse(step), abs=1e-4)
    assert rows["1"][1] < rows["24"][1]  # naive error grows with the step
    # the re-evaluated export reproduces the run's test metrics on the same windows
    found = re.search(r"MSE ([\d.]+), MAE ([\d.]+) over (\d+) samples; metrics.json", text)
    assert found, text
    assert float(found.group(1)) == pytest.approx(metrics["test"]["mse"], rel=1e-4, abs=1e-5)
    assert float(found.group(2)) == pytest.approx(metrics["test"]["mae"], rel=1e-4, abs=1e-5)
    assert int(found.group(3)) == metrics["test"]["samples"]
    assert rows["all 24 steps"][0] == pytest.approx(metrics["test"]["mse"], abs=1e-4)

    for png in ("report_loss.png", "report_steps.png"):
        width, height = image_ok(run_dir / png)
        assert width > 600 and height > 250
        assert f"]({png})" in text
    # the calibration of the test intervals: a table per central interval and two figures
    assert f"| 80 % | 0.1 - 0.9 | {metrics['test']['intervals']['80']['coverage']:.4f} |" in text
    for png in ("report_coverage.png", "report_reliability.png"):
        image_ok(run_dir / png)
        assert f"]({png})" in text


def _cell(value) -> str:
    """How the report's metrics table writes a value: long lists (per-step coverage) are drawn instead."""
    return f"{len(value)} values (see the figures)" if isinstance(value, list) and len(value) > 12 else json.dumps(value)


def test_the_interval_figures_come_from_metrics_json_alone(tmp_path):
    """Coverage per step and the reliability diagram from a real interval scoring, no model needed."""
    import torch

    from llm4ts_scale.inference.report import intervals_section
    from llm4ts_scale.stats.conformal import ConformalTable
    from llm4ts_scale.stats.intervals import SplitRows, interval_metrics

    g = torch.Generator().manual_seed(0)
    n, h = 600, 16
    rows = SplitRows(torch.zeros(n, h), (1.5 * torch.randn(n, h, generator=g)).float(),
                     torch.ones(n, 1, dtype=torch.float64), torch.zeros(n, dtype=torch.int64), torch.arange(n))
    table = ConformalTable.from_residuals(torch.randn(300, h, generator=g, dtype=torch.float64), "adaptive")
    test = interval_metrics(rows, table, torch.ones(1))
    lines = intervals_section(test, tmp_path)
    text = "\n".join(lines)
    assert "Calibration `adaptive`" in text and "| 20 % | 0.4 - 0.6 |" in text
    for png in ("report_coverage.png", "report_reliability.png"):
        width, height = image_ok(tmp_path / png)
        assert width > 300 and height > 250 and f"]({png})" in text
    assert intervals_section({"coverage_80": 0.8}, tmp_path)[-1].startswith("metrics.json holds no calibration")
    assert not (tmp_path / "report_coverage.png").exists()  # an old figure would not match


def test_report_of_an_unfinished_run_and_of_a_non_run(run_dir, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    run = json.loads((run_dir / "run.json").read_text())
    run["stages"]["ft"] = {"status": "running"}
    run["test"] = {"status": "pending"}
    (partial / "run.json").write_text(json.dumps(run))
    assert main(["report", str(partial)]) == 0
    text = (partial / "report.md").read_text()
    assert "No exported model" in text and "No metrics.json" in text and "| ft | running |" in text
    image_ok(partial / "report_loss.png")
    assert not (partial / "report_steps.png").exists()

    shutil.rmtree(partial)
    partial.mkdir()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(partial)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and "no run.json" in err and len(err.splitlines()) == 1
    assert list(partial.iterdir()) == []


def test_training_scores_naive_dlinear_patchtst_and_rlinear_on_the_same_test_windows(run_dir):
    """After the test pass, a run scores the floors it must clear, on the same windows, into run.json."""
    state = json.loads((run_dir / "run.json").read_text())
    model = state["test"]["metrics"]
    baselines = state["test"]["baselines"]
    assert set(baselines) == {"naive", "dlinear", "patchtst", "rlinear"}
    for name in ("naive", "dlinear", "patchtst", "rlinear"):
        assert baselines[name]["samples"] == model["samples"] > 0
    assert baselines["rlinear"]["alpha"] > 0 and baselines["rlinear"]["val_mse"] > 0
    horizon_steps = np.arange(1, H + 1)
    naive_overall = np.mean([naive_step_mse(int(s)) for s in horizon_steps])
    assert baselines["naive"]["mse"] == pytest.approx(naive_overall, rel=1e-6)
    assert baselines["dlinear"]["best_epoch"] >= 1 and np.isfinite(baselines["dlinear"]["mse"])
    patchtst = baselines["patchtst"]
    assert 1 <= patchtst["best_epoch"] <= patchtst["epochs_run"] and patchtst["val_mse"] > 0
    assert patchtst["mse"] < baselines["naive"]["mse"]
