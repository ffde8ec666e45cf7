"""experiments/run.py: cells as data, real runs in subprocesses, resumable, tables rebuilt from the kept files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from launching import REPO, child_env, data_dir, tiny_run_overrides

RUNNER = REPO / "experiments" / "run.py"
PUBLISHED = {"accuracy": ["table.md"], "sweep": ["table.md", "corpus.md"], "scaling": ["table.md"],
             "ablation": ["table.md"]}


def runner(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("name", PUBLISHED)
def test_report_only_rebuilds_the_committed_tables(name, tmp_path):
    results = tmp_path / name
    shutil.copytree(REPO / "results" / name, results)
    for table in PUBLISHED[name]:
        (results / table).unlink()
    proc = runner(f"experiments/{name}.yaml", "--report-only", "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for table in PUBLISHED[name]:
        assert (results / table).read_text() == (REPO / "results" / name / table).read_text(), table


def _write(path, spec: dict):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("fault, named", [({"cells": {"a": {"aligned_from": "nope"}}}, "nope"),
                                          ({"cells": {"a": {"group": "ghost"}}}, "ghost"),
                                          ({"cells": {"a": {"kind": "sweep"}}}, "sweep"),
                                          ({"cells": {"a": {"overrides": []}}}, "overrides"),
                                          ({"table": "keep_small_files"}, "keep_small_files")])
def test_a_bad_experiment_file_is_one_line_exit_2_and_runs_nothing(tmp_path, fault, named):
    bad = _write(tmp_path / "bad.yaml", {"results": str(tmp_path / "results"), "runs": str(tmp_path / "runs"),
                                         "table": "ablation", "cells": {"a": {}}, **fault})
    proc = runner(str(bad))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and named in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_unknown_cell_is_refused():
    proc = runner("experiments/ablation.yaml", "--only", "no-such-cell")
    assert proc.returncode == 2 and "no-such-cell" in proc.stderr


def test_cells_run_for_real_wait_for_their_source_and_resume(tmp_path):
    """Two real training runs, the second starting at LP from the first's aligned backbone; a second call finds
    both finished and runs nothing; the table comes from the kept files."""
    from backbones import tiny_llama

    backbone = tiny_llama(tmp_path / "backbone", layers=2, hidden=32)
    common = [o for o in tiny_run_overrides(backbone, tmp_path / "unused", **{
        "data.path": data_dir() / "national_illness.csv", "data.seq_len": 48, "data.few_shot_percent": 100,
        "train.limit_train_batches": 2, "train.log_with": "none", "train.test": False, "stages.lp.epochs": 1,
        "stages.ft.epochs": 0}) if not o.startswith("run_dir=")]
    spec = _write(tmp_path / "exp.yaml", {
        "results": str(tmp_path / "results"), "runs": str(tmp_path / "runs"), "table": "ablation",
        "common": common, "tail": ["--restart"], "report": {"footer": "two cells"},
        "cells": {"aligned": {"args": ["stages.align.epochs=1"], "note": "aligns"},
                  "probe": {"args": ["stages.align.epochs=0"], "aligned_from": "aligned", "note": "starts from it"}}})
    proc = runner(str(spec), "--jobs", "2", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("$ ") == 2
    probe = json.loads((tmp_path / "results" / "probe" / "run.json").read_text())
    assert "align" not in probe["stages"] and "lp" in probe["stages"]
    assert f"model.aligned_from={tmp_path / 'runs' / 'aligned'}" in proc.stdout
    assert (tmp_path / "results" / "aligned" / "align_history.json").is_file()
    table = (tmp_path / "results" / "table.md").read_text()
    assert "(not run)" not in table and "| aligned | aligns |" in table and "| probe | starts from it |" in table

    again = runner(str(spec))
    assert again.returncode == 0 and "$ " not in again.stdout, again.stdout
    assert (tmp_path / "results" / "table.md").read_text() == table
