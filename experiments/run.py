"""One runner for every published experiment: cells are data (experiments/<name>.yaml), results are small JSON files.

A cell is a real `launch/train.py` run (kind `train`, the default) or a real `llm4ts-scale evaluate` run (kind
`evaluate`). A train cell's arguments are, in order: the file's `common`, its `group`'s list, its own `args`,
`model.aligned_from=<runs>/<aligned_from>` when it starts from another cell's aligned backbone (it waits for that
cell, which runs again if its run directory is gone), `run_dir=<runs>/<cell>`, and the file's `tail`. An evaluate
cell's are its `args` and `--out <results>/<cell>/metrics.json`.

A finished cell keeps its small files (run.json, metrics.json, each stage's history and metrics; never weights)
under <results>/<cell>/, and that is what makes it finished: the runner skips it next time, so a killed sweep goes
on where it stopped. The tables are rendered from the kept files alone (experiments/tables.py, chosen by the file's
`table`), so `--report-only` rebuilds every published table without training anything.

    python experiments/run.py experiments/sweep.yaml                    # every cell not finished yet, then tables
    python experiments/run.py experiments/sweep.yaml --only etth1-k6-a1 --jobs 2
    python experiments/run.py experiments/accuracy.yaml --report-only   # results/accuracy/table.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tables  # experiments/tables.py, beside this file
import yaml

from llm4ts_scale.core.errors import UserError, exit_on_user_error
from llm4ts_scale.core.io import atomic_write_text
from llm4ts_scale.core.stages import STAGE_NAMES

REPO = Path(__file__).resolve().parents[1]
KINDS = {"train": "run.json", "evaluate": "metrics.json"}  # kind -> the kept file that marks a cell finished


@dataclass
class Cell:
    """One run of an experiment."""

    name: str
    args: list[str] = field(default_factory=list)
    kind: str = "train"
    group: str | None = None
    aligned_from: str | None = None
    note: str = ""


@dataclass
class Experiment:
    """An experiment file, checked on load: every group and aligned_from a cell names exists."""

    path: Path
    results: Path
    runs: Path
    table: str
    cells: dict[str, Cell]
    common: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.table not in tables.RENDERERS:
            raise UserError(f"{self.path}: table {self.table!r} is not a renderer in experiments/tables.py; use one of "
                            f"{', '.join(tables.RENDERERS)}")
        for cell in self.cells.values():
            if cell.kind not in KINDS:
                raise UserError(f"{self.path}: cell {cell.name} has kind {cell.kind!r}; use one of {', '.join(KINDS)}")
            if cell.group is not None and cell.group not in self.groups:
                raise UserError(f"{self.path}: cell {cell.name} names group {cell.group!r}, which `groups` lacks; "
                                f"add it or use one of {', '.join(self.groups) or '(none)'}")
            if cell.aligned_from is not None and cell.aligned_from not in self.cells:
                raise UserError(f"{self.path}: cell {cell.name} starts from cell {cell.aligned_from!r}, which the "
                                "file does not define; fix its aligned_from")

    def done(self, name: str) -> bool:
        return (self.results / name / KINDS[self.cells[name].kind]).is_file()

    def command(self, name: str) -> list[str]:
        cell = self.cells[name]
        if cell.kind == "evaluate":
            return [sys.executable, "-m", "llm4ts_scale.cli", "evaluate", *cell.args,
                    "--out", str(self.results / name / "metrics.json")]
        start = [f"model.aligned_from={self.runs / cell.aligned_from}"] if cell.aligned_from else []
        return [sys.executable, "launch/train.py", *self.common, *self.groups.get(cell.group, []), *cell.args,
                *start, f"run_dir={self.runs / name}", *self.tail]

    def aligned(self, name: str) -> bool:
        """Whether the cell's run directory holds its aligned backbone (what aligned_from cells start from)."""
        return (self.runs / name / "align" / "export" / "config.json").is_file()


