"""The `llm4ts-scale` console script: one subcommand per module in llm4ts_scale.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from llm4ts_scale.core.errors import exit_on_user_error
from llm4ts_scale.core.versions import check_versions

# Each module exposes `add_parser(subparsers)` and `run(args) -> int | None`.
COMMANDS = ["prepare", "evaluate", "describe", "align", "train", "predict", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm4ts-scale", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"llm4ts_scale.commands.{name}").add_parser(subparsers)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    check_versions()  # an installed library outside the declared range: one line, before any of it is imported
    args = build_parser().parse_args(argv)
    code = args.handler(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
