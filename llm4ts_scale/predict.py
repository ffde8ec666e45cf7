"""Forecast the H steps after a history with an exported model, in the data's original units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm4ts_scale.data.calendar import calendar_marks
from llm4ts_scale.data.frame import load_frame
from llm4ts_scale.errors import UserError
from llm4ts_scale.io import atomic_write_bytes


def future_timestamps(last: np.datetime64, freq: str, horizon: int) -> pd.DatetimeIndex:
    return pd.date_range(start=pd.Timestamp(last), periods=horizon + 1, freq=freq)[1:]


@torch.no_grad()
def forecast_history(model, config, data: dict, timestamps: np.ndarray, values: np.ndarray, columns: list[str]):
    """(future timestamps [H], forecast [H, C] in original units) from the last L rows of a history."""
    L, H = config.data.seq_len, config.data.pred_len
    if list(columns) != list(data["columns"]):
        raise UserError(f"the data's columns {columns} differ from the model's {data['columns']}; "
                        "pass a file with the training columns in the same order")
    if len(values) < L:
        raise UserError(f"the history has {len(values)} rows but the model looks back {L}; pass at least {L} rows")
    mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    x = ((values[-L:] - mean) / std).T.astype(np.float32)  # [C, L]
    marks = calendar_marks(timestamps[-L:], data["calendar_attrs"])  # [L, A]
    device = next(model.parameters()).device
    x_t = torch.from_numpy(x).to(device)
    marks_t = torch.from_numpy(marks).to(device).unsqueeze(0).expand(x.shape[0], -1, -1)
    scaled = model(x_t, marks_t, task="forecast").float().cpu().numpy()  # [C, H]
    forecast = scaled.T * std + mean
    return future_timestamps(timestamps[-1], data["freq"], H), forecast


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


def plot_forecast(path: str | Path, hist_ts, hist_values, future_ts, forecast, columns, actual=None) -> None:
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
    axes[0, 0].set_title(f"{len(future_ts)}-step forecast")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def predict_file(run_dir, data_path, out, plot=None) -> pd.DataFrame:
    from llm4ts_scale.export import load_exported_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config, data = load_exported_model(run_dir, device=device)
    timestamps, values, columns = load_frame(data_path, fill=config.data.fill)
    future, forecast = forecast_history(model, config, data, timestamps, values, columns)
    write_forecast(out, future, forecast, columns)
    if plot:
        L = config.data.seq_len
        plot_forecast(plot, timestamps[-L:], values[-L:], future, forecast, columns)
    return forecast
