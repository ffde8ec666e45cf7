"""tools/fetch_data.py: verified, atomic installs from file:// sources (no network needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from launching import REPO, child_env, data_dir

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import file_sha256
from llm4ts_scale.data.fetch import fetch, parse_sources
from llm4ts_scale.data.registry import DATASETS, lookup

TOOL = REPO / "tools" / "fetch_data.py"


def fetch_tool(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = child_env(**(env_extra or {}))
    return subprocess.run([sys.executable, str(TOOL), "--no-progress", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def corrupted_copy(tmp_path):
    data = bytearray((data_dir() / "ETTh1.csv").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3] = b"999" if data[middle:middle + 3] != b"999" else b"111"
    path = tmp_path / "bad" / "ETTh1.csv"
    path.parent.mkdir()
    path.write_bytes(bytes(data))
    return path


def test_fetch_verifies_and_installs_into_the_cache(tmp_path):
    source = data_dir() / "ETTh1.csv"
    cache = tmp_path / "cache"
    proc = fetch_tool("ETTh1", "--source", f"ETTh1={source.as_uri()}", env_extra={"LLM4TS_CACHE": cache})
    assert proc.returncode == 0, proc.stderr
    installed = cache / "data" / "ETTh1.csv"
    assert installed.read_bytes() == source.read_bytes()
    assert file_sha256(installed) == DATASETS["ETTh1"].sha256
    assert "verified" in proc.stdout
    assert sorted(p.name for p in installed.parent.iterdir()) == ["ETTh1.csv"]  # no temp file left


def test_corrupted_download_is_refused_and_nothing_is_installed(tmp_path):
    bad = corrupted_copy(tmp_path)
    dest = tmp_path / "data"
    proc = fetch_tool("ETTh1", "--dest", str(dest), "--source", f"ETTh1={bad.as_uri()}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sha256" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(dest.iterdir()) == []


def test_corrupted_download_leaves_a_good_install_untouched(tmp_path):
    dest = tmp_path / "data"
    good = data_dir() / "ETTh1.csv"
    fetch(["ETTh1"], dest, [f"ETTh1={good.as_uri()}"], progress=False)
    before = (dest / "ETTh1.csv").stat().st_mtime_ns
    with pytest.raises(UserError, match="corrupted"):
        fetch(["ETTh1"], dest, [f"ETTh1={corrupted_copy(tmp_path).as_uri()}"], force=True, progress=False)
    assert file_sha256(dest / "ETTh1.csv") == DATASETS["ETTh1"].sha256
    assert (dest / "ETTh1.csv").stat().st_mtime_ns == before
    assert sorted(p.name for p in dest.iterdir()) == ["ETTh1.csv"]


def test_unknown_name_exits_2(tmp_path):
    proc = fetch_tool("ETTh9", "--dest", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown dataset 'ETTh9'") and "ETTh1" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_unpinned_dataset_is_accepted_with_its_hash_printed(tmp_path, capsys):
    source = data_dir() / "ETTh1.csv"  # stands in for ETTh2: same layout, unpinned entry
    [result] = fetch(["etth2"], tmp_path, [f"ETTh2={source.as_uri()}"], progress=False)
    assert result.name == "ETTh2" and not result.pinned and result.downloaded
    assert (tmp_path / "ETTh2.csv").read_bytes() == source.read_bytes()
    assert "unpinned" in capsys.readouterr().err and result.sha256 == file_sha256(source)


def test_unpinned_file_with_the_wrong_columns_is_refused(tmp_path):
    source = data_dir() / "ETTh1.csv"  # 7 channels; Weather has 21
    with pytest.raises(UserError, match="does not look like Weather"):
        fetch(["Weather"], tmp_path, [f"Weather={source.as_uri()}"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_names_aliases_and_sources_are_validated(tmp_path):
    assert lookup("national_illness").name == "ILI" and lookup("electricity").name == "ECL"
    assert parse_sources(["etth1=file:///x.csv"]) == {"ETTh1": "file:///x.csv"}
    with pytest.raises(UserError, match="NAME=URL"):
        parse_sources(["ETTh1"])
    with pytest.raises(UserError, match="not among the datasets"):
        fetch(["ETTh1"], tmp_path, ["ILI=file:///x.csv"], progress=False)
    with pytest.raises(UserError, match="cannot open"):
        fetch(["ETTh2"], tmp_path, ["ETTh2=file:///nonexistent/ETTh2.csv"], progress=False)


@pytest.mark.parametrize("name, file", [("ETTh1", "ETTh1.csv"), ("ILI", "national_illness.csv")])
def test_registry_facts_match_the_local_copies(name, file):
    info = lookup(name)
    lines = (data_dir() / file).read_text().splitlines()
    assert file_sha256(data_dir() / file) == info.sha256
    assert len(lines) - 1 == info.rows and len(lines[0].split(",")) == info.channels + 1


def test_a_relative_data_path_as_the_readme_sets_it(tmp_path, monkeypatch):
    """LLM4TS_DATA_PATH=../shared/data (relative, as in the README's first command) works for the package
    and for these tests' helpers, from the repository root and from another directory."""
    import json
    import os

    relative = os.path.relpath(data_dir(), REPO)
    monkeypatch.setenv("LLM4TS_DATA_PATH", relative)
    monkeypatch.chdir(REPO)
    assert data_dir() == (REPO / relative).resolve() and (data_dir() / "ETTh1.csv").is_file()
    assert (data_dir() / "ETTh1.csv").as_uri().startswith("file:///")
    env = {**os.environ, "LLM4TS_DATA_PATH": relative, "LLM4TS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "llm4ts_scale.cli", "evaluate", "--data", "ETTh1", "--baseline", "naive",
                           "--seq-len", "96", "--pred-len", "24"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["samples"] > 0
    assert child_env()["LLM4TS_DATA_PATH"] == str((REPO / relative).resolve())
