"""A finished ZeRO-3 stage leaves nothing behind for the next model to sit on top of (train/accelerator.py).

Real DeepSpeed, one process: tests/zero3_release.py prepares a model under ds_configs/zero3.json, steps it and lets
it go. With Accelerate's `free_memory` alone the model and its engine stay alive in DeepSpeed 0.19 (it keeps the top
module on a module-level stack and its submodules in an unbounded method cache; the script records that too). With
`release_engine` nothing is left. On a 7B-shaped backbone with 2 ranks this was the difference between a run that
finishes and one killed for memory when the export's scoring model was built (docs/SCALING.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from launching import child_env

REPO = Path(__file__).resolve().parents[2]


def test_release_engine_leaves_no_model_alive(tmp_path):
    out = tmp_path / "released.json"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "zero3_release.py"), str(out)], cwd=REPO,
                          env=child_env(OMP_NUM_THREADS=1), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    record = json.loads(out.read_text())
    assert not record["release_engine"]["model_alive"]
    assert record["release_engine"]["engines_alive"] == 0
