"""The inference side: load an exported model, and check data against what it was trained on.

Evaluation of a run directory, prediction and reports all start here, so "which model, in which
arithmetic, on which data" is decided in one place. The model computes in the precision recorded
at training time (run.json / export), whatever this machine would pick for a new run: the same
numbers come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llm4ts_scale.core.config import RunConfig
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.precision import autocast
from llm4ts_scale.inference.export import CONFORMAL_FILE, SERIES_FILE, export_dir_of, load_exported_model, read_extras


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: RunConfig
    data: dict  # facts of the training data: columns, freq, calendar_attrs, mean, std, fingerprint
    precision: str  # "bf16" or "no"
    device: torch.device
    export_dir: Path
    conformal: object = None  # llm4ts_scale/stats/conformal.py:ConformalTable (None: an export without intervals)
    series_file: Path | None = None  # a panel's series table (ids and scalers)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor, known: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H] in the standardized units of x, in the run's precision."""
        def to(t):
            return t.to(self.device) if t is not None else None

        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.model.forecast(x.to(self.device), x_mark.to(self.device), known=to(known), past=to(past)).float()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(run_dir, device: torch.device | None = None) -> LoadedModel:
    device = device or default_device()
    model, config, data, precision = load_exported_model(run_dir, device=device)
    extras = read_extras(export_dir_of(run_dir))
    return LoadedModel(model, config, data, precision, device, export_dir_of(run_dir), extras[CONFORMAL_FILE],
                       extras[SERIES_FILE])


def check_columns(columns, loaded: LoadedModel) -> None:
    if list(columns) != list(loaded.data["columns"]):
        raise UserError(f"the data's columns {list(columns)} differ from the model's {loaded.data['columns']}; "
                        "pass a file with the training columns in the same order")


def open_checked_store(loaded: LoadedModel, data_path: str | None = None, *,
                       changed_hint: str = "pass --data with the original file"):
    """The store to score: the training data (refused if it changed since), or `data_path` with the
    same calendar attributes and columns."""
    from llm4ts_scale.data.sources import open_run_store

    d = loaded.config.data
    store = open_run_store(d, data_path)
    if data_path is None and store.fingerprint != loaded.data["fingerprint"]:
        raise UserError(f"the data at {d.path} changed since training (fingerprint differs); {changed_hint}")
    if list(store.calendar_attrs) != list(loaded.data["calendar_attrs"]):
        raise UserError(f"the data's calendar attributes {store.calendar_attrs} differ from the model's "
                        f"{loaded.data['calendar_attrs']}; pass data with the training frequency")
    check_columns(store.columns, loaded)
    return store
