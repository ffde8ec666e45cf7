"""The small files of finished runs that outlive the machine: copied under results/ and committed.

A run directory holds weights and checkpoints (large, never committed) next to a few small files that
say everything a results table needs: run.json (config, histories, test metrics, baselines),
metrics.json, and each stage's history.json and metrics.json.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llm4ts_scale.core.io import atomic_write_text
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.core.stages import STAGE_NAMES

log = get_logger(__name__)

def keep_small_files(run_dir: Path, dest: Path) -> Path:
    """Copy a run's small files to `dest` (stage files as `<stage>_<name>`); returns `dest`."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "metrics.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    for stage in STAGE_NAMES:
        for name in ("history.json", "metrics.json"):
            if (run_dir / stage / name).is_file():
                shutil.copy2(run_dir / stage / name, dest / f"{stage}_{name}")
    return dest


def publish_table(results_dir: Path, text: str) -> None:
    """Write `table.md` in `results_dir` and print it."""
    atomic_write_text(Path(results_dir) / "table.md", text + "\n")
    log.info(text)
