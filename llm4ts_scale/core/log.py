"""Logging: one `llm4ts_scale` logger whose messages are plain lines (info on stdout, warnings on stderr),
from rank 0 only.

Progress bars (tqdm, main process) are separate and unchanged; `error: ...` lines of bad input come from
llm4ts_scale/core/errors.py. The CLI's --quiet keeps warnings only, --verbose adds debug lines; from Python
(llm4ts_scale/api.py) the default is INFO, so `Forecaster.fit` shows what the CLI shows. The standard
`logging` machinery applies: a service can attach its own handlers to logging.getLogger("llm4ts_scale").
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "llm4ts_scale"


class _RankZero(logging.Filter):
    """Every process of a launch logs the same run: only rank 0 (RANK, set by `accelerate launch`) speaks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") == "0"


class _Console(logging.StreamHandler):
    """Info on stdout, warnings on stderr (as the CLI always printed them), to the streams of the moment
    (pytest's capture, a notebook's redirect), flushed per line."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


def _root() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Console) for h in root.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_RankZero())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root


def get_logger(name: str) -> logging.Logger:
    """The package logger for module `name` (pass __name__)."""
    _root()
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    """--quiet: warnings only; --verbose: debug lines too; neither: info."""
    _root().setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def add_verbosity_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="log warnings only (progress bars stay)")
    group.add_argument("--verbose", action="store_true", help="log debug lines too")
