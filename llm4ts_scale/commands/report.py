"""`llm4ts-scale report RUN_DIR`: write RUN_DIR/report.md with loss curves and per-step test errors."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from llm4ts_scale.inference.report import write_report

    path = write_report(args.run_dir, data_path=args.data, evaluate=not args.no_eval, batch_size=args.batch_size)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write a Markdown report (config, curves, per-step errors) for a run",
                                   description=__doc__)
    parser.add_argument("run_dir", help="a run directory (holds run.json)")
    parser.add_argument("--data", default=None,
                        help="data to re-evaluate on when the training path moved (default: the config's data.path)")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the per-step test evaluation (no model load; report from the files only)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the run's)")
    parser.set_defaults(handler=run)
