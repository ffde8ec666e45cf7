"""Forecast the H steps after a history with an exported model, in the data's original units, with the
quantiles of its conformal intervals (llm4ts_scale/stats/conformal.py; with adaptive calibration each series
starts from its width factor at the end of the test split, llm4ts_scale/stats/adaptive.py).

Wide data: a `date` column and the training columns (targets and covariates), one history per table. Long
data: rows of id, timestamp, target (and covariates), every id its own history, forecast together. A model
with known covariates also needs their values over the H future steps (`future`: the same layout, those
timestamps). Series of a panel seen in training are standardized with their training statistics; a new id
with its own history's (the forecast does not depend on it: each window is normalized anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm4ts_scale.core.config import check_quantiles
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_bytes, atomic_writer
from llm4ts_scale.data.calendar import calendar_marks
from llm4ts_scale.data.frame import Schema, frame_arrays, load_frame, panel_arrays, read_table
from llm4ts_scale.stats.conformal import window_scale


@dataclass
class Forecast:
    """One history's forecast: H future timestamps, point [H, C] and quantiles [H, C, Q] (None without
    intervals), in original units, for the model's target columns."""

    timestamps: pd.DatetimeIndex
    point: np.ndarray
    quantiles: np.ndarray | None = None


def future_timestamps(last: np.datetime64, freq: str, horizon: int) -> pd.DatetimeIndex:
    return pd.date_range(start=pd.Timestamp(last), periods=horizon + 1, freq=freq)[1:]


def resolve_levels(loaded, quantiles) -> list[float] | None:
    """The quantile levels to forecast: as asked, else the run's; None for an export without intervals."""
    if quantiles is None:
        return check_quantiles(loaded.config.quantiles) if loaded.conformal is not None else None
    levels = check_quantiles(list(quantiles), "--quantiles")
    if loaded.conformal is None:
        raise UserError(f"{loaded.export_dir} was exported without prediction intervals (an older version); "
                        "retrain it to get quantiles, or drop --quantiles")
    return levels


def forecast_rows(loaded, x: np.ndarray, marks: np.ndarray, known: np.ndarray | None = None,
                  past: np.ndarray | None = None, levels=None, batch_size: int = 1024,
                  series: np.ndarray | None = None):
    """Standardized look-backs x [R, L] (marks [R, L, A], covariates known [R, L + H, K], past [R, L, K]) ->
    (point [R, H], quantiles [R, H, Q] or None), standardized, `batch_size` rows at a time. `series` [R]: each row's
    series in the training store (-1: unknown), whose adaptive width factor at the end of the known data the
    intervals start from (llm4ts_scale/stats/conformal.py:ConformalTable.stream_state)."""
    if levels is not None and series is None:
        series = np.full(len(x), -1)
    state = loaded.conformal.stream_state(series) if levels is not None else None
    points, quants = [], []
    for i in range(0, len(x), batch_size):
        part = slice(i, i + batch_size)
        xb = torch.from_numpy(np.ascontiguousarray(x[part], dtype=np.float32))
        pred = loaded.forecast(xb, torch.from_numpy(np.ascontiguousarray(marks[part], dtype=np.int64)),
                               *(torch.from_numpy(np.ascontiguousarray(c[part], dtype=np.float32)) if c is not None
                                 else None for c in (known, past))).cpu()
        points.append(pred.numpy())
        if levels is not None:
            adapt = (state[0][part], state[1][part]) if state is not None else None
            quants.append(loaded.conformal.quantiles(pred.double(), window_scale(xb), levels, adapt).numpy())
    return np.concatenate(points), (np.concatenate(quants) if levels is not None else None)


def forecast_scaled(loaded, x: np.ndarray, marks: np.ndarray | None, batch_size: int = 1024) -> np.ndarray:
    """Point forecasts [n, H, C] in original units from n look-backs x [n, L, C] of the model's (wide, covariate-
    free) columns in original units and their calendar marks [n, L, A] (None when the model reads no calendar)."""
    point, _ = _wide_forecast(loaded, x, marks, None, None, None, batch_size)
    return point


