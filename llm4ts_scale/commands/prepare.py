"""`llm4ts-scale prepare DATA --out DIR`: validate a CSV/Parquet series and write an Arrow store.

DATA is a file or a dataset NAME (looked up in $LLM4TS_DATA_PATH and the data cache): a wide table (a date
column, one column per channel) or a long one (id, timestamp, target and covariate columns: a panel of many
series, each split and scaled on its own).
The store appears atomically; bad input exits 2 with one line and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json

from llm4ts_scale.commands.data_flags import add_data_arguments, schema_of
from llm4ts_scale.core.config import Fill, choices


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="validate a CSV/Parquet series into an Arrow store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="CSV/Parquet file with a 'date' column, or a dataset NAME")
    p.add_argument("--out", required=True, help="store directory to create (must not exist, or be empty)")
    p.add_argument("--split", default="auto",
                   help="split rule: auto (ETT rules for ETTh*/ETTm* names, else ratio), ett-hourly, ett-minute, "
                        "ratio (70/10/20)")
    p.add_argument("--freq", default=None, help="pandas frequency alias overriding the inferred one (e.g. h, 15min)")
    p.add_argument("--fill", default="none", choices=choices(Fill),
                   help="ffill: forward-fill NaN/inf instead of refusing them")
    p.add_argument("--name", default=None, help="dataset name (default: the file name without suffix)")
    add_data_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from llm4ts_scale.core.errors import UserError
    from llm4ts_scale.data.prepare import prepare
    from llm4ts_scale.data.sources import find_data_file
    from llm4ts_scale.data.splits import resolve_split_rule

    resolve_split_rule(args.split, "")  # an unknown rule fails before the file is read
    schema = schema_of(args)
    source = Path(args.data)
    if not source.is_file():
        found = find_data_file(args.data) if os.sep not in args.data else None
        if found is None:
            raise UserError(f"data file {args.data} does not exist (nor as a dataset name in LLM4TS_DATA_PATH or "
                            "the data cache); run `python tools/fetch_data.py NAME` or give a path")
        source = found
    store = prepare(source, args.out, split=args.split, freq=args.freq, fill=args.fill, name=args.name, schema=schema)
    facts = {"store": str(store.path), "name": store.name, "layout": store.layout, "rows": store.n_rows,
             "channels": store.n_channels, "series": store.n_series, "targets": store.targets[:8],
             "covariates": {"known": store.known, "past": store.past}, "freq": store.freq,
             "calendar_attrs": store.calendar_attrs, "split_rule": store.split_rule}
    if store.layout == "wide":
        facts["split_rows"] = {k: end - start for k, (start, end) in store.borders.items()}
    else:
        facts["series_rows"] = {k: store.meta["series"][k] for k in ("shortest", "longest")}
    print(json.dumps({**facts, "fingerprint": store.fingerprint}))
    return 0
