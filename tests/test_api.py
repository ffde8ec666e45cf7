"""The Python API (llm4ts_scale/api.py) gives the command line's numbers: predict as `llm4ts-scale predict`,
evaluate as `llm4ts-scale evaluate`, fit writes the run a CLI run writes and resumes; save_pretrained round
trips; bad input raises one-line UserErrors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from backbones import tiny_llama
from conftest import ILI_L
from launching import REPO, child_env, cli, data_dir, launch_train

from llm4ts_scale import Forecaster
from llm4ts_scale.core.errors import UserError


@pytest.fixture(scope="module")
def ili_frame(ili_csv):
    return pd.read_csv(ili_csv)


@pytest.fixture(scope="module")
def loaded(ili_run_dir):
    return Forecaster.from_pretrained(ili_run_dir)


def test_predict_equals_the_cli_predict(ili_run_dir, ili_frame, loaded, tmp_path):
    history = ili_frame.iloc[:400]
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)
    out = tmp_path / "cli.csv"
    proc = cli(["predict", str(ili_run_dir), "--data", str(path), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = loaded.predict(history)
    theirs = pd.read_csv(out, parse_dates=["date"])
    assert list(ours.columns) == list(theirs.columns)
    assert (ours["date"].to_numpy() == theirs["date"].to_numpy()).all()
    np.testing.assert_allclose(ours.iloc[:, 1:].to_numpy(), theirs.iloc[:, 1:].to_numpy(), rtol=1e-6)
    indexed = loaded.predict(history.assign(date=pd.to_datetime(history["date"])).set_index("date"))
    np.testing.assert_array_equal(indexed.iloc[:, 1:].to_numpy(), ours.iloc[:, 1:].to_numpy())


def test_evaluate_equals_the_cli_evaluate(ili_run_dir, loaded):
    proc = cli(["evaluate", str(ili_run_dir)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout.splitlines()[-1])
    ours = loaded.evaluate()
    for key in ("mse", "mae", "rmse", "rse", "mape", "samples"):
        assert ours[key] == pytest.approx(printed[key], rel=1e-9), key
    assert loaded.metrics["test"]["mse"] == pytest.approx(ours["mse"], rel=1e-6)
    assert loaded.evaluate(split="val")["samples"] != ours["samples"]


def test_batched_predict_equals_single_calls(ili_frame, loaded):
    """Equal up to fp32 rounding, which depends on the batch's shape (matmul kernels): 1e-5 on the
    standardized scale (the fixture runs in fp32 on every machine)."""
    std = np.asarray(loaded.loaded.data["std"])
    histories = [ili_frame.iloc[i:i + 3 * ILI_L] for i in range(64)]
    batched = loaded.predict(histories)
    assert len(batched) == 64
    columns = list(loaded.loaded.data["columns"])
    quantiles = [f"{c}_q{q}" for c in columns for q in ("0.1", "0.5", "0.9")]
    assert list(batched[0].columns) == ["date", *columns, *quantiles]
    for frame, one in zip(histories, batched):
        single = loaded.predict(frame)
        assert (single["date"] == one["date"]).all()
        assert (np.abs(one[columns].to_numpy() - single[columns].to_numpy()).max(axis=0) / std < 1e-5).all()
        assert (np.abs(one[quantiles].to_numpy() - single[quantiles].to_numpy()).max(axis=0) / np.repeat(std, 3)
                < 1e-5).all()
    values = np.stack([h.iloc[-ILI_L:, 1:].to_numpy(dtype=float) for h in histories])
    arrays = loaded.predict(values)
    assert arrays.shape == (64, loaded.config.data.pred_len, values.shape[2])
    np.testing.assert_allclose(arrays, np.stack([b[columns].to_numpy() for b in batched]), rtol=1e-6)


def test_save_pretrained_round_trip_and_a_foreign_directory_refused(ili_frame, loaded, tmp_path):
    saved = loaded.save_pretrained(tmp_path / "model")
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.safetensors", "adapter"}
    again = Forecaster.from_pretrained(saved)
    history = ili_frame.iloc[:300]
    np.testing.assert_array_equal(again.predict(history).iloc[:, 1:].to_numpy(),
                                  loaded.predict(history).iloc[:, 1:].to_numpy())
    proc = cli(["evaluate", str(saved)])  # the CLI reads it too
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1])["mse"] == pytest.approx(loaded.evaluate()["mse"])
    meta = json.loads((saved / "config.json").read_text())
    meta["config"]["data"]["seq_len"] = 2 * ILI_L  # another config: its head has another shape
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError) as err:
        Forecaster.from_pretrained(saved)
    assert "\n" not in str(err.value) and "another config" in str(err.value)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an empty directory"):
        loaded.save_pretrained(tmp_path / "busy")


@pytest.mark.parametrize("bad,message", [
    (lambda f: f.drop(columns=["OT"]), "columns"),
    (lambda f: f.iloc[:10], "at least"),
    (lambda f: f.iloc[::-1], "not sorted"),
    (lambda f: f.assign(OT=f["OT"].where(f.index != 5)), "NaN"),
    (lambda f: f.drop(columns=["date"]), "'date' column"),
])
def test_bad_histories_raise_one_line_user_errors(ili_frame, loaded, bad, message):
    with pytest.raises(UserError) as err:
        loaded.predict(bad(ili_frame.iloc[:200].reset_index(drop=True)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_errors_are_the_clis(tmp_path):
    with pytest.raises(UserError, match="unknown config key 'model.layerz'"):
        Forecaster(model={"layerz": 3})
    with pytest.raises(UserError, match="unknown keyword 'epochs'"):
        Forecaster(epochs=3)
    with pytest.raises(UserError, match="not trained yet"):
        Forecaster().predict(pd.DataFrame())


FIT_SCRIPT = textwrap.dedent("""
    import sys
    from llm4ts_scale import Forecaster
    f = Forecaster(run_dir=sys.argv[1], data={{"path": sys.argv[2], "seq_len": 48, "pred_len": 12,
                   "few_shot_percent": 100, "batch_size": 32, "eval_batch_size": 512}},
                   model={{"backbone": sys.argv[3], "layers": 2, "quantize": "none", "head": "flatten+linear"}},
                   stages={{"align": {{"epochs": 1}}, "ft": {{"epochs": 2}}}},
                   train={{"log_with": "none", "limit_train_batches": 4, "checkpoint_every_steps": 2,
                          "compare_baselines": False}})
    f.fit()
    print("MSE", f.metrics["test"]["mse"])