def _wide_forecast(loaded, x, marks, known, past, levels, batch_size: int = 1024):
    """x [n, L, C] targets, known [n, L + H, K], past [n, L, K], all in original units -> point [n, H, C] and
    quantiles [n, H, C, Q] (or None) in original units. Every target row shares its window's covariates."""
    data = loaded.data
    columns = list(data["columns"])
    mean, std = np.asarray(data["mean"]), np.asarray(data["std"])

    def scaled(values, names):
        idx = [columns.index(c) for c in names]
        return (values - mean[idx]) / std[idx]

    targets = list(data.get("targets", columns))
    n, L, C = x.shape
    rows = scaled(x, targets).transpose(0, 2, 1).reshape(n * C, L)
    if marks is None:
        marks = np.zeros((n, L, len(data["calendar_attrs"])), dtype=np.int64)
    cov = data.get("covariates", {})
    known_rows = np.repeat(scaled(known, cov["known"]), C, axis=0) if known is not None else None
    past_rows = np.repeat(scaled(past, cov["past"]), C, axis=0) if past is not None else None
    point, quant = forecast_rows(loaded, rows, np.repeat(marks, C, axis=0), known_rows, past_rows, levels, batch_size,
                                 series=np.tile(np.arange(C), n))  # a wide table's series are its targets, in order
    t_idx = [columns.index(c) for c in targets]
    H = point.shape[1]
    point = point.reshape(n, C, H).transpose(0, 2, 1) * std[t_idx] + mean[t_idx]
    if quant is not None:
        quant = quant.reshape(n, C, H, -1).transpose(0, 2, 1, 3) * std[t_idx][:, None] + mean[t_idx][:, None]
    return point, quant


def _future_values(future, names: list[str], stamps: pd.DatetimeIndex, what: str) -> np.ndarray:
    """[H, K] values of `names` at `stamps` from a future frame (time column, covariates); one-line errors."""
    if future is None:
        raise UserError(f"this model reads known covariates {names} over the {len(stamps)} future steps; pass their "
                        f"values{what} (--future FILE: the time column and {', '.join(names)} for the {len(stamps)} "
                        f"steps after the history, from {stamps[0]})")
    ts, values, columns = future
    missing = [c for c in names if c not in columns]
    if missing:
        raise UserError(f"the future values{what} lack the known covariate column {missing[0]!r}; give {names}")
    index = pd.Index(pd.DatetimeIndex(ts))
    rows = index.get_indexer(stamps)
    if (rows < 0).any():
        raise UserError(f"the future values{what} have no row for {stamps[int(np.flatnonzero(rows < 0)[0])]}; give the "
                        f"known covariates {names} for the {len(stamps)} steps from {stamps[0]} to {stamps[-1]}")
    return values[rows][:, [columns.index(c) for c in names]]


def forecast_histories(loaded, histories: list[tuple[np.ndarray, np.ndarray]], columns: list[str], futures=None,
                       levels=None) -> list[Forecast]:
    """A Forecast for each wide (timestamps, values [T, C]) history, from its last L rows; `futures`: for each
    history, (timestamps, values, columns) holding the known covariates' future values (a model with known
    covariates needs them); `loaded`: an llm4ts_scale.inference.loading.LoadedModel."""
    from llm4ts_scale.inference.loading import check_columns

    config, data = loaded.config, loaded.data
    L, H = config.data.seq_len, config.data.pred_len
    check_columns(columns, loaded)
    cov = data.get("covariates", {"known": [], "past": []})
    for i, (_, values) in enumerate(histories):
        if len(values) < L:
            which = f"history {i} has" if len(histories) > 1 else "the history has"
            raise UserError(f"{which} {len(values)} rows but the model looks back {L}; pass at least {L} rows")
    stamps = [future_timestamps(ts[-1], data["freq"], H) for ts, _ in histories]

    def pick(values, names):
        return values[:, [columns.index(c) for c in names]]

    targets = list(data.get("targets", columns))
    x = np.stack([pick(values[-L:], targets) for _, values in histories])
    marks = np.stack([calendar_marks(ts[-L:], data["calendar_attrs"]) for ts, _ in histories])
    known = past = None
    if cov["known"]:
        futures = futures or [None] * len(histories)
        known = np.stack([np.concatenate([pick(values[-L:], cov["known"]),
                                          _future_values(f, cov["known"], st, f" of history {i}" if len(histories) > 1 else "")])
                          for i, ((_, values), f, st) in enumerate(zip(histories, futures, stamps))])
    if cov["past"]:
        past = np.stack([pick(values[-L:], cov["past"]) for _, values in histories])
    point, quant = _wide_forecast(loaded, x, marks, known, past, levels)
    return [Forecast(st, p, None if quant is None else q) for st, p, q in
            zip(stamps, point, quant if quant is not None else [None] * len(point))]


