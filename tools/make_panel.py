"""Write a long-format panel file to try the panel path on (llm4ts_scale/data/panels.py).

    python tools/make_panel.py demo --out runs/panels/demo.parquet             # every ETTh1 / ILI column its own id
    python tools/make_panel.py synthetic --series 10000 --out runs/panels/k10000.parquet
    python tools/make_panel.py synthetic --series 200 --driver 2.0 --out runs/panels/driver.csv   # a planted known driver

Then e.g. `python launch/train.py data.path=runs/panels/demo.parquet data.format=long data.seq_len=96
data.pred_len=24 data.few_shot_percent=100`. The demo reads ETTh1.csv and national_illness.csv from
$LLM4TS_DATA_PATH (default ../shared/data); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from llm4ts_scale.data.panels import demo_panel, synthetic_panel


def write(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    print(f"wrote {out}: {frame['id'].nunique()} series, {len(frame)} rows")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("demo", "synthetic"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--min-length", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=600)
    parser.add_argument("--driver", type=float, default=None, help="plant a known covariate with this coefficient")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "synthetic":
        write(synthetic_panel(args.series, min_length=args.min_length, max_length=args.max_length, seed=args.seed,
                              driver=args.driver), args.out)
        return 0
    data = Path(os.environ.get("LLM4TS_DATA_PATH", "../shared/data").split(os.pathsep)[0])
    ett = demo_panel(pd.read_csv(data / "ETTh1.csv"), "ETTh1", seed=args.seed)
    write(ett, args.out)
    ili = demo_panel(pd.read_csv(data / "national_illness.csv"), "ILI", seed=args.seed)
    write(ili, args.out.with_name(args.out.stem + "-ili" + args.out.suffix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
