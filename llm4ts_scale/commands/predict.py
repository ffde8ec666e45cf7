"""`llm4ts-scale predict RUN_DIR --data FILE --out forecast.csv|.parquet [--future FILE] [--quantiles Q ...]
[--plot forecast.png] [--backtest]`.

The forecast of the H steps after the history in FILE (the model's layout: a wide table, or a long one whose
every id is forecast), with the quantiles of the model's conformal intervals next to the point forecast
(`<target>_q0.1`, ...; with `calibration: adaptive`, each series' spread as it stood at the end of the test split).
A model trained with known covariates needs their future values: --future FILE holds
them for the H steps after the history (the time column, the id column for long data, the known covariates)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from llm4ts_scale.inference.predict import predict_file

    predict_file(args.run_dir, args.data, args.out, plot=args.plot, backtest_split=args.backtest,
                 future_path=args.future, quantiles=args.quantiles)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="forecast the steps after a history with a trained run",
                                   description=__doc__)
    parser.add_argument("run_dir", help="a finished run directory (or its export/ directory)")
    parser.add_argument("--data", required=True, help="CSV/Parquet history with the training columns")
    parser.add_argument("--out", required=True, help="forecast.csv or forecast.parquet")
    parser.add_argument("--future", default=None, help="CSV/Parquet with the known covariates' values over the H "
                                                       "future steps (models trained with data.covariates.known)")
    parser.add_argument("--quantiles", nargs="+", type=float, default=None, metavar="Q",
                        help="quantile levels in (0, 1) (default: the run's, e.g. 0.1 0.5 0.9)")
    parser.add_argument("--plot", default=None, help="also draw history + forecast (80 %% interval shaded) to this PNG")
    parser.add_argument("--backtest", action="store_true",
                        help="forecast the data's test split in H-step blocks, next to the actual values")
    parser.set_defaults(handler=run)
