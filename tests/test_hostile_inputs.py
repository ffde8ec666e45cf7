"""Hostile input to training, evaluation and prediction: exit 2, one `error:` line, no traceback,
nothing half-written. (Bad CSV/Parquet for `prepare` are in test_prepare_errors.py; random CSV
content is thrown at `prepare` by the property test at the end.)"""

from __future__ import annotations

import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launching import REPO, child_env, data_dir

ETTH1 = data_dir() / "ETTh1.csv"


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], cwd=tmp_path,
                          env=child_env(LLM4TS_CACHE=tmp_path / "cache"), capture_output=True, text=True, timeout=600)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", *args], cwd=tmp_path,
                          env=child_env(LLM4TS_CACHE=tmp_path / "cache"), capture_output=True, text=True, timeout=600)


def _refused(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-2000:]
    assert needle in errors[0], errors[0]


RUN = "run_dir=run"
TRAIN_CASES = {
    "unknown key": ([RUN, "data.foo=1"], "unknown config key 'data.foo'"),
    "unknown section": ([RUN, "optim.lr=1"], "unknown config key 'optim'"),
    "non-integer": ([RUN, "data.seq_len=abc"], "data.seq_len"),
    "negative horizon": ([RUN, "data.pred_len=-5"], "data.pred_len must be positive"),
    "not key=value": ([RUN, "data.seq_len"], "not key=value"),
    "empty key part": ([RUN, "data..seq_len=3"], "empty key"),
    "unknown quantization": ([RUN, "model.quantize=int3"], "model.quantize"),
    "stride beyond patch": ([RUN, "data.stride=32"], "data.stride"),
    "no stage": ([RUN, "stages.align.epochs=0", "stages.lp.epochs=0", "stages.ft.epochs=0"], "every stage"),
    "bad lora targets": ([RUN, "model.lora.targets=7"], "model.lora.targets"),
    "section given a scalar": ([RUN, "model=3"], "must be a mapping"),
    "missing config file": ([RUN, "--config", "nope.yaml"], "does not exist"),
    "missing DeepSpeed config": ([RUN, "--ds", "nope.json"], "DeepSpeed config nope.json does not exist"),
    "missing data file": ([RUN, "data.path=missing.csv"], "missing.csv"),
    "series shorter than L+H": ([RUN, f"data.path={ETTH1}", "data.seq_len=9000"], "too short"),
    "batch larger than the data": ([RUN, f"data.path={ETTH1}", "data.batch_size=1000000"], "data.batch_size"),
    "unknown backbone path": ([RUN, f"data.path={ETTH1}", "model.backbone=./no-such-model"], "not a model directory"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_training_input_is_refused_before_anything_is_written(tmp_path, case):
    args, needle = TRAIN_CASES[case]
    _refused(_train(tmp_path, *args), needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,needle", [
    ("data: [1, 2\n", "not valid YAML/JSON"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("data:\n  seq_len: {a: 1}\n", "data.seq_len"),
])
def test_bad_config_files(tmp_path, content, needle):
    (tmp_path / "bad.yaml").write_text(content)
    _refused(_train(tmp_path, "--config", "bad.yaml", RUN), needle)
    assert not (tmp_path / "run").exists()


def test_bad_json_config_and_ds_config(tmp_path):
    (tmp_path / "bad.json").write_text("{\"data\": ")
    _refused(_train(tmp_path, "--config", "bad.json", RUN), "not valid YAML/JSON")
    (tmp_path / "ds.json").write_text("{\"zero_optimization\": ")
    _refused(_train(tmp_path, "--ds", "ds.json", RUN, f"data.path={ETTH1}"), "not valid JSON")
    (tmp_path / "ds2.json").write_text("{\"train_batch_size\": 4}")
    _refused(_train(tmp_path, "--ds", "ds2.json", RUN, f"data.path={ETTH1}"), "zero_optimization")
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_not_a_run_is_kept(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    _refused(_train(tmp_path, RUN, f"data.path={ETTH1}", "data.seq_len=96", "data.pred_len=24",
                    "model.backbone=./no-such-model"), "not a model directory")
    _refused(_cli(tmp_path, "evaluate", "run"), "no exported model")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_run_dir_that_is_a_file_a_symlink_loop_or_under_a_file(tmp_path):
    from backbones import tiny_llama

    backbone = tiny_llama(tmp_path / "bb", layers=1, hidden=16)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    base = [f"data.path={ETTH1}", "data.seq_len=96", "data.pred_len=24", f"model.backbone={backbone}", "model.layers=1"]
    for run_dir, needle in (("afile", "is a file"), ("loop1", "symlink"), ("afile/run", "which is a file")):
        _refused(_train(tmp_path, *base, f"run_dir={run_dir}"), needle)
    assert (tmp_path / "afile").read_text() == "mine" and (tmp_path / "loop1").is_symlink()


def test_corrupted_run_json_and_export(tmp_path):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "run.json").write_text("{\"config\": ")
    (run / "export" / "config.json").write_text("not json")
    _refused(_cli(tmp_path, "evaluate", "run"), "corrupted")
    _refused(_cli(tmp_path, "report", "run"), "run.json")
    assert (run / "run.json").read_text() == "{\"config\": "


# ------------------------------------------------------------------ property test on prepare

CELL = st.one_of(st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=8),
                 st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers().map(str),
                 st.sampled_from(["", "nan", "inf", "2020-01-01", "2020-01-01 00:00:00", "1e400", "\"", ","]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.lists(st.sampled_from(["date", "a", "b", "OT", "", "date "]), min_size=1, max_size=4),
       rows=st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=12))
def test_prepare_never_shows_a_traceback(tmp_path, header, rows):
    """In-process (fast) equivalent of the CLI: any input ends in a store or in a UserError."""
    from llm4ts_scale.core.errors import UserError
    from llm4ts_scale.data.prepare import prepare

    work = Path(tmp_path) / f"case-{abs(hash((tuple(header), str(rows)))) % 10**12}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    source = work / "series.csv"
    source.write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    try:
        prepare(source, work / "store")
    except UserError as err:
        assert "\n" not in str(err)
        assert not (work / "store").exists()
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".store")]
    assert leftovers == []
