"""Shared fixtures. Real data lives next to the repo in ../shared/data (override: LLM4TS_DATA_PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def find_data_file(name: str) -> Path:
    """`name` in the first LLM4TS_DATA_PATH entry holding it, else in ../shared/data; fails loudly if absent."""
    dirs = [Path(p) for p in os.environ.get("LLM4TS_DATA_PATH", "").split(os.pathsep) if p] + [DEFAULT_DATA_DIR]
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    pytest.fail(f"test data {name} not found in {[str(d) for d in dirs]}; set LLM4TS_DATA_PATH to its folder")


@pytest.fixture(scope="session")
def etth1_csv() -> Path:
    return find_data_file("ETTh1.csv")


@pytest.fixture(scope="session")
def ili_csv() -> Path:
    return find_data_file("national_illness.csv")


@pytest.fixture(scope="session")
def etth1_store(tmp_path_factory, etth1_csv):
    """ETTh1 prepared once per session (ett-hourly split)."""
    from llm4ts_scale.data.prepare import prepare

    return prepare(etth1_csv, tmp_path_factory.mktemp("stores") / "ETTh1")


@pytest.fixture(scope="session")
def ili_store(tmp_path_factory, ili_csv):
    """national_illness prepared once per session (ratio split, weekly)."""
    from llm4ts_scale.data.prepare import prepare

    return prepare(ili_csv, tmp_path_factory.mktemp("stores") / "ILI")
