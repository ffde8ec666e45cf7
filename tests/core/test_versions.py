"""A library outside the declared range is refused at start in one line (llm4ts_scale/core/versions.py)."""

import subprocess
import sys

import pytest

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.versions import CHECKED, check_versions, declared_ranges


def test_the_ranges_come_from_the_installed_package_metadata():
    ranges = declared_ranges()
    assert set(CHECKED) <= set(ranges)
    assert all(spec.startswith(">=") for spec in ranges.values())


def test_the_installed_versions_are_inside_them():
    check_versions()


def test_an_older_transformers_is_refused_naming_package_version_and_range():
    ranges = declared_ranges()
    versions = {"transformers": "4.46.3", "peft": "0.22.0"}
    with pytest.raises(UserError) as err:
        check_versions(ranges, installed=lambda name: versions.get(name))
    message = str(err.value)
    assert message.startswith("transformers 4.46.3 is installed") and f"transformers{ranges['transformers']}" in message
    assert "pip install" in message and "\n" not in message


def test_a_missing_or_undeclared_package_is_left_to_its_import():
    check_versions({"peft": ">=0.18"}, installed=lambda name: None)
    check_versions({}, installed=lambda name: "0.0.1")


def test_the_cli_refuses_before_doing_anything(tmp_path):
    """A real process whose transformers metadata says 4.46.3 (a shadowing dist-info earlier on the path)."""
    fake = tmp_path / "site"
    info = fake / "transformers-4.46.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: transformers\nVersion: 4.46.3\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from llm4ts_scale.cli import main; "
            "main(['describe', 'model.layers=1'])")
    proc = subprocess.run([sys.executable, "-c", code, str(fake)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: transformers 4.46.3 is installed"), proc.stderr[-2000:]
