"""The package logger (llm4ts_scale/core/log.py): info on stdout, warnings on stderr, rank 0 only, --quiet/--verbose."""

from __future__ import annotations

import argparse

import pytest

from llm4ts_scale.core.config import add_run_arguments
from llm4ts_scale.core.log import get_logger, set_verbosity


@pytest.fixture(autouse=True)
def _default_level():
    yield
    set_verbosity()


def test_info_goes_to_stdout_warnings_to_stderr_and_levels_follow_the_flags(capsys):
    log = get_logger("tests.log")
    log.info("an info line")
    log.warning("warning: a warning line")
    log.debug("a debug line")
    out, err = capsys.readouterr()
    assert out == "an info line\n" and err == "warning: a warning line\n"
    set_verbosity(quiet=True)
    log.info("hidden")
    log.warning("warning: still shown")
    out, err = capsys.readouterr()
    assert out == "" and err == "warning: still shown\n"
    set_verbosity(verbose=True)
    log.debug("a debug line")
    assert capsys.readouterr().out == "a debug line\n"


def test_only_rank_zero_logs(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    get_logger("tests.log").warning("warning: from rank 1")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    get_logger("tests.log").info("from rank 0")
    assert capsys.readouterr().out == "from rank 0\n"


def test_the_training_command_line_takes_quiet_or_verbose_not_both(capsys):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    assert parser.parse_args(["--quiet", "seed=1"]).quiet
    assert parser.parse_args(["--verbose"]).verbose
    with pytest.raises(SystemExit):
        parser.parse_args(["--quiet", "--verbose"])
