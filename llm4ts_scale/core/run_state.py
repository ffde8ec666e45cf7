"""run.json: what a run directory holds and how far it got.

It records the full config and its hash, the data fingerprint, library versions and each stage's
status (pending -> running -> done) with its best epoch and validation metrics. Re-running the same
command reads it to skip done stages and resume a running one; a different config is refused.
Only rank 0 writes; every write goes to a temporary name and is renamed into place.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from pathlib import Path

from llm4ts_scale.core.config import RunConfig
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json

LIBRARIES = ("llm4ts-scale", "torch", "accelerate", "deepspeed", "transformers", "peft",
             "bitsandbytes", "datasets", "pyarrow", "safetensors")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class RunState:
    """The parsed run.json of one run directory."""

    def __init__(self, run_dir: Path, data: dict):
        self.run_dir = Path(run_dir)
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / "run.json"

    @classmethod
    def read(cls, run_dir: str | Path) -> RunState:
        path = Path(run_dir) / "run.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{run_dir} is not a run directory (no run.json); train one with "
                            f"llm4ts-scale train run_dir={run_dir}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path} is corrupted (not valid JSON); restore it or start over with --restart") from None
        if not isinstance(data, dict) or "config" not in data or "stages" not in data:
            raise UserError(f"{path} is not an llm4ts-scale run.json; point at a run directory or start over with --restart")
        return cls(Path(run_dir), data)

    @classmethod
    def new(cls, config: RunConfig, data_fingerprint: str, world_size: int, precision: str = "no",
            precision_reason: str = "", series: dict | None = None) -> RunState:
        """`series`: which series feed which split, and how many are too short for any (data/store.py:series_report)."""
        data = {
            "config": config.to_dict(),
            "config_hash": config.hash(),
            "data_fingerprint": data_fingerprint,
            **({"series": series} if series is not None else {}),
            "versions": library_versions(),
            "world_size": world_size,
            "precision": precision,  # "bf16" or "no" (fp32): evaluation of this run reuses it
            "precision_reason": precision_reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stages": {name: {"status": "pending"} for name in config.active_stages()},
            "test": {"status": "pending"},
        }
        return cls(Path(config.run_dir), data)

    def check_matches(self, config: RunConfig, data_fingerprint: str) -> None:
        """Refuse to resume a run made with another config or other data."""
        if self.data.get("config_hash") != config.hash():
            raise UserError(
                f"run_dir {self.run_dir} holds a run with a different config (hash {self.data.get('config_hash')} "
                f"vs {config.hash()}); pass --restart to start over or choose a new run_dir")
        if self.data.get("data_fingerprint") != data_fingerprint:
            raise UserError(
                f"run_dir {self.run_dir} was trained on different data (fingerprint changed); "
                "pass --restart to start over or choose a new run_dir")

    def stage(self, name: str) -> dict:
        return self.data["stages"][name]

    def update_stage(self, name: str, **fields) -> None:
        self.data["stages"][name].update(fields)

    @property
    def test(self) -> dict:
        return self.data.get("test", {})

    def set_test(self, **fields) -> None:
        """The test record: status done (metrics, wall time) or skipped."""
        self.data["test"] = dict(fields)

    def add_baselines(self, baselines: dict) -> None:
        """The floors scored on the same test windows, next to the model's record."""
        self.data["test"]["baselines"] = baselines

    def set_aligned_from(self, record: dict) -> bool:
        """Record the aligned backbone this run started from; False when it is already recorded."""
        if self.data.get("aligned_from") == record:
            return False
        self.data["aligned_from"] = record
        return True

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)

    @property
    def finished(self) -> bool:
        stages_done = all(s.get("status") == "done" for s in self.data["stages"].values())
        return stages_done and self.test.get("status") in ("done", "skipped")
