"""Print (or run, with --run) the training commands of the LLM4TS paper grid.

    python tools/paper_sweep.py                                  # every dataset x setting x horizon
    python tools/paper_sweep.py --datasets ETTh1 --settings 10pct --horizons 96,192 --run

One config per (dataset, setting) lives in configs/paper/; the horizon and run_dir are overrides,
so every command is reproducible from the line printed. Combinations whose few-shot training split
is shorter than look-back + horizon (e.g. ETTh1 5% at 720, a '-' in the paper) are printed as
`# skip` comments instead of commands that would fail.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llm4ts_scale.core.config import RunConfig, load_config
from llm4ts_scale.core.errors import UserError, exit_on_user_error
from llm4ts_scale.data.registry import lookup
from llm4ts_scale.data.splits import split_borders, split_rows

REPO = Path(__file__).resolve().parents[1]
PAPER_DIR = Path("configs") / "paper"  # relative to the repo root, as printed in the commands
HORIZONS = (96, 192, 336, 720)
SETTINGS = {100: "full", 10: "10pct", 5: "5pct"}


@dataclass
class Job:
    config_path: Path  # relative to the repo root
    dataset: str
    setting: str
    pred_len: int
    command: list[str]
    skip_reason: str | None = None


def setting_name(config: RunConfig) -> str:
    return SETTINGS.get(config.data.few_shot_percent, f"{config.data.few_shot_percent}pct")


def train_windows(config: RunConfig, pred_len: int) -> int:
    """Training windows per channel for this horizon, from the registry's published row count."""
    info = lookup(config.data.path)
    borders = split_borders(info.split, info.rows)
    start, end = split_rows(borders, "train", config.data.seq_len, config.data.few_shot_percent)
    return end - start - config.data.seq_len - pred_len + 1


def plan(datasets: list[str] | None, settings: list[str] | None, horizons: list[int], *, ds: str,
         runs_dir: str, launch_args: list[str], extra: list[str]) -> list[Job]:
    wanted = {lookup(name).name for name in datasets} if datasets else None
    jobs: list[Job] = []
    paths = sorted((REPO / PAPER_DIR).glob("*.yaml"))
    if not paths:
        raise UserError(f"no configs in {REPO / PAPER_DIR}; run from a checkout of the repository")
    for path in paths:
        config = load_config(path)
        dataset, setting = lookup(config.data.path).name, setting_name(config)
        if (wanted and dataset not in wanted) or (settings and setting not in settings):
            continue
        rel = path.relative_to(REPO)
        for horizon in horizons:
            run_dir = f"{runs_dir}/{path.stem}_{horizon}"
            command = ["accelerate", "launch", *launch_args, "launch/train.py", "--ds", f"ds_configs/{ds}.json",
                       "--config", str(rel), f"data.pred_len={horizon}", f"run_dir={run_dir}", *extra]
            windows = train_windows(config, horizon)
            reason = None if windows > 0 else (
                f"{config.data.few_shot_percent}% of {dataset}'s training split is shorter than "
                f"L+H={config.data.seq_len + horizon}")
            jobs.append(Job(rel, dataset, setting, horizon, command, reason))
    if not jobs:
        raise UserError("no paper config matches --datasets/--settings; "
                        f"settings are {', '.join(SETTINGS.values())}, datasets as in configs/paper/")
    return jobs


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--horizons {text!r} must be comma-separated integers, e.g. 96,192") from None
    if not values or min(values) <= 0:
        raise UserError(f"--horizons {text!r} must hold positive integers, e.g. 96,192")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paper_sweep.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=None, help="comma-separated, e.g. ETTh1,Weather (default: all)")
    parser.add_argument("--settings", default=None, help="comma-separated of full,10pct,5pct (default: all)")
    parser.add_argument("--horizons", default=",".join(map(str, HORIZONS)), help="default: 96,192,336,720")
    parser.add_argument("--ds", default="zero2", help="DeepSpeed config in ds_configs/ (default: zero2)")
    parser.add_argument("--runs-dir", default="runs/paper", help="parent of the run directories")
    parser.add_argument("--launch-args", default="", help="extra `accelerate launch` options, quoted")
    parser.add_argument("--run", action="store_true", help="run the commands one after another")
    parser.add_argument("--keep-going", action="store_true", help="with --run, continue after a failure")
    parser.add_argument("overrides", nargs="*", help="key=value appended to every command")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    split = lambda text: [v.strip() for v in text.split(",") if v.strip()] if text else None  # noqa: E731
    jobs = plan(split(args.datasets), split(args.settings), _int_list(args.horizons), ds=args.ds,
                runs_dir=args.runs_dir.rstrip("/"), launch_args=shlex.split(args.launch_args), extra=args.overrides)
    failed = 0
    for job in jobs:
        if job.skip_reason:
            print(f"# skip {job.config_path.stem} H={job.pred_len}: {job.skip_reason}", flush=True)
            continue
        print(shlex.join(job.command), flush=True)
        if args.run:
            code = subprocess.run(job.command, cwd=REPO).returncode
            if code != 0:
                failed += 1
                print(f"# failed with exit status {code}: {job.config_path.stem} H={job.pred_len}",
                      file=sys.stderr, flush=True)
                if not args.keep_going:
                    return code
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
