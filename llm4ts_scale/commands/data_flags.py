"""The flags that say how to read a data file given on the command line (`prepare`, `evaluate --baseline`): its
layout and which columns are what, as data.format / id_column / time_column / target / covariates say in a run."""

from __future__ import annotations


def add_data_arguments(parser) -> None:
    parser.add_argument("--format", default="auto", choices=("auto", "wide", "long"),
                        help="wide: a date column + one column per channel; long: rows of id, timestamp, target "
                             "(many series); auto: long when the table has the id column")
    parser.add_argument("--id-column", default="id", help="long format: the series id column (default id)")
    parser.add_argument("--time-column", default=None, help="the time column (default date, or timestamp when long)")
    parser.add_argument("--target", nargs="+", default=None,
                        help="the column(s) to forecast (default: all but the covariates; long: target)")
    parser.add_argument("--known", nargs="+", default=[], metavar="COLUMN",
                        help="covariates known over the forecast horizon too (calendar, prices, planned events)")
    parser.add_argument("--past", nargs="+", default=[], metavar="COLUMN", help="covariates known only up to the origin")


def schema_of(args):
    """The data/frame.py:Schema the flags describe (checked like a run config's data section)."""
    from llm4ts_scale.core.config import config_from_dict
    from llm4ts_scale.data.frame import Schema

    target = args.target[0] if args.target and len(args.target) == 1 else args.target
    data = {"format": args.format, "id_column": args.id_column, "time_column": args.time_column, "target": target,
            "covariates": {"known": list(args.known), "past": list(args.past)}}
    return Schema.of(config_from_dict({"data": data}).data)  # the run config's checks, one line each
