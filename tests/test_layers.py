"""The code's shape (docs/ARCHITECTURE.md section 2): layers import one way (nothing reaches back up the chain
prepare -> stream -> model -> stage manager -> export/evaluate), a root of at most 8 modules, no function of
more than 8 parameters, and print only in the command line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm4ts_scale"
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "stats": {"core"},
    "data": {"core", "stats"},
    "model": {"core", "stats"},
    "baselines": {"core", "stats", "data"},
    "evaluation": {"core", "stats", "data"},
    "inference": {"core", "stats", "data", "model", "evaluation", "baselines"},
    "train": {"core", "stats", "data", "model", "evaluation", "baselines", "inference"},
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


def _functions():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE), node


def test_no_function_takes_more_than_eight_parameters():
    """What travels together goes as one value (data/windows.py:WindowSpec, core/topology.py:Topology, ...)."""
    wide = []
    for where, fn in _functions():
        a = fn.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [x.arg for x in (a.vararg, a.kwarg) if x]
        count = len(names) - (names[:1] in (["self"], ["cls"]))
        if count > 8:
            wide.append(f"{where}:{fn.name} ({count})")
    assert not wide, wide


def test_only_the_command_line_prints():
    """Everything else logs (core/log.py); the CLI's commands print their results, errors.py its one-line errors."""
    printing = []
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(PACKAGE)
        if where.parts[0] == "commands" or where.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{where}:{node.lineno}")
    assert not printing, printing


def test_objects_create_their_state_in_init():
    """Every attribute a method sets is created in __init__ (or is a dataclass field), so a class reads whole."""
    inherited = {("_Console", "stream")}  # logging.StreamHandler's own attribute
    late = []
    for path in PACKAGE.rglob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            created = {f.target.id for f in cls.body if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)}
            later = {}
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef):
                    continue
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                            and isinstance(node.value, ast.Name) and node.value.id == "self"):
                        if fn.name in ("__init__", "__post_init__"):
                            created.add(node.attr)
                        else:
                            later.setdefault(node.attr, fn.name)
            late += [f"{path.relative_to(PACKAGE)}:{cls.name}.{attr} (set in {where})" for attr, where in later.items()
                     if attr not in created and (cls.name, attr) not in inherited]
    assert not late, late