def forecast_history(loaded, timestamps: np.ndarray, values: np.ndarray, columns: list[str], future=None,
                     levels=None) -> Forecast:
    """The Forecast of one wide history, from its last L rows."""
    return forecast_histories(loaded, [(timestamps, values)], columns, [future] if future is not None else None,
                              levels)[0]


def forecast_frame(forecast: Forecast, targets: list[str], levels) -> pd.DataFrame:
    """date, the targets' point forecasts, then `<target>_q<level>` for every level."""
    frame = pd.DataFrame(forecast.point, columns=targets)
    frame.insert(0, "date", forecast.timestamps)
    if forecast.quantiles is not None:
        for c, name in enumerate(targets):
            for q, level in enumerate(levels):
                frame[f"{name}_q{level:g}"] = forecast.quantiles[:, c, q]
    return frame


def _series_index(loaded, ids: list[str]) -> np.ndarray:
    """Each id's series in the training store (-1 where the model never saw it)."""
    from llm4ts_scale.data.store import _read_series_file

    if loaded.series_file is None:
        return np.full(len(ids), -1)
    index = _read_series_file(loaded.series_file, 0)
    where = {name: i for i, name in enumerate(index.ids)}
    return np.array([where.get(name, -1) for name in ids])


def _series_stats(loaded, ids: list[str], panel) -> tuple[np.ndarray, np.ndarray]:
    """(mean [S, V], std [S, V]) of the target and covariates for each id: the training series' where the id was
    trained on, else the history's own."""
    from llm4ts_scale.data.store import _read_series_file

    n_cov = panel.values.shape[1] - 1
    own_mean = np.stack([panel.values[a:b].mean(axis=0) for a, b in zip(panel.offsets[:-1], panel.offsets[1:])])
    own_std = np.stack([panel.values[a:b].std(axis=0) for a, b in zip(panel.offsets[:-1], panel.offsets[1:])])
    own_std = np.where(own_std == 0, 1.0, own_std)
    if loaded.series_file is None:
        return own_mean, own_std
    index = _read_series_file(loaded.series_file, n_cov)
    where = {name: i for i, name in enumerate(index.ids)}
    trained_mean = np.column_stack([index.mean, index.cov_mean])
    trained_std = np.column_stack([index.std, index.cov_std])
    for row, name in enumerate(ids):
        if name in where:
            own_mean[row], own_std[row] = trained_mean[where[name]], trained_std[where[name]]
    return own_mean, own_std


