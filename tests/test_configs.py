"""Shipped configs validate, and the paper grid follows the protocol (docs/ARCHITECTURE.md section 4, issue #5)."""

from __future__ import annotations

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
