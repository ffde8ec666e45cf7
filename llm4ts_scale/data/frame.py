"""Read a table of series and refuse bad input, in either of two layouts (`Schema.format`):

- wide (Time-Series-Library style): a `date` column plus numeric columns, every column a channel of one
  series (or, with covariates, the targets next to their drivers);
- long (a panel, as neuralforecast, AutoGluon and Chronos take it): columns id, timestamp, target (names
  configurable) and optional covariate columns, many series of their own lengths and start dates.

Every check names the column and row (and the series) so the user can fix the file; `fill="ffill"` is the
one repair offered (forward-fill NaN/inf, within each series). Used by `prepare` and by predict on new
files, so the two see the same rules.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
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


def _parse_dates(column: pd.Series, name: str, is_csv: bool, column_name: str = DATE_COLUMN) -> np.ndarray:
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
            f"column {column_name!r} has an unparseable or missing timestamp {column.iloc[row]!r} at "
            f"{_where(row, name, is_csv)}; "
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


def load_frame(path: str | Path, fill: str = "none", time_column: str = DATE_COLUMN) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(timestamps datetime64[ns] [N], values float64 [N, C], channel names), all checks applied.

    Checks: a `date` column, parseable and strictly increasing timestamps (no duplicates),
    numeric channels, no NaN/inf unless `fill="ffill"`.
    """
    check_fill(fill)
    path = Path(path)
    return frame_arrays(read_table(path), path.name, fill, is_csv=path.suffix.lower() == ".csv", time_column=time_column)


