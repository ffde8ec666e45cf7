"""Read a Time-Series-Library style table (a `date` column plus numeric columns) and refuse bad input.

Every check names the column and row so the user can fix the file; `fill="ffill"` is the one
repair offered (forward-fill NaN/inf). Used by `prepare` and by predict on new CSVs, so the
two see the same rules.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from llm4ts_scale.core.config import Fill, choices
from llm4ts_scale.core.errors import UserError

DATE_COLUMN = "date"
FILL_MODES = choices(Fill)
SUFFIXES = (".csv", ".parquet", ".pq")


def _where(row: int, name: str, is_csv: bool) -> str:
    # Rows are 0-based data rows; in a CSV the header is line 1, so row r is on line r + 2.
    return f"row {row} (line {row + 2} of {name})" if is_csv else f"row {row} of {name}"


def read_table(path: str | Path) -> pd.DataFrame:
    """The raw table from a CSV or Parquet file; UserError for unreadable or unsupported files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"data file {path} has suffix {path.suffix!r}; expected a .csv or .parquet file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"data file {path} is empty; expected a header with a 'date' column and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {path}: {first}") from None


def _parse_dates(column: pd.Series, name: str, is_csv: bool) -> np.ndarray:
    with warnings.catch_warnings():  # pandas' format-guessing warnings would break the one-line error
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(column)
        except (ValueError, TypeError, OverflowError):
            parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    missing = np.flatnonzero(pd.isna(parsed).to_numpy())
    if len(missing):
        row = int(missing[0])
        raise UserError(
            f"column 'date' has an unparseable or missing timestamp {column.iloc[row]!r} at {_where(row, name, is_csv)}; "
            "fix it (ISO format such as 2016-07-01 00:00:00)"
        )
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        index = index.tz_localize(None)  # keep local wall-clock time for calendar features
    return index.as_unit("ns").to_numpy()


def _check_order(ts: np.ndarray, name: str, is_csv: bool) -> None:
    steps = np.diff(ts.view(np.int64))
    bad = np.flatnonzero(steps <= 0)
    if not len(bad):
        return
    row = int(bad[0]) + 1
    shown = pd.Timestamp(ts[row])
    if steps[row - 1] == 0:
        raise UserError(
            f"duplicate timestamp {shown} at {_where(row - 1, name, is_csv)} and row {row}; "
            "remove or aggregate the duplicates"
        )
    raise UserError(
        f"timestamps are not sorted: {shown} at {_where(row, name, is_csv)} comes before the previous row's "
        f"{pd.Timestamp(ts[row - 1])}; sort the file by date"
    )


def _numeric_values(df: pd.DataFrame, columns: list[str], name: str, is_csv: bool) -> np.ndarray:
    values = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        raw = df[col]
        if pd.api.types.is_bool_dtype(raw):
            raise UserError(f"column {col!r} holds booleans ({raw.iloc[0]!r} at {_where(0, name, is_csv)}); use numbers")
        if not pd.api.types.is_numeric_dtype(raw):
            coerced = pd.to_numeric(raw, errors="coerce")
            bad = np.flatnonzero((coerced.isna() & raw.notna()).to_numpy())
            if len(bad):
                row = int(bad[0])
                raise UserError(
                    f"column {col!r} has a non-numeric value {raw.iloc[row]!r} at {_where(row, name, is_csv)}; "
                    "fix the value or drop the column"
                )
            raw = coerced
        values[:, j] = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def _first_bad(ok: np.ndarray) -> tuple[int, int]:
    """(row, column) of the earliest False cell (np.nonzero is row-major)."""
    rows, cols = np.nonzero(~ok)
    return int(rows[0]), int(cols[0])


def _check_finite(values: np.ndarray, columns: list[str], fill: str, name: str, is_csv: bool) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.all():
        return values
    if fill == "ffill":
        filled = pd.DataFrame(np.where(finite, values, np.nan)).ffill().to_numpy()
        if np.isfinite(filled).all():
            return filled
        row, j = _first_bad(np.isfinite(filled))
        raise UserError(
            f"column {columns[j]!r} starts with a missing value at {_where(row, name, is_csv)}, which forward-fill "
            "cannot fill; drop the leading rows or fill them"
        )
    row, j = _first_bad(finite)
    kind = "missing value (NaN)" if np.isnan(values[row, j]) else "infinite value"
    raise UserError(
        f"column {columns[j]!r} has a {kind} at {_where(row, name, is_csv)}; fix the file or pass --fill ffill "
        "to forward-fill"
    )


def check_fill(fill: str) -> None:
    if fill not in FILL_MODES:
        raise UserError(f"fill mode {fill!r} is unknown; use {' or '.join(FILL_MODES)}")


def load_frame(path: str | Path, fill: str = "none") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(timestamps datetime64[ns] [N], values float64 [N, C], channel names), all checks applied.

    Checks: a `date` column, parseable and strictly increasing timestamps (no duplicates),
    numeric channels, no NaN/inf unless `fill="ffill"`.
    """
    check_fill(fill)
    path = Path(path)
    return frame_arrays(read_table(path), path.name, fill, is_csv=path.suffix.lower() == ".csv")


def frame_arrays(df: pd.DataFrame, name: str = "the DataFrame", fill: str = "none",
                 is_csv: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`load_frame`'s checks on a table already in memory; a DatetimeIndex stands for the `date` column."""
    check_fill(fill)
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{name} is a {type(df).__name__}, not a pandas DataFrame; pass a DataFrame with a "
                        "'date' column (or a DatetimeIndex) and the training columns")
    if DATE_COLUMN not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.rename_axis(DATE_COLUMN).reset_index()
    if DATE_COLUMN not in df.columns:
        shown = ", ".join(map(str, df.columns[:8])) + (", ..." if len(df.columns) > 8 else "")
        raise UserError(
            f"{name} has no 'date' column (columns: {shown}); Time-Series-Library data needs a 'date' column of timestamps"
        )
    columns = [str(c) for c in df.columns if c != DATE_COLUMN]
    if not columns:
        raise UserError(f"{name} has only a 'date' column; add at least one numeric column")
    if len(df) == 0:
        raise UserError(f"{name} has a header but no data rows")
    if len(set(columns)) != len(columns):
        raise UserError(f"{name} has duplicate column names; give every column a distinct name")
    timestamps = _parse_dates(df[DATE_COLUMN], name, is_csv)
    values = _numeric_values(df, [c for c in df.columns if c != DATE_COLUMN], name, is_csv)
    values = _check_finite(values, columns, fill, name, is_csv)
    _check_order(timestamps, name, is_csv)
    return timestamps, values, columns
