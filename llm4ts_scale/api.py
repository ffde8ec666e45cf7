"""The Python API: `Forecaster` for notebooks and services.

    from llm4ts_scale import Forecaster

    f = Forecaster("configs/quick.yaml", run_dir="runs/nb").fit()     # train in this process
    forecast = f.predict(history_df)                                  # DataFrame of the next H steps
    f.evaluate(split="test")                                          # == `llm4ts-scale evaluate RUN_DIR`
    f.save_pretrained("my-forecaster")
    g = Forecaster.from_pretrained("my-forecaster")                   # a run dir, an export dir or a hub id

Everything goes through the same code as the command line: the config is validated exactly as the CLI
validates it, `fit` runs the stage manager (llm4ts_scale/train/manager.py) in this process with the same
run directory, run.json and resume rules, and `predict` / `evaluate` use the inference path of
`llm4ts-scale predict` / `evaluate`. Bad input raises `UserError` (one line naming the problem and the
fix); nothing here calls sys.exit.

`fit` trains in one process. Distributed training (several processes, GPUs, nodes, DeepSpeed) stays
with `accelerate launch launch/train.py --ds ds_configs/zero2.json ...`; its run directory loads here
with `Forecaster.from_pretrained(run_dir)`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from llm4ts_scale.core.config import RunConfig, config_from_dict, merge_dicts, read_config_file
from llm4ts_scale.core.errors import UserError

SECTIONS = ("run_dir", "seed", "data", "model", "stages", "train")


def _frame_file(frame, data_config) -> str:
    """A DataFrame given as training data (wide or long, as data_config says), written once (by content) as
    Parquet into the cache, so the run's store, fingerprint and resume rules work as for a file."""
    from llm4ts_scale.core.cache import cache_root
    from llm4ts_scale.core.io import atomic_write_bytes
    from llm4ts_scale.data.frame import Schema, frame_arrays, panel_arrays

    schema = Schema.of(data_config)
    if schema.resolve(frame.columns) == "long":  # refuse bad data before anything is written
        panel_arrays(frame, schema, "the training DataFrame")
    else:
        time_column = schema.time("wide")
        frame_arrays(frame, "the training DataFrame", time_column=time_column)
        if time_column not in frame.columns:
            frame = frame.rename_axis(time_column).reset_index()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    path = cache_root() / "frames" / f"{hashlib.sha256(data).hexdigest()[:20]}.parquet"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return str(path)


def _data_path(data, data_config) -> str:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return _frame_file(data, data_config)
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    raise UserError(f"data must be a path, a dataset name or a pandas DataFrame, not {type(data).__name__}")


def _resolve_pretrained(path) -> Path:
    """A local run/export directory, or a Hugging Face hub model id downloaded into the hub cache."""
    local = Path(path)
    if local.exists():
        return local
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=text))
        except Exception as err:  # offline, unknown repo, no access: one line, not the hub's traceback
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot load {text!r}: not a local directory, and the hub says: {first}") from None
    raise UserError(f"{text} does not exist; pass a run directory, an export directory or a hub model id (user/name)")


