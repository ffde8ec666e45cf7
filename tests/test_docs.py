"""Docs that cannot drift: every repository path, `file.py:name` and `llm4ts_scale.module.name` that the README,
docs/ and the package's, tools', benchmarks', experiments' and launchers' text cite must exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED_ROOTS = "llm4ts_scale|tools|benchmarks|experiments|tests|launch|configs|ds_configs|docs|results"
PATH = re.compile(rf"(?<![\w/.-])((?:{CITED_ROOTS})/[\w./-]*\w)")
FILE_NAME = re.compile(r"((?:llm4ts_scale|tools|benchmarks|experiments|launch)/[\w/]+\.py):(\w+)")
DOTTED = re.compile(r"\b(llm4ts_scale(?:\.\w+)+)")


def _texts() -> dict[str, str]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "llm4ts_scale").rglob("*.py"),
             *(REPO / "tools").glob("*.py"), *(REPO / "benchmarks").glob("*.py"),
             *(REPO / "experiments").glob("*.py"), *(REPO / "experiments").glob("*.yaml"), *(REPO / "launch").glob("*.py")]
    return {str(f.relative_to(REPO)): f.read_text() for f in files}


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_cited_path_exists():
    missing = []
    for where, text in _texts().items():
        for cited in PATH.findall(text):
            if "<" in cited or "*" in cited:
                continue
            path = REPO / cited
            # a cited prefix of generated names (results/sweep/rlinear-<dataset>.json) counts when something matches
            if not path.exists() and not any(path.parent.glob(path.name + "*")):
                missing.append(f"{where}: {cited}")
    assert not missing, missing


def test_every_cited_function_and_module_exists():
    missing = []
    for where, text in _texts().items():
        for cited, name in FILE_NAME.findall(text):
            path = REPO / cited
            if not path.is_file() or not re.search(rf"\b{name}\b", path.read_text()):
                missing.append(f"{where}: {cited}:{name}")
        missing += [f"{where}: {dotted}" for dotted in DOTTED.findall(text) if not _resolves(dotted)]
    assert not missing, missing
