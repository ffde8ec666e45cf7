"""Shipped configs validate, and the paper grid follows the protocol (docs/ARCHITECTURE.md section 4, issue #5)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from launching import REPO

from llm4ts_scale.core.config import load_config
from llm4ts_scale.data.registry import lookup

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
PAPER_DATASETS = ["ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "ECL", "Traffic"]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_config_validates(path):
    config = load_config(path)
    assert config.active_stages()


def test_paper_grid_is_complete_and_follows_the_protocol():
    seen = set()
    for path in PAPER:
        c = load_config(path)
        info = lookup(c.data.path)
        seen.add((info.name, c.data.few_shot_percent))
        assert path.stem == f"{info.name.lower()}_{'full' if c.data.few_shot_percent == 100 else f'{c.data.few_shot_percent}pct'}"
        assert c.data.seq_len in (336, 512), path.name  # per file: tests/test_paper_configs.py
        assert (c.data.patch_len, c.data.stride, c.data.pred_len) == (16, 8, 96), path.name
        assert c.data.split == info.split
        assert "data.pred_len=192" in path.read_text()
    assert seen == {(name, pct) for name in PAPER_DATASETS for pct in (100, 10, 5)}


def test_quick_config_is_a_small_smoke_run():
    c = load_config(REPO / "configs" / "quick.yaml")
    assert (c.data.path, c.data.seq_len, c.data.pred_len) == ("ETTh1", 96, 24)
    assert c.train.limit_train_batches and all(c.stages[s].epochs == 1 for s in ("align", "lp", "ft"))


def test_sweep_prints_the_grid_and_skips_infeasible_few_shot_horizons():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "paper_sweep.py")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    commands = [line for line in lines if line.startswith("accelerate launch")]
    skipped = sorted(line.split()[2] + " " + line.split()[3] for line in lines if line.startswith("# skip"))
    assert skipped == ["etth1_5pct H=720:", "etth2_5pct H=720:", "traffic_5pct H=720:"]
    assert len(commands) == 7 * 3 * 4 - 3
    assert ("accelerate launch launch/train.py --ds ds_configs/zero2.json --config configs/paper/etth1_10pct.yaml "
            "data.pred_len=192 run_dir=runs/paper/etth1_10pct_192") in commands


def test_sweep_filters_and_appends_overrides():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "paper_sweep.py"), "--datasets", "weather",
                          "--settings", "5pct", "--horizons", "96,720", "--ds", "zero3", "model.quantize=nf4"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"accelerate launch launch/train.py --ds ds_configs/zero3.json --config configs/paper/weather_5pct.yaml "
        f"data.pred_len={h} run_dir=runs/paper/weather_5pct_{h} model.quantize=nf4" for h in (96, 720)]
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "paper_sweep.py"), "--datasets", "nope"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown dataset 'nope'")


def test_readme_documents_every_config_key_with_its_default():
    """The configuration reference (docs/CONFIGURATION.md) is the truth: the same keys as the dataclasses, the same
    defaults."""
    import dataclasses
    import re
    from pathlib import Path

    import yaml

    from llm4ts_scale.core.config import RunConfig

    text = (Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md").read_text()
    section = text[text.index("## Configuration"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert yaml.safe_load(block) == dataclasses.asdict(RunConfig())


def test_the_stages_section_is_the_stage_table():
    import dataclasses

    from llm4ts_scale.core.config import StagesConfig
    from llm4ts_scale.core.stages import STAGES

    assert [f.name for f in dataclasses.fields(StagesConfig)] == [s.name for s in STAGES]
    stages = StagesConfig()
    for spec in STAGES:
        assert (stages[spec.name].epochs, stages[spec.name].lr, stages[spec.name].solver) == (
            spec.default_epochs, spec.default_lr, spec.default_solver)


def test_every_config_field_is_typed_and_has_help():
    """Declared once: a type (no Any), a default and a help text in the field's metadata."""
    import dataclasses
    import typing

    from llm4ts_scale.core import config as c

    for cls in (c.RunConfig, c.DataConfig, c.CovariatesConfig, c.ModelConfig, c.LoraConfig, c.StagesConfig,
                c.AlignStageConfig, c.ForecastStageConfig, c.TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert hints[f.name] is not typing.Any, f"{cls.__name__}.{f.name} is typed Any"
    assert "horizon" in c.field_help(c.DataConfig, "pred_len")


def test_a_section_checks_itself_where_it_is_declared():
    """Built directly, not through load_config, a section still refuses what it cannot run."""
    from llm4ts_scale.core.config import (
        DataConfig,
        ForecastStageConfig,
        LoraConfig,
        ModelConfig,
        StagesConfig,
        TrainConfig,
        load_config,
    )
    from llm4ts_scale.core.errors import UserError

    for build, named in ((lambda: DataConfig(seq_len=8, patch_len=16), "data.patch_len=16"),
                         (lambda: LoraConfig(targets="all"), "model.lora.targets"),
                         (lambda: ModelConfig(layers=2, read_layers=[3]), "model.read_layers"),
                         (lambda: StagesConfig(ft=ForecastStageConfig(solver="exact")), "stages.ft.solver=exact"),
                         (lambda: load_config(None, ["stages.lp.data=[ETTh1]"]), "stages.lp.data"),
                         (lambda: TrainConfig(patience=0), "train.patience")):
        with pytest.raises(UserError, match=re.escape(named)):
            build()


def test_each_kind_of_stage_has_its_own_options_and_old_keys_stay_valid():
    """A corpus only on align, the exact solver and its penalties only on the forecasting stages; a config written
    when every stage carried every key loads, and hashes, as before."""
    import dataclasses

    from llm4ts_scale.core.config import AlignStageConfig, ForecastStageConfig, load_config
    from llm4ts_scale.core.errors import UserError

    align = {f.name for f in dataclasses.fields(AlignStageConfig)}
    forecast = {f.name for f in dataclasses.fields(ForecastStageConfig)}
    assert align - forecast == {"data"}
    assert forecast - align == {"solver", "penalty_linear", "penalty_llm", "penalty_cov"}
    old_keys = ["stages.align.solver=sgd", "stages.align.penalty_llm=0.5", "stages.align.penalty_cov=auto",
                "stages.lp.data=[]", "stages.ft.data=null"]
    written = ["stages.align.epochs=3", "stages.lp.epochs=10", "stages.lp.lr=1e-4", "stages.lp.solver=exact",
               "stages.ft.epochs=0", "stages.ft.lr=1e-5"]  # a stage written in part takes its kind's defaults
    config = load_config(None, written + old_keys)
    # the default config's hash as every earlier version computed it: run directories made before resume
    assert config.hash() == load_config(None, []).hash() == "16e25296152299c0"
    assert config.stages.align.solver == "sgd" and "solver" not in config.to_dict()["stages"]["align"]
    for bad, named in (("stages.align.solver=exact", "stages.align.solver=exact"),
                       ("stages.align.penalty_llm=-1", "stages.align.penalty_llm"),
                       ("stages.ft.data=[ETTh1]", "stages.ft.data"), ("stages.align.nope=1", "stages.align.nope")):
        with pytest.raises(UserError, match=re.escape(named)):
            load_config(None, [bad])
