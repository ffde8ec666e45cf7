"""The package's layers import one way (docs/ARCHITECTURE.md section 2): nothing reaches back up the
chain prepare -> stream -> model -> stage manager -> export/evaluate."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm4ts_scale"
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "model": {"core"},
    "baselines": {"core", "data"},
    "evaluation": {"core", "data"},
    "inference": {"core", "data", "model", "evaluation", "baselines"},
    "train": {"core", "data", "model", "evaluation", "baselines", "inference"},
}

# where a layer may use only one module of another: training exports a finished run; inference's reports
# draw the naive baseline
NARROW = {("train", "inference"): "llm4ts_scale.inference.export", ("inference", "baselines"): "llm4ts_scale.baselines.simple"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llm4ts_scale."):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("llm4ts_scale.")}
    return out


def test_layers_import_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if layer not in ALLOWED:
            continue
        for module in _imports(path):
            target = module.split(".")[1]
            narrowed = NARROW.get((layer, target))
            if target == layer or (target in ALLOWED[layer] and narrowed in (None, module)):
                continue
            wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, wrong


def test_the_root_shows_the_layers():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 8, modules
