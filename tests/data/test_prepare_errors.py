"""Bad input to `llm4ts-scale prepare`/`evaluate`: exit status 2, one line naming the problem,
no traceback, and no output (nor temp) directory left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEADER = "date,a,b\n"


def _rows(n=30, start="2020-01-01", freq="h"):
    import pandas as pd

    stamps = pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M:%S")
    return [f"{t},{i}.5,{2 * i}" for i, t in enumerate(stamps)]


def _csv(tmp_path: Path, lines: list[str], header: str = HEADER, name="series.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "llm4ts-scale"
    return [str(script)] if script.exists() else [sys.executable, "-m", "llm4ts_scale.cli"]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLM4TS_CACHE": str(tmp_path / "cache"), "LLM4TS_DATA_PATH": str(tmp_path / "none")}
    return subprocess.run(_cli() + list(args), capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)


def _assert_refused(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _assert_nothing_written(parent: Path, out_name: str = "store") -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name == out_name or p.name.startswith(f".{out_name}.tmp")]
    assert leftovers == []


def _bad(rows: list[str], i: int, line: str) -> list[str]:
    rows = list(rows)
    rows[i] = line
    return rows


CASES = {
    "missing date column": (lambda r: [x.split(",", 1)[1] for x in r], "a,b\n", ["no 'date' column"]),
    "non-numeric value": (lambda r: _bad(r, 5, "2020-01-01 05:00:00,abc,10"), HEADER,
                          ["column 'a'", "non-numeric", "'abc'", "row 5", "line 7"]),
    "NaN": (lambda r: _bad(r, 7, "2020-01-01 07:00:00,7.5,"), HEADER,
            ["column 'b'", "missing value (NaN)", "row 7", "--fill ffill"]),
    "inf": (lambda r: _bad(r, 8, "2020-01-01 08:00:00,inf,16"), HEADER, ["column 'a'", "infinite", "row 8"]),
    "unsorted": (lambda r: r[:10] + [r[11], r[10]] + r[12:], HEADER, ["not sorted", "row 11", "sort the file"]),
    "duplicate": (lambda r: r[:10] + [r[9]] + r[11:], HEADER, ["duplicate timestamp", "row 9", "row 10"]),
    "irregular": (lambda r: r[:10] + r[11:], HEADER, ["irregular frequency", "rows 9 and 10", "--freq"]),
    "unparseable date": (lambda r: _bad(r, 4, "yesterday,4.5,8"), HEADER, ["unparseable", "'yesterday'", "row 4"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_csv_is_refused_and_leaves_nothing(tmp_path, case):
    transform, header, needles = CASES[case]
    data = _csv(tmp_path, transform(_rows()), header=header)
    proc = _run(tmp_path, "prepare", str(data), "--out", str(tmp_path / "store"))
    _assert_refused(proc, *needles)
    _assert_nothing_written(tmp_path)


def test_ffill_repairs_nan_and_prepares(tmp_path):
    data = _csv(tmp_path, _bad(_rows(), 7, "2020-01-01 07:00:00,7.5,"))
    proc = _run(tmp_path, "prepare", str(data), "--out", str(tmp_path / "store"), "--fill", "ffill")
    assert proc.returncode == 0, proc.stderr
    from llm4ts_scale.data.store import SeriesStore

    values = SeriesStore(tmp_path / "store").read_values(6, 8, scaled=False)
    assert values[1, 1] == values[0, 1] == 12.0  # row 7 took row 6's value
    leading = _csv(tmp_path, _bad(_rows(), 0, "2020-01-01 00:00:00,,0"), name="lead.csv")
    _assert_refused(_run(tmp_path, "prepare", str(leading), "--out", str(tmp_path / "s2"), "--fill", "ffill"),
                    "column 'a' starts with a missing value", "row 0")
    _assert_nothing_written(tmp_path, "s2")


def test_unknown_split_rule(tmp_path):
    data = _csv(tmp_path, _rows())
    _assert_refused(_run(tmp_path, "prepare", str(data), "--out", str(tmp_path / "store"), "--split", "halves"),
                    "split rule 'halves' is unknown")
    _assert_nothing_written(tmp_path)


def test_ett_rule_on_short_data(tmp_path):
    data = _csv(tmp_path, _rows(), name="ETTh9.csv")  # auto -> ett-hourly, needs 14400 rows
    _assert_refused(_run(tmp_path, "prepare", str(data), "--out", str(tmp_path / "store")),
                    "ett-hourly split needs at least 14400 rows", "--split ratio")
    _assert_nothing_written(tmp_path)


def test_output_dir_with_other_content_is_kept(tmp_path):
    data = _csv(tmp_path, _rows())
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _assert_refused(_run(tmp_path, "prepare", str(data), "--out", str(out)), "exists and holds other content")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store.tmp")]


def test_prepare_succeeds_atomically_and_is_idempotent(tmp_path):
    data = _csv(tmp_path, _rows(100))
    out = tmp_path / "store"
    first = _run(tmp_path, "prepare", str(data), "--out", str(out))
    assert first.returncode == 0, first.stderr
    again = _run(tmp_path, "prepare", str(data), "--out", str(out))  # same source and parameters: reused
    assert again.returncode == 0 and again.stdout == first.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.csv", "store"]


def test_missing_file_and_unknown_name(tmp_path):
    _assert_refused(_run(tmp_path, "prepare", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "store")),
                    "nope.csv does not exist")
    _assert_refused(_run(tmp_path, "evaluate", "--data", "NoSuchSet", "--baseline", "naive"),
                    "'NoSuchSet' not found", "tools/fetch_data.py NoSuchSet", "LLM4TS_DATA_PATH")
    _assert_nothing_written(tmp_path)


def test_split_too_short_for_window(tmp_path, ili_csv):
    proc = _run(tmp_path, "evaluate", "--data", str(ili_csv), "--baseline", "naive", "--seq-len", "36",
                "--pred-len", "200")
    _assert_refused(proc, "the test split is too short for seq_len=36 + pred_len=200", "229 rows")


def test_seasonal_without_period(tmp_path, ili_csv):
    proc = _run(tmp_path, "evaluate", "--data", str(ili_csv), "--baseline", "seasonal", "--seq-len", "36",
                "--pred-len", "24")
    _assert_refused(proc, "seasonal baseline needs --period")