def frame_arrays(df: pd.DataFrame, name: str = "the DataFrame", fill: str = "none",
                 is_csv: bool = False, time_column: str = DATE_COLUMN) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`load_frame`'s checks on a table already in memory; a DatetimeIndex stands for the time column
    (`date` unless data.time_column names another)."""
    check_fill(fill)
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{name} is a {type(df).__name__}, not a pandas DataFrame; pass a DataFrame with a "
                        f"{time_column!r} column (or a DatetimeIndex) and the training columns")
    if time_column not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.rename_axis(time_column).reset_index()
    if time_column not in df.columns:
        shown = ", ".join(map(str, df.columns[:8])) + (", ..." if len(df.columns) > 8 else "")
        raise UserError(
            f"{name} has no {time_column!r} column (columns: {shown}); Time-Series-Library data needs a {time_column!r} "
            "column of timestamps (a long table of many series: set data.format=long)"
        )
    columns = [str(c) for c in df.columns if c != time_column]
    if not columns:
        raise UserError(f"{name} has only a {time_column!r} column; add at least one numeric column")
    if len(df) == 0:
        raise UserError(f"{name} has a header but no data rows")
    if len(set(columns)) != len(columns):
        raise UserError(f"{name} has duplicate column names; give every column a distinct name")
    timestamps = _parse_dates(df[time_column], name, is_csv, time_column)
    values = _numeric_values(df, [c for c in df.columns if c != time_column], name, is_csv)
    values = _check_finite(values, columns, fill, name, is_csv)
    _check_order(timestamps, name, is_csv)
    return timestamps, values, columns


# ---------------------------------------------------------------------------------------------- layouts

LONG_TIME_COLUMN = "timestamp"
LONG_TARGET = "target"


@dataclass(frozen=True)
class Schema:
    """Which columns of a table are what (the `data.format`, `id_column`, `time_column`, `target` and
    `covariates` settings). The defaults read a wide table with every column a target, as before."""

    format: str = "auto"
    id_column: str = "id"
    time_column: str | None = None
    target: tuple[str, ...] | None = None  # None: every non-covariate column (wide) / "target" (long)
    known: tuple[str, ...] = ()
    past: tuple[str, ...] = ()

    @classmethod
    def of(cls, data) -> Schema:
        """From a DataConfig (llm4ts_scale/core/config.py)."""
        target = data.target
        return cls(format=data.format, id_column=data.id_column, time_column=data.time_column,
                   target=None if target is None else tuple([target] if isinstance(target, str) else target),
                   known=tuple(data.covariates.known), past=tuple(data.covariates.past))

    @property
    def covariates(self) -> tuple[str, ...]:
        return (*self.known, *self.past)

    def resolve(self, columns) -> str:
        """wide or long: as set, or (auto) long exactly when the table has the id column."""
        if self.format != "auto":
            return self.format
        return "long" if self.id_column in columns else "wide"

    def time(self, layout: str) -> str:
        return self.time_column or (DATE_COLUMN if layout == "wide" else LONG_TIME_COLUMN)

    def identity(self) -> dict:
        """What a prepared store's fingerprint adds for this schema (nothing for the default, so that stores
        prepared before schemas existed keep their fingerprints)."""
        return {} if self == Schema() else {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class Panel:
    """Many series in one table, grouped by series: rows offsets[i]:offsets[i+1] are series ids[i], in time order."""

    ids: list[str]
    offsets: np.ndarray  # int64 [S + 1]
    timestamps: np.ndarray  # datetime64[ns] [N]
    values: np.ndarray  # float64 [N, V]: the target first, then the covariates
    columns: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _require_columns(df: pd.DataFrame, needed: list[tuple[str, str]], name: str) -> None:
    """needed: (column, the setting that names it)."""
    for column, setting in needed:
        if column not in df.columns:
            shown = ", ".join(map(str, df.columns[:8])) + (", ..." if len(df.columns) > 8 else "")
            raise UserError(f"{name} has no column {column!r} (columns: {shown}); name the right one with {setting}")


def panel_arrays(df: pd.DataFrame, schema: Schema, name: str = "the DataFrame", fill: str = "none",
                 is_csv: bool = False) -> Panel:
    """A long table (id, timestamp, target, covariates) as a Panel, every check applied: the columns exist and
    are numeric, (id, timestamp) pairs are unique, each series' rows come in time order, no NaN unless `fill`."""
    check_fill(fill)
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{name} is a {type(df).__name__}, not a pandas DataFrame; pass a long table with columns "
                        f"{schema.id_column}, {schema.time('long')}, {(schema.target or (LONG_TARGET,))[0]}")
    time_col = schema.time("long")
    target = (schema.target or (LONG_TARGET,))[0]
    _require_columns(df, [(schema.id_column, "data.id_column"), (time_col, "data.time_column"), (target, "data.target"),
                          *[(c, "data.covariates") for c in schema.covariates]], name)
    if len(df) == 0:
        raise UserError(f"{name} has a header but no data rows")
    raw_ids = df[schema.id_column]
    missing = np.flatnonzero(pd.isna(raw_ids).to_numpy())
    if len(missing):
        raise UserError(f"column {schema.id_column!r} has a missing id at {_where(int(missing[0]), name, is_csv)}; "
                        "give every row its series id")
    codes, uniques = pd.factorize(raw_ids.astype(str), sort=False)
    order = np.argsort(codes, kind="stable")  # grouped by series, each in file order
    timestamps = _parse_dates(df[time_col], name, is_csv, time_col)
    columns = [target, *schema.covariates]
    values = _numeric_values(df, columns, name, is_csv)
    ts, group = timestamps[order], codes[order]
    steps = np.diff(ts.view(np.int64))
    bad = np.flatnonzero((steps <= 0) & (group[1:] == group[:-1]))
    if len(bad):
        first, second = int(order[bad[0]]), int(order[bad[0] + 1])
        series = uniques[group[bad[0]]]
        if steps[bad[0]] == 0:
            raise UserError(f"duplicate ({schema.id_column}, {time_col}) ({series!r}, {pd.Timestamp(ts[bad[0]])}) at "
                            f"{_where(first, name, is_csv)} and row {second}; remove or aggregate the duplicates")
        raise UserError(f"series {series!r} has unsorted timestamps: {pd.Timestamp(ts[bad[0] + 1])} at "
                        f"{_where(second, name, is_csv)} comes after {pd.Timestamp(ts[bad[0]])} at row {first}; sort "
                        f"the file by {schema.id_column} and {time_col}")
    values = values[order]
    finite = np.isfinite(values)
    if not finite.all():
        if fill == "ffill":
            values = pd.DataFrame(np.where(finite, values, np.nan)).groupby(group).ffill().to_numpy()
            finite = np.isfinite(values)
        if not finite.all():
            r, j = _first_bad(finite)
            row, series = int(order[r]), uniques[group[r]]
            if fill == "ffill":
                raise UserError(f"column {columns[j]!r} of series {series!r} starts with a missing value at "
                                f"{_where(row, name, is_csv)}, which forward-fill cannot fill; drop or fill those rows")
            kind = "missing value (NaN)" if np.isnan(values[r, j]) else "infinite value"
            raise UserError(f"column {columns[j]!r} of series {series!r} has a {kind} at {_where(row, name, is_csv)}; "
                            "fix the file or pass --fill ffill to forward-fill within each series")
    counts = np.bincount(group, minlength=len(uniques))
    return Panel(ids=[str(u) for u in uniques], offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                 timestamps=ts, values=values, columns=columns)
