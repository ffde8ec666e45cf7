"""The export directory: everything a fresh process needs, besides the backbone id/path, to forecast.

    export/config.json          run config + data facts (channels, frequency, calendar attributes,
                                train-split scaler statistics) + test metrics
    export/model.safetensors    every tuned parameter (heads, encoder, LoRA, norms, RevIN)
    export/adapter/             the LoRA adapter in PEFT's own format (save_pretrained), for reuse
                                with other PEFT tooling
    export/conformal.safetensors  the sorted normalized validation residuals behind the prediction
                                intervals (llm4ts_scale/stats/conformal.py)
    export/series.arrow         a panel's series (ids, scalers), so predict reads new data of known ids alike

`Forecaster.save_pretrained` (llm4ts_scale/api.py) writes the same layout anywhere. Exports written
before the weights file took transformers' name (`weights.safetensors`) still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from llm4ts_scale.core.config import RunConfig, config_from_dict
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json
from llm4ts_scale.core.weights import load_tunable_state, load_weights, save_weights

WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "weights.safetensors"
CONFORMAL_FILE = "conformal.safetensors"
SERIES_FILE = "series.arrow"
BACKBONE_PREFIX = "backbone."  # the PEFT model's parameter names inside the forecaster's


def _peft_modules(model: torch.nn.Module):
    return [m for m in model.modules() if hasattr(m, "peft_config") and hasattr(m, "save_pretrained")]


def data_facts(store) -> dict:
    """What a forecaster must know of its training data to read new data the same way: the columns and their
    roles, frequency and calendar, and (wide) the train-split scaler of every column."""
    facts = {"columns": list(store.columns), "targets": list(store.targets),
             "covariates": {"known": list(store.known), "past": list(store.past)}, "layout": store.layout,
             "freq": store.freq, "calendar_attrs": list(store.calendar_attrs), "fingerprint": store.fingerprint}
    if store.layout == "wide":
        facts.update(mean=[float(v) for v in store.column_mean], std=[float(v) for v in store.column_std])
    return facts


def write_pretrained(export_dir: Path, config: RunConfig, data: dict, model: torch.nn.Module, weights: dict,
                     metrics: dict, precision: str = "no", extras: dict | None = None) -> None:
    """`extras`: {CONFORMAL_FILE: a ConformalTable, SERIES_FILE: the path of a panel's series table}, where known."""
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    save_weights(weights, export_dir / WEIGHTS_FILE)  # the last stage's (lp or ft): no alignment head
    extras = extras or {}
    if extras.get(CONFORMAL_FILE) is not None:
        save_weights(extras[CONFORMAL_FILE].state(), export_dir / CONFORMAL_FILE)
    if extras.get(SERIES_FILE) is not None and Path(extras[SERIES_FILE]) != export_dir / SERIES_FILE:
        shutil.copyfile(extras[SERIES_FILE], export_dir / SERIES_FILE)
    for peft_model in _peft_modules(model)[:1]:
        # the values come from `weights`, never from the module: under ZeRO-3 it holds this rank's shards only
        adapter = {k.removeprefix(BACKBONE_PREFIX): v for k, v in weights.items() if k.startswith(BACKBONE_PREFIX)}
        peft_model.save_pretrained(str(export_dir / "adapter"), state_dict=adapter)
    atomic_write_json(export_dir / "config.json", {
        "config": config.to_dict(),
        "data": data,
        "metrics": metrics,
        "precision": precision,  # the arithmetic training validated and tested in; evaluation reuses it
    })


def write_export(export_dir: Path, config: RunConfig, store, model: torch.nn.Module, weights: dict, metrics: dict,
                 precision: str = "no", conformal=None) -> None:
    series = store.path / SERIES_FILE if store.layout == "panel" else None
    write_pretrained(export_dir, config, data_facts(store), model, weights, metrics, precision,
                     {CONFORMAL_FILE: conformal, SERIES_FILE: series})


def read_extras(export_dir: Path) -> dict:
    """{CONFORMAL_FILE: ConformalTable or None, SERIES_FILE: path or None} of an export."""
    from llm4ts_scale.stats.conformal import ConformalTable

    export_dir = Path(export_dir)
    conformal = export_dir / CONFORMAL_FILE
    series = export_dir / SERIES_FILE
    return {CONFORMAL_FILE: ConformalTable.from_state(load_weights(conformal)) if conformal.is_file() else None,
            SERIES_FILE: series if series.is_file() else None}


def weights_path(export_dir: Path) -> Path:
    export_dir = Path(export_dir)
    return export_dir / (WEIGHTS_FILE if (export_dir / WEIGHTS_FILE).is_file() or
                         not (export_dir / LEGACY_WEIGHTS_FILE).is_file() else LEGACY_WEIGHTS_FILE)


def export_dir_of(run_or_export_dir: str | Path) -> Path:
    path = Path(run_or_export_dir)
    return path / "export" if (path / "export").is_dir() else path


def read_export(run_or_export_dir: str | Path) -> tuple[RunConfig, dict, Path, str]:
    """(config, data facts, export dir, precision) from a run directory or its export/ directory."""
    path = Path(run_or_export_dir)
    export_dir = export_dir_of(path)
    meta_path = export_dir / "config.json"
    if not meta_path.is_file():
        raise UserError(f"{path} holds no exported model (no export/config.json); finish training it first "
                        "with the same command, or point at another run directory")
    try:
        meta = json.loads(meta_path.read_text())
        config = config_from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
        raise UserError(f"{meta_path} is corrupted; re-export by re-running the training command") from None
    return config, meta["data"], export_dir, meta.get("precision", "no")


def load_exported_model(run_or_export_dir: str | Path, device="cpu", overrides: list[str] | None = None):
    """Rebuild the trained forecaster: backbone from its id/path, the rest from the weights file."""
    from llm4ts_scale.model import build_model

    config, data, export_dir, precision = read_export(run_or_export_dir)
    if overrides:
        from llm4ts_scale.core.config import merge_dicts, parse_overrides

        config = config_from_dict(merge_dicts(config.to_dict(), parse_overrides(overrides)))
    model = build_model(config, data["calendar_attrs"], precision, device_type=torch.device(device).type)
    path = weights_path(export_dir)
    load_tunable_state(model, load_weights(path), source=str(path))
    return model.to(device).eval(), config, data, precision
