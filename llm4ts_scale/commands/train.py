"""`llm4ts-scale train`: the same entry as launch/train.py (llm4ts_scale/train/manager.py)."""

from __future__ import annotations

from llm4ts_scale.core.config import add_run_arguments, load_config


def run(args) -> int:
    from llm4ts_scale.core.log import set_verbosity
    from llm4ts_scale.train.manager import train

    set_verbosity(args.quiet, args.verbose)

    train(load_config(args.config, args.overrides), ds_config=args.ds, restart=args.restart)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="run align -> lp -> ft, then test and export",
                                   description=__doc__)
    add_run_arguments(parser)
    parser.set_defaults(handler=run)
