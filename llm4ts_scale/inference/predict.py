"""Forecast the H steps after a history with an exported model, in the data's original units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_bytes, atomic_writer
from llm4ts_scale.data.calendar import calendar_marks
from llm4ts_scale.data.frame import load_frame


def future_timestamps(last: np.datetime64, freq: str, horizon: int) -> pd.DatetimeIndex:
    return pd.date_range(start=pd.Timestamp(last), periods=horizon + 1, freq=freq)[1:]


def forecast_scaled(loaded, x: np.ndarray, marks: np.ndarray | None, batch_size: int = 1024) -> np.ndarray:
    """Forecasts [n, H, C] in original units from n look-backs x [n, L, C] in original units and their
    calendar marks [n, L, A] (None when the model reads no calendar). All n * C channels go through the
    model together, `batch_size` rows at a time."""
    data = loaded.data
    mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    n, L, C = x.shape
    rows = ((x - mean) / std).transpose(0, 2, 1).reshape(n * C, L).astype(np.float32)  # [n*C, L]
    if marks is None:
        marks = np.zeros((n, L, len(data["calendar_attrs"])), dtype=np.int64)
    row_marks = np.repeat(marks, C, axis=0)  # every channel of a series shares its timestamps
    out = []
    for i in range(0, len(rows), batch_size):
        out.append(loaded.forecast(torch.from_numpy(rows[i:i + batch_size]),
                                   torch.from_numpy(row_marks[i:i + batch_size])).cpu().numpy())
    H = loaded.config.data.pred_len
    return np.concatenate(out).reshape(n, C, H).transpose(0, 2, 1) * std + mean


def forecast_histories(loaded, histories: list[tuple[np.ndarray, np.ndarray]], columns: list[str]):
    """[(future timestamps [H], forecast [H, C] in original units)] for each (timestamps, values) history,
    from its last L rows; `loaded`: an llm4ts_scale.inference.loading.LoadedModel."""
    from llm4ts_scale.inference.loading import check_columns

    config, data = loaded.config, loaded.data
    L, H = config.data.seq_len, config.data.pred_len
    check_columns(columns, loaded)
    for i, (_, values) in enumerate(histories):
        if len(values) < L:
            which = f"history {i} has" if len(histories) > 1 else "the history has"
            raise UserError(f"{which} {len(values)} rows but the model looks back {L}; pass at least {L} rows")
    x = np.stack([values[-L:] for _, values in histories])
    marks = np.stack([calendar_marks(ts[-L:], data["calendar_attrs"]) for ts, _ in histories])
    forecasts = forecast_scaled(loaded, x, marks)
    return [(future_timestamps(ts[-1], data["freq"], H), f) for (ts, _), f in zip(histories, forecasts)]


def forecast_history(loaded, timestamps: np.ndarray, values: np.ndarray, columns: list[str]):
    """(future timestamps [H], forecast [H, C] in original units) from the last L rows of a history."""
    return forecast_histories(loaded, [(timestamps, values)], columns)[0]


def write_forecast(path: str | Path, timestamps, forecast: np.ndarray, columns: list[str]) -> None:
    path = Path(path)
    frame = pd.DataFrame(forecast, columns=columns)
    frame.insert(0, "date", timestamps)
    if path.suffix.lower() == ".parquet":
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())
    elif path.suffix.lower() == ".csv":
        atomic_write_bytes(path, frame.to_csv(index=False).encode())
    else:
        raise UserError(f"--out {path} must end in .csv or .parquet")


def plot_forecast(path: str | Path, hist_ts, hist_values, future_ts, forecast, columns, actual=None,
                  title: str | None = None) -> None:
    """One panel per channel: history, forecast and (where known) the actual values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(columns)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n + 0.6), sharex=True, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[:, 0], columns)):
        ax.plot(hist_ts, hist_values[:, i], color="0.35", lw=1.0, label="history")
        if actual is not None:
            ax.plot(future_ts, actual[:, i], color="tab:green", lw=1.2, label="actual")
        ax.plot(future_ts, forecast[:, i], color="tab:red", lw=1.4, label="forecast")
        ax.axvline(future_ts[0], color="0.6", ls=":", lw=0.8)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", ncol=3, fontsize=8, frameon=False)
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


def predict_file(run_dir, data_path, out, plot=None, backtest_split: bool = False) -> pd.DataFrame:
    from llm4ts_scale.inference.loading import load_model, open_checked_store

    loaded = load_model(run_dir)
    config = loaded.config
    if backtest_split:
        store = open_checked_store(loaded, data_path)
        stamps, forecast, actual = backtest(loaded, store)
        write_backtest(out, stamps, forecast, actual, store.columns)
        if plot:
            plot_forecast(plot, stamps[:0], actual[:0], stamps, forecast, store.columns, actual=actual,
                          title=f"backtest over the test split, {config.data.pred_len}-step blocks")
        return forecast
    timestamps, values, columns = load_frame(data_path, fill=config.data.fill)
    future, forecast = forecast_history(loaded, timestamps, values, columns)
    write_forecast(out, future, forecast, columns)
    if plot:
        L = config.data.seq_len
        plot_forecast(plot, timestamps[-L:], values[-L:], future, forecast, columns)
    return forecast