def forecast_panel(loaded, history: pd.DataFrame, future: pd.DataFrame | None = None, levels=None) -> pd.DataFrame:
    """A long forecast (id, timestamp, target, quantiles) for every id of a long history table."""
    config, data = loaded.config, loaded.data
    L, H = config.data.seq_len, config.data.pred_len
    schema = Schema.of(config.data)
    panel = panel_arrays(history, schema, "the history", config.data.fill)
    target, cov = data["columns"][0], data.get("covariates", {"known": [], "past": []})
    short = np.flatnonzero(panel.lengths < L)
    if len(short):
        raise UserError(f"series {panel.ids[int(short[0])]!r} of the history has {int(panel.lengths[short[0]])} rows but "
                        f"the model looks back {L}; pass at least {L} rows per series")
    mean, std = _series_stats(loaded, panel.ids, panel)
    ends = panel.offsets[1:]
    z = (panel.values - np.repeat(mean, panel.lengths, axis=0)) / np.repeat(std, panel.lengths, axis=0)
    x = np.stack([z[e - L:e, 0] for e in ends])
    marks = np.stack([calendar_marks(panel.timestamps[e - L:e], data["calendar_attrs"]) for e in ends])
    stamps = [future_timestamps(panel.timestamps[e - 1], data["freq"], H) for e in ends]
    n_known = len(cov["known"])
    known = past = None
    if n_known:
        if future is None:
            _future_values(None, cov["known"], stamps[0], "")
        # the known covariates' future rows, read like a panel of their own (first covariate as its "target")
        fut = panel_arrays(future, Schema(format="long", id_column=schema.id_column, time_column=schema.time_column,
                                          target=(cov["known"][0],), known=tuple(cov["known"][1:])), "the future values")
        where = {name: i for i, name in enumerate(fut.ids)}
        rows = []
        for s, name in enumerate(panel.ids):
            if name not in where:
                raise UserError(f"the future values have no rows for series {name!r}; give its known covariates "
                                f"{cov['known']} for the {H} steps from {stamps[s][0]}")
            a, b = fut.offsets[where[name]], fut.offsets[where[name] + 1]
            values = _future_values((fut.timestamps[a:b], fut.values[a:b], cov["known"]), cov["known"], stamps[s],
                                    f" of series {name!r}")
            look = z[ends[s] - L:ends[s], 1:1 + n_known]
            rows.append(np.concatenate([look, (values - mean[s, 1:1 + n_known]) / std[s, 1:1 + n_known]]))
        known = np.stack(rows)
    if cov["past"]:
        past = np.stack([z[e - L:e, 1 + n_known:] for e in ends])
    point, quant = forecast_rows(loaded, x, marks, known, past, levels, series=_series_index(loaded, panel.ids))
    point = point * std[:, :1] + mean[:, :1]
    frame = pd.DataFrame({schema.id_column: np.repeat(panel.ids, H),
                          schema.time("long"): np.concatenate([st.to_numpy() for st in stamps]),
                          target: point.reshape(-1)})
    if quant is not None:
        quant = quant * std[:, :1, None] + mean[:, :1, None]
        for q, level in enumerate(levels):
            frame[f"{target}_q{level:g}"] = quant[:, :, q].reshape(-1)
    return frame


def write_frame(path: str | Path, frame: pd.DataFrame) -> None:
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())
    elif path.suffix.lower() == ".csv":
        atomic_write_bytes(path, frame.to_csv(index=False).encode())
    else:
        raise UserError(f"--out {path} must end in .csv or .parquet")


def write_forecast(path: str | Path, timestamps, forecast: np.ndarray, columns: list[str]) -> None:
    frame = pd.DataFrame(forecast, columns=columns)
    frame.insert(0, "date", timestamps)
    write_frame(path, frame)


def plot_forecast(path: str | Path, history, future_ts, forecast, columns, actual=None,
                  title: str | None = None, band=None) -> None:
    """One panel per channel: `history` (timestamps, values [T, C]), forecast, (where known) the actual
    values and (`band`: lower, upper [H, C]) the 80 % interval, shaded."""
    hist_ts, hist_values = history
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(columns)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n + 0.6), sharex=True, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[:, 0], columns)):
        ax.plot(hist_ts, hist_values[:, i], color="0.35", lw=1.0, label="history")
        if actual is not None:
            ax.plot(future_ts, actual[:, i], color="tab:green", lw=1.2, label="actual")
        if band is not None:
            ax.fill_between(future_ts, band[0][:, i], band[1][:, i], color="tab:red", alpha=0.2, lw=0,
                            label="80 % interval")
        ax.plot(future_ts, forecast[:, i], color="tab:red", lw=1.4, label="forecast")
        ax.axvline(future_ts[0], color="0.6", ls=":", lw=0.8)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", ncol=4, fontsize=8, frameon=False)
    axes[0, 0].set_title(title or f"{len(future_ts)}-step forecast")
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_writer(path) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def backtest(loaded, store, batch_size: int = 256):
    """Forecast the test split block by block (non-overlapping H-step blocks from the test border,
    each from the L rows before it): (timestamps [N], forecast [N, C], actual [N, C]) in original units."""
    config, data = loaded.config, loaded.data
    L, H = config.data.seq_len, config.data.pred_len
    row_start, row_end = store.split_range("test", L)
    starts = list(range(row_start + L, row_end - H + 1, H))
    if not starts:
        raise UserError(f"the test split of {store.name} holds fewer than {L + H} rows; nothing to backtest")
    raw, marks, stamps = store.read_rows(row_start, row_end, scaled=False)
    mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    scaled = (raw - mean) / std
    C = raw.shape[1]
    xs = np.stack([scaled[s - row_start - L:s - row_start].T for s in starts]).reshape(-1, L)  # [blocks*C, L]
    ms = np.repeat(np.stack([marks[s - row_start - L:s - row_start] for s in starts]), C, axis=0)
    preds = []
    for i in range(0, len(xs), batch_size):
        x = torch.from_numpy(xs[i:i + batch_size].astype(np.float32))
        m = torch.from_numpy(ms[i:i + batch_size].astype(np.int64))
        preds.append(loaded.forecast(x, m).cpu().numpy())
    pred = np.concatenate(preds).reshape(len(starts), C, H).transpose(0, 2, 1).reshape(-1, C)
    rows = np.concatenate([np.arange(s, s + H) - row_start for s in starts])
    return stamps[rows], pred * std + mean, raw[rows]


