"""Download the paper's datasets into the data cache: `python tools/fetch_data.py ETTh1 ILI [--dest DIR]`.

Thin entry point over llm4ts_scale.data.fetch (sources and checksums: llm4ts_scale/data/registry.py).
Exit status 2 with one `error: ...` line on a bad name, a failed download or a checksum mismatch.
"""

from __future__ import annotations

import argparse
import sys

from llm4ts_scale.core.errors import exit_on_user_error
from llm4ts_scale.data.fetch import default_dest, fetch
from llm4ts_scale.data.registry import DATASETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fetch_data.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(DATASETS)}, or all")
    parser.add_argument("--dest", default=None, help=f"target directory (default: {default_dest()})")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=URL",
                        help="download NAME from URL instead (http(s):// or file://); repeatable")
    parser.add_argument("--force", action="store_true", help="download again even if a copy is installed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fetch(args.names, args.dest, args.source, force=args.force, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
