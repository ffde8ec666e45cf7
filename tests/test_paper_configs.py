"""configs/paper/*.yaml carry the official LLM4TS settings (configs/paper/README.md), mapped as
configs/paper/README.md explains, and tools/paper_sweep.py turns them into the right grid.

The table below is copied from the official settings (configs/paper/README.md), not read from the
configs, so a wrong value in a config fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm4ts_scale.core.config import load_config
from llm4ts_scale.data.registry import lookup

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "ECL", "Traffic")
SETTINGS = {"full": 100, "10pct": 10, "5pct": 5}
HORIZONS = (96, 192, 336, 720)

# (dataset, setting): L, conv kernel, PEFT, r, alpha,
#                     align lr, align epochs, align lradj, dft lr, dft epochs, dft lradj, dropout
OFFICIAL = {
    ("ETTh1", "10pct"): (512, 7, "adalora", 16, 32, 1.48e-3, 10, "constant", 9.8e-5, 10, "constant", 0.1),
    ("ETTh2", "10pct"): (512, 3, "lora", 16, 16, 1.8e-5, 5, "type1", 2.6e-5, 15, "constant", 0.2),
    ("ETTm1", "10pct"): (336, 5, "adalora", 16, 32, 3.97e-3, 5, "constant", 5.9e-5, 15, "type1", 0.05),
    ("ETTm2", "10pct"): (512, 5, "lora", 8, 64, 8e-5, 3, "type1", 1.62e-4, 15, "warmup", 0.15),
    ("Weather", "10pct"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("ECL", "10pct"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("Traffic", "10pct"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("ETTh1", "5pct"): (512, 7, "adalora", 16, 16, 8.98e-4, 5, "type3", 3.72e-4, 15, "warmup", 0.2),
    ("ETTh2", "5pct"): (512, 3, "lora", 8, 32, 4.63e-3, 10, "type3", 8.43e-4, 5, "type3", 0.05),
    ("ETTm1", "5pct"): (336, 7, "lora", 8, 32, 1.43e-3, 5, "type3", 1.5e-5, 15, "warmup", 0.15),
    ("ETTm2", "5pct"): (336, 7, "lora", 32, 32, 9.1e-5, 10, "constant", 1.53e-3, 5, "type1", 0.2),
    ("Weather", "5pct"): (336, 7, "lora", 8, 32, 1.43e-3, 5, "type3", 1.5e-5, 15, "warmup", 0.15),
    ("ECL", "5pct"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("Traffic", "5pct"): (512, 7, "lora", 32, 32, 2.96e-3, 5, "type3", 8.6e-5, 5, "constant", 0.05),
    ("ETTh1", "full"): (336, 3, "lora", 8, 64, 7.9e-5, 5, "constant", 1.8e-5, 15, "constant", 0.05),
    ("ETTh2", "full"): (512, 5, "lora", 8, 64, 4.33e-4, 5, "type1", 1.2e-5, 15, "type3", 0.05),
    ("ETTm1", "full"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("ETTm2", "full"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("Weather", "full"): (512, 7, "lora", 32, 32, 6.59e-4, 10, "warmup", 2.9e-5, 5, "type1", 0.0),
    ("ECL", "full"): (512, 7, "lora", 32, 32, 2.96e-3, 5, "type3", 8.6e-5, 5, "constant", 0.05),
    ("Traffic", "full"): (336, 5, "lora", 32, 64, 9.2e-5, 3, "constant", 2.4e-5, 5, "type1", 0.05),
}
# official lradj -> (schedule, warmup_ratio) in this framework; `warmup` has no twin (closest: cosine + 10 % warm-up)
SCHEDULES = {"constant": ("constant", 0.0), "type1": ("type1", 0.0), "type3": ("type3", 0.0),
             "warmup": ("cosine", 0.1)}
SPLITS = {"ETTh1": "ett-hourly", "ETTh2": "ett-hourly", "ETTm1": "ett-minute", "ETTm2": "ett-minute",
          "Weather": "ratio", "ECL": "ratio", "Traffic": "ratio"}
KEYS = sorted(OFFICIAL, key=lambda k: (list(SETTINGS).index(k[1]), DATASETS.index(k[0])))


def path_of(dataset: str, setting: str) -> Path:
    return PAPER / f"{dataset.lower()}_{setting}.yaml"


def feasible_horizons(dataset: str, setting: str) -> list[int]:
    """Horizons with at least one few-shot training window (docs/ARCHITECTURE.md section 4), computed here from
    the published row counts rather than with the sweep's own helper."""
    L, pct, rows = OFFICIAL[(dataset, setting)][0], SETTINGS[setting], lookup(dataset).rows
    border2 = {"ett-hourly": 8640, "ett-minute": 4 * 8640}.get(SPLITS[dataset], int(rows * 0.7))
    end = (border2 - L) * pct // 100 + L if pct < 100 else border2
    return [h for h in HORIZONS if end - L - h + 1 > 0]


def test_the_official_table_is_complete():
    assert set(OFFICIAL) == {(d, s) for d in DATASETS for s in SETTINGS}
    # the example the table is checked against (configs/paper/README.md, first row)
    assert OFFICIAL[("ETTh1", "10pct")] == (512, 7, "adalora", 16, 32, 1.48e-3, 10, "constant",
                                            9.8e-5, 10, "constant", 0.1)