""")


def _keys(run: dict) -> dict:
    return {"top": set(run), "stages": {name: set(stage) for name, stage in run["stages"].items()},
            "test": set(run["test"])}


def test_fit_in_process_writes_the_cli_run_and_resumes_after_a_kill(tmp_path):
    backbone = tiny_llama(tmp_path / "bb", layers=2, hidden=32)
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT.format())
    args = [sys.executable, str(script), str(tmp_path / "api"), str(data_dir() / "national_illness.csv"), str(backbone)]
    killed = subprocess.run(args, env=child_env(LLM4TS_KILL_AT="ft.step@3"), capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0
    run = json.loads((tmp_path / "api" / "run.json").read_text())
    assert run["stages"]["ft"]["status"] == "running"
    resumed = subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout

    # the same config through the CLI, uninterrupted: the same run.json keys and the same test figures
    config = json.loads((tmp_path / "api" / "run.json").read_text())["config"]
    def flat(prefix, value):
        if isinstance(value, dict):
            return [item for k, v in value.items() for item in flat(f"{prefix}.{k}", v)]
        return [f"{prefix}={value if isinstance(value, str) else json.dumps(value)}"]

    overrides = [item for section in ("seed", "data", "model", "stages", "train") for item in flat(section, config[section])]
    proc = launch_train([*overrides, f"run_dir={tmp_path / 'cli'}"], ds=None, processes=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api_run = json.loads((tmp_path / "api" / "run.json").read_text())
    cli_run = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert api_run["config_hash"] == cli_run["config_hash"]
    assert _keys(api_run) == _keys(cli_run)
    mse = float(re.search(r"MSE (\S+)", resumed.stdout).group(1))
    assert mse == pytest.approx(cli_run["test"]["metrics"]["mse"], rel=1e-5)


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path):
    code = _readme_example().replace('"runs/', f'"{tmp_path}/')
    assert "Forecaster" in code and "fit(" in code and "predict(" in code and "savefig(" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "quick-python" / "forecast.png").stat().st_size > 10_000
    assert (tmp_path / "quick-python-model" / "model.safetensors").is_file()
