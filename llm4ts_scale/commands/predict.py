"""`llm4ts-scale predict RUN_DIR --data FILE --out forecast.csv|.parquet [--plot forecast.png] [--backtest]`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from llm4ts_scale.inference.predict import predict_file

    predict_file(args.run_dir, args.data, args.out, plot=args.plot, backtest_split=args.backtest)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="forecast the steps after a history with a trained run",
                                   description=__doc__)
    parser.add_argument("run_dir", help="a finished run directory (or its export/ directory)")
    parser.add_argument("--data", required=True, help="CSV/Parquet history with the training columns")
    parser.add_argument("--out", required=True, help="forecast.csv or forecast.parquet")
    parser.add_argument("--plot", default=None, help="also draw history + forecast to this PNG")
    parser.add_argument("--backtest", action="store_true",
                        help="forecast the data's test split in H-step blocks, next to the actual values")
    parser.set_defaults(handler=run)