def test_exactly_the_21_paper_configs_exist_and_load():
    names = sorted(p.name for p in PAPER.glob("*.yaml"))
    assert names == sorted(path_of(d, s).name for d, s in OFFICIAL)
    for key in KEYS:
        assert load_config(path_of(*key)).active_stages() == ["align", "lp", "ft"], key


@pytest.mark.parametrize("key", KEYS, ids=[f"{d}-{s}" for d, s in KEYS])
def test_config_carries_the_official_settings(key):
    dataset, setting = key
    L, kernel, peft, r, alpha, a_lr, a_ep, a_adj, d_lr, d_ep, d_adj, dropout = OFFICIAL[key]
    c = load_config(path_of(*key))
    d, m, st = c.data, c.model, c.stages

    assert lookup(d.path).name == dataset
    assert (d.split, d.few_shot_percent) == (SPLITS[dataset], SETTINGS[setting])
    assert (d.seq_len, d.pred_len, d.patch_len, d.stride) == (L, 96, 16, 8)
    assert (d.batch_size, d.eval_batch_size) == (128, 512)
    assert (m.backbone, m.layers, m.quantize) == ("gpt2", 6, "none")
    assert (m.conv_kernel, m.lora.r, m.lora.alpha) == (kernel, r, alpha)
    assert m.dropout == dropout

    assert st.align.epochs == a_ep and st.align.lr == pytest.approx(a_lr, rel=1e-12)
    assert (st.align.schedule, st.align.warmup_ratio) == SCHEDULES[a_adj]
    assert (st.lp.epochs, st.ft.epochs) == (d_ep // 2, d_ep - d_ep // 2)
    assert st.lp.solver == "sgd" and c.model.head == "flatten"  # the official LP: SGD epochs on the flatten head
    for stage in (st.lp, st.ft):
        assert stage.lr == pytest.approx(d_lr, rel=1e-12)
        assert (stage.schedule, stage.warmup_ratio) == SCHEDULES[d_adj]
        assert stage.weight_decay == 0.0
    # early stopping must not cut any stage's official epoch budget short
    assert c.train.patience >= max(st.align.epochs, st.lp.epochs, st.ft.epochs)
    assert c.run_dir == f"runs/paper/{path_of(*key).stem}_96"


@pytest.mark.parametrize("key", KEYS, ids=[f"{d}-{s}" for d, s in KEYS])
def test_config_comments_say_where_it_departs_from_the_official_run(key):
    dataset, setting = key
    peft, a_adj, d_adj = OFFICIAL[key][2], OFFICIAL[key][7], OFFICIAL[key][10]
    path = path_of(*key)
    text = path.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))

    assert "settings-and-results JSON" in header
    assert "GPT-2" in header and "TEST set" in header
    assert f"--config configs/paper/{path.name}" in header
    assert f"run_dir=runs/paper/{path.stem}_192" in header
    assert f"--datasets {dataset} --settings {setting}" in header
    assert f"look-back {OFFICIAL[key][0]}" in header
    # the horizons offered are exactly those with training windows; a skipped one is explained
    offered = [int(h) for h in re.findall(r"data\.pred_len=(\d+)", header.split("# e.g.")[0])]
    assert offered == feasible_horizons(*key)
    assert ("leaves no training window" in header) == (offered != list(HORIZONS))

    assert ("AdaLoRA" in text) == (peft == "adalora")
    assert ("cosine with 10 % linear warm-up" in text) == ("warmup" in (a_adj, d_adj))
    assert "best-VALIDATION" in text


def test_sweep_prints_one_line_per_config_and_horizon():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "paper_sweep.py")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(OFFICIAL) * len(HORIZONS) == 84

    seen, skipped = [], []
    for line in lines:
        if line.startswith("# skip "):
            stem, horizon = line.split()[2], int(line.split()[3].removeprefix("H=").rstrip(":"))
            skipped.append((stem, horizon))
        else:
            assert line.startswith("accelerate launch launch/train.py --ds ds_configs/zero2.json --config "), line
            stem = re.search(r"--config configs/paper/(\w+)\.yaml", line).group(1)
            horizon = int(re.search(r"data\.pred_len=(\d+)", line).group(1))
            assert f"run_dir=runs/paper/{stem}_{horizon}" in line
        seen.append((stem, horizon))
    assert sorted(seen) == sorted((path_of(*k).stem, h) for k in OFFICIAL for h in HORIZONS)

    expected_skips = sorted((path_of(*k).stem, h) for k in OFFICIAL for h in HORIZONS
                            if h not in feasible_horizons(*k))
    assert sorted(skipped) == expected_skips
    # with the official look-backs: 5 % of ETTh1/ETTh2 (L=512: 918 rows) and of Traffic
    # (L=512: 1100 rows) is shorter than L+720; ETTm1/ETTm2/Weather at 5 % (L=336) keep 720
    assert expected_skips == [("etth1_5pct", 720), ("etth2_5pct", 720), ("traffic_5pct", 720)]
    assert len(lines) - len(skipped) == 81