def write_backtest(path, timestamps, forecast, actual, columns) -> None:
    """Forecast and actual columns side by side (`<column>`, `<column>_actual`)."""
    table = np.empty((len(timestamps), 2 * len(columns)))
    table[:, 0::2], table[:, 1::2] = forecast, actual
    names = [n for c in columns for n in (c, f"{c}_actual")]
    write_forecast(path, timestamps, table, names)


def _read_future(loaded, path):
    """A future-values file in the model's layout: (timestamps, values, columns) for wide data, a DataFrame for long."""
    if path is None:
        return None
    d = loaded.config.data
    if loaded.data.get("layout", "wide") == "panel":
        return read_table(path)
    name = Path(path).name
    return frame_arrays(read_table(path), name, d.fill, Path(path).suffix.lower() == ".csv",
                        time_column=Schema.of(d).time("wide"))


def predict_file(run_dir, data_path, out, plot=None, backtest_split: bool = False, future_path=None,
                 quantiles=None) -> pd.DataFrame:
    """`llm4ts-scale predict`: the forecast of the history in `data_path` (with the known covariates' values from
    `future_path`), written to `out` with the quantile columns; or, with `backtest_split`, the test split."""
    from llm4ts_scale.inference.loading import load_model, open_checked_store

    loaded = load_model(run_dir)
    config, data = loaded.config, loaded.data
    levels = resolve_levels(loaded, quantiles)
    panel = data.get("layout", "wide") == "panel"
    if backtest_split:
        if panel or any(data.get("covariates", {}).values()):
            raise UserError("--backtest forecasts a wide table without covariates; for panels and covariates score the "
                            "test split with llm4ts-scale evaluate RUN_DIR")
        store = open_checked_store(loaded, data_path)
        stamps, forecast, actual = backtest(loaded, store)
        write_backtest(out, stamps, forecast, actual, store.columns)
        if plot:
            plot_forecast(plot, (stamps[:0], actual[:0]), stamps, forecast, store.columns, actual=actual,
                          title=f"backtest over the test split, {config.data.pred_len}-step blocks")
        return forecast
    future = _read_future(loaded, future_path)
    if panel:
        frame = forecast_panel(loaded, read_table(data_path), future, levels)
        write_frame(out, frame)
        if plot:
            raise UserError("--plot draws a wide forecast; plot a long one from the written file")
        return frame
    timestamps, values, columns = load_frame(data_path, fill=config.data.fill, time_column=Schema.of(config.data).time("wide"))
    result = forecast_history(loaded, timestamps, values, columns, future, levels)
    targets = list(data.get("targets", columns))
    frame = forecast_frame(result, targets, levels or [])
    write_frame(out, frame)
    if plot:
        L = config.data.seq_len
        t_idx = [columns.index(c) for c in targets]
        band = None
        if result.quantiles is not None and 0.1 in levels and 0.9 in levels:
            band = (result.quantiles[..., levels.index(0.1)], result.quantiles[..., levels.index(0.9)])
        plot_forecast(plot, (timestamps[-L:], values[-L:, t_idx]), result.timestamps, result.point, targets, band=band)
    return frame