class Forecaster:
    """An LLM4TS forecaster: configure and `fit`, or load with `from_pretrained`; then `predict`, `evaluate`,
    `save_pretrained`.

    `config`: a YAML/JSON path or a dict of the run config (llm4ts_scale/core/config.py); each keyword is a
    top-level key or a section (`run_dir=`, `seed=`, `data={...}`, `model={...}`, `stages={...}`,
    `train={...}`), merged over it. Validated at once, as the CLI does.
    """

    def __init__(self, config: str | os.PathLike | dict | None = None, **sections):
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise UserError(f"Forecaster got unknown keyword {unknown[0]!r}; use {', '.join(SECTIONS)}")
        if config is None:
            values = {}
        elif isinstance(config, (str, os.PathLike)):
            values = read_config_file(config)
        elif isinstance(config, dict):
            values = copy.deepcopy(config)
        else:
            raise UserError(f"config must be a YAML/JSON path or a dict, not {type(config).__name__}")
        self.config: RunConfig = config_from_dict(merge_dicts(values, copy.deepcopy(sections)))
        self.metrics: dict | None = None  # test metrics and baselines, once fitted or loaded
        self.device = None
        self._loaded = None

    # ------------------------------------------------------------------ training and loading

    def fit(self, data=None, *, restart: bool = False) -> Forecaster:
        """Run the recipe (align -> lp -> ft, test, export) in this process; resumes an interrupted run of
        the same config in the same run_dir. `data` (a path or a DataFrame) replaces data.path."""
        from llm4ts_scale.core.run_state import RunState
        from llm4ts_scale.inference.loading import load_model
        from llm4ts_scale.train.manager import train

        if data is not None:
            values = self.config.to_dict()
            values["data"]["path"] = _data_path(data, self.config.data)
            self.config = config_from_dict(values)
        train(self.config, ds_config=None, restart=restart)
        test = RunState.read(self.config.run_dir).test
        self.metrics = {"test": test.get("metrics"), "baselines": test.get("baselines", {})}
        self._loaded = load_model(self.config.run_dir, self.device)
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None) -> Forecaster:
        """Load a finished run directory, an export / save_pretrained directory, or a hub model id, once,
        in the precision the run used, on `device` (default: a GPU when there is one)."""
        import torch

        from llm4ts_scale.inference.loading import load_model

        loaded = load_model(_resolve_pretrained(path), torch.device(device) if device is not None else None)
        forecaster = cls.__new__(cls)
        forecaster.config, forecaster.device, forecaster._loaded = loaded.config, loaded.device, loaded
        meta = json.loads((loaded.export_dir / "config.json").read_text())
        forecaster.metrics = {"test": meta.get("metrics", {}).get("test"), "baselines": {}}
        return forecaster

    @property
    def loaded(self):
        if self._loaded is None:
            raise UserError("this Forecaster is not trained yet; call fit() or load one with Forecaster.from_pretrained")
        return self._loaded

    # ------------------------------------------------------------------ using it

    def predict(self, history, future=None, quantiles=None):
        """Forecast the H steps after each history, in original units, with quantile columns next to the point
        forecast (`<target>_q0.1`, ...: the conformal intervals of the run, split or adaptive as its `calibration`;
        `quantiles` other levels).

        Wide models: a DataFrame with a `date` column (or a DatetimeIndex) and the training columns -> a
        DataFrame of the H future timestamps; a list of such frames -> a list (one batched pass); a numpy array
        [n, L, C] of look-backs -> an array [n, H, C] of point forecasts (no timestamps: only for models that read
        no calendar and no covariates). Long models: one long DataFrame (id, timestamp, target, covariates) -> a
        long DataFrame of every id's H future steps. `future`: the known covariates' values over the H future
        steps (a frame, or a list matching `history`), which a model with known covariates needs.
        """
        from llm4ts_scale.data.frame import Schema, frame_arrays
        from llm4ts_scale.inference.predict import (
            forecast_frame,
            forecast_histories,
            forecast_panel,
            forecast_scaled,
            resolve_levels,
        )

        loaded = self.loaded
        levels = resolve_levels(loaded, quantiles)
        if loaded.data.get("layout", "wide") == "panel":
            return forecast_panel(loaded, history, future, levels)
        columns = list(loaded.data["columns"])
        time_column = Schema.of(loaded.config.data).time("wide")
        if isinstance(history, np.ndarray):
            return forecast_scaled(loaded, self._check_array(history), None)
        frames = history if isinstance(history, list) else [history]
        if not frames:
            raise UserError("predict got an empty list; pass at least one history")
        futures = future if isinstance(future, list) else [future] * len(frames)
        if len(futures) != len(frames):
            raise UserError(f"predict got {len(frames)} histories and {len(futures)} future frames; give one per history")
        histories, future_arrays = [], []
        for i, (frame, fut) in enumerate(zip(frames, futures)):
            name = f"history {i}" if isinstance(history, list) else "the history"
            ts, values, names = frame_arrays(frame, name, fill=loaded.config.data.fill, time_column=time_column)
            if names != columns:
                raise UserError(f"the history's columns {names} differ from the model's {columns}; "
                                "pass the training columns in the same order")
            histories.append((ts, values))
            future_arrays.append(frame_arrays(fut, f"the future values of {name}", time_column=time_column)
                                 if fut is not None else None)
        results = forecast_histories(loaded, histories, columns, future_arrays, levels)
        targets = list(loaded.data.get("targets", columns))
        out = [forecast_frame(r, targets, levels or []) for r in results]
        return out if isinstance(history, list) else out[0]

    def _check_array(self, x: np.ndarray) -> np.ndarray:
        loaded = self.loaded
        L, C = loaded.config.data.seq_len, len(loaded.data["columns"])
        if any(loaded.data.get("covariates", {}).values()):
            raise UserError("this model reads covariates; pass DataFrames (and the future values of known covariates) "
                            "instead of an array")
        if x.ndim != 3 or x.shape[2] != C or x.shape[1] < L:
            raise UserError(f"an array history must be [n, L, C] with L >= {L} and C = {C} (the model's columns), "
                            f"got shape {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise UserError("the array history holds NaN or infinite values; fill them first")
        if loaded.model.encoder.temporal.attrs:
            raise UserError(f"this model reads calendar attributes {loaded.model.encoder.temporal.attrs}; pass "
                            "DataFrames with timestamps instead of an array")
        return x[:, -L:].astype(np.float64)

    def evaluate(self, data=None, split: str = "test") -> dict:
        """Metrics of a split (mse, mae, rmse, rse, mape, samples), as `llm4ts-scale evaluate RUN_DIR`:
        on the training data, or on `data` (a path or a DataFrame with the same columns)."""
        from llm4ts_scale.inference.evaluate_run import evaluate_loaded

        if split not in ("train", "val", "test"):
            raise UserError(f"split must be train, val or test, got {split!r}")
        return evaluate_loaded(self.loaded, _data_path(data, self.loaded.config.data) if data is not None else None, split)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """config.json + model.safetensors + adapter/ (PEFT): loadable by from_pretrained and by the CLI's
        predict/evaluate. Refuses a non-empty directory that is not a forecaster export."""
        from llm4ts_scale.core.weights import collect_tunable_state
        from llm4ts_scale.inference.export import CONFORMAL_FILE, SERIES_FILE, write_pretrained

        loaded, directory = self.loaded, Path(directory)
        if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                               and not (directory / "config.json").is_file())):
            raise UserError(f"{directory} exists and is not an empty directory or a forecaster export; "
                            "choose a new directory")
        weights = {k: v for k, v in collect_tunable_state(loaded.model).items() if not k.startswith("align_head.")}
        meta = json.loads((loaded.export_dir / "config.json").read_text())
        write_pretrained(directory, loaded.config, loaded.data, loaded.model, weights, meta.get("metrics", {}),
                         loaded.precision, {CONFORMAL_FILE: loaded.conformal, SERIES_FILE: loaded.series_file})
        return directory
