"""`llm4ts-scale train` and `launch/train.py`: the whole LLM4TS recipe for one run config."""

from __future__ import annotations

import argparse

from llm4ts_scale.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds", metavar="JSON", default=None,
                        help="DeepSpeed config (ds_configs/zero2.json, zero3.json, zero3_offload.json); "
                             "omit for plain Accelerate")
    parser.add_argument("--config", metavar="FILE", default=None, help="run config, YAML or JSON")
    parser.add_argument("--restart", action="store_true", help="clear an existing run_dir and start over")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.pred_len=192")


def run(args: argparse.Namespace) -> int:
    from llm4ts_scale.train.manager import train

    config = load_config(args.config, args.overrides)
    train(config, ds_config=args.ds, restart=args.restart)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="run align -> lp -> ft, then test and export",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(handler=run)