def load_experiment(path: str | Path, results: str | None = None, runs: str | None = None) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file {path} not found; pass one of experiments/*.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"results", "runs", "table", "cells", "common", "groups", "tail", "report"}
    if unknown or not {"results", "runs", "table", "cells"} <= set(spec):
        raise UserError(f"{path}: an experiment has results, runs, table and cells (and may have common, groups, "
                        f"tail, report); found {', '.join(sorted(spec))}")
    try:
        cells = {name: Cell(name, **(body or {})) for name, body in spec.pop("cells").items()}
    except TypeError as err:
        raise UserError(f"{path}: a cell has a key it cannot take ({err}); a cell has args, kind, group, "
                        "aligned_from and note") from None
    return Experiment(path=path, results=(REPO / (results or spec.pop("results"))).resolve(),
                      runs=(REPO / (runs or spec.pop("runs"))).resolve(), cells=cells,
                      **{k: v for k, v in spec.items() if k not in ("results", "runs")})


def keep_small_files(run_dir: Path, dest: Path) -> None:
    """Copy a run's small files to `dest` (stage files as `<stage>_<name>`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "metrics.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    for stage in STAGE_NAMES:
        for name in ("history.json", "metrics.json"):
            if (run_dir / stage / name).is_file():
                shutil.copy2(run_dir / stage / name, dest / f"{stage}_{name}")


def keep(exp: Experiment, name: str, log: Path) -> None:
    if exp.cells[name].kind == "train":
        keep_small_files(exp.runs / name, exp.results / name)
        return
    summary = [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
    atomic_write_text(exp.results / name / "summary.json", json.dumps(json.loads(summary), indent=1) + "\n")


def with_sources(exp: Experiment, names: list[str]) -> list[str]:
    """`names`, after the cells they start from whose aligned backbone is not in the runs directory."""
    needed = [exp.cells[n].aligned_from for n in names
              if exp.cells[n].aligned_from and not exp.aligned(exp.cells[n].aligned_from)]
    return list(dict.fromkeys([*needed, *names]))


def run_cells(exp: Experiment, names: list[str], jobs: int) -> list[str]:
    """Run the cells, `jobs` at a time (one torch thread each when > 1); returns the names that failed."""
    exp.runs.mkdir(parents=True, exist_ok=True)
    pending, active, failed = with_sources(exp, names), [], []
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if jobs > 1 else {})}
    while pending or active:
        running = {name for name, *_ in active}
        ready = [n for n in pending if exp.cells[n].aligned_from is None
                 or (exp.aligned(exp.cells[n].aligned_from) and exp.cells[n].aligned_from not in running)]
        if not ready and not active:  # what they start from failed or never aligned
            failed += pending
            print(f"not run (their source has no aligned backbone): {', '.join(pending)}", flush=True)
            break
        for name in ready[:max(jobs - len(active), 0)]:
            pending.remove(name)
            cmd = exp.command(name)
            (exp.results / name).mkdir(parents=True, exist_ok=True)
            log = open(exp.runs / f"{name}.log", "w")
            print("$", shlex.join(cmd), f"> {log.name}", flush=True)
            active.append((name, time.time(), subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                               env=env), log))
        time.sleep(5)
        for item in list(active):
            name, started, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                print(f"{name} failed (exit {proc.returncode}); see {log.name}", flush=True)
                failed.append(name)
                continue
            keep(exp, name, Path(log.name))
            print(f"{name}: done in {(time.time() - started) / 60:.1f} min", flush=True)
    return failed


def publish(exp: Experiment) -> None:
    """Render the experiment's tables from the kept files, write them next to the cells and print them."""
    for filename, text in tables.RENDERERS[exp.table](exp).items():
        atomic_write_text(exp.results / filename, text + "\n")
        print(text, flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="an experiment file, e.g. experiments/sweep.yaml")
    parser.add_argument("--only", nargs="+", default=None, help="cell names to run (default: every unfinished one)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each when > 1)")
    parser.add_argument("--report-only", action="store_true", help="render the tables from the kept files only")
    parser.add_argument("--results-dir", default=None, help="where cells' small files and tables go (default: the file's)")
    parser.add_argument("--runs-dir", default=None, help="where the run directories go (default: the file's)")
    args = parser.parse_args(argv)
    exp = load_experiment(args.experiment, args.results_dir, args.runs_dir)
    failed = []
    if not args.report_only:
        unknown = sorted(set(args.only or []) - set(exp.cells))
        if unknown:
            raise UserError(f"unknown cell(s) {', '.join(unknown)} in {exp.path}; see its `cells`")
        names = [n for n in exp.cells if (not args.only or n in args.only) and not exp.done(n)]
        failed = run_cells(exp, names, args.jobs)
    publish(exp)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
