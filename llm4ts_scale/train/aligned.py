"""The aligned backbone as an artifact: align once (on a corpus), start many forecasting runs from it.

When the alignment stage finishes, `RUN_DIR/align/export/` is written in the export layout
(llm4ts_scale/inference/export.py): config.json (the alignment run's config, the target's data facts, what went
into alignment), model.safetensors (everything alignment trained: LoRA, norms, encoder, positions, the
alignment head) and adapter/ (PEFT). `model.aligned_from: PATH` (that directory, or a run directory
whose alignment finished) then replaces a run's alignment stage: the run starts at LP from those
weights, bit for bit where the alignment run's own LP started.

Only settings that shape what alignment trained must agree (ALIGNED_FIELDS); a mismatch is refused in
one line naming the field. The horizon and the head's read-out are free (HEAD_FIELDS): alignment never trains
the forecasting head, so at another data.pred_len or model.read_layers the artifact's (untrained, differently
shaped) head is left out and LP starts from a fresh one.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm4ts_scale.core.config import RunConfig
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import file_sha256
from llm4ts_scale.core.weights import load_weights
from llm4ts_scale.inference.export import WEIGHTS_FILE, data_facts, write_pretrained

ARTIFACT_DIR = ("align", "export")
FORECAST_HEAD = "head."
ALIGNED_FIELDS = ("model.backbone", "model.layers", "model.quantize", "model.double_quant", "model.backbone_init",
                  "model.lora.r", "model.lora.alpha", "model.lora.targets", "model.conv_kernel", "model.calendar",
                  "model.embed_init", "model.revin_affine", "model.tune_norms", "model.tune_positions",
                  "data.seq_len", "data.patch_len", "data.stride")
# What shapes the (untrained) forecasting head alone: free to differ, the artifact's head is then left out.
HEAD_FIELDS = ("data.pred_len", "model.head", "model.read_layers", "model.read_pool")


def artifact_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).joinpath(*ARTIFACT_DIR)


def write_artifact(run_dir: Path, config: RunConfig, store, model, weights: dict, corpus: list | None) -> Path:
    """The finished alignment stage, in the export layout (rank 0; `model` is a plain copy holding `weights`)."""
    target = artifact_dir(run_dir)
    write_pretrained(target, config, data_facts(store), model, weights, metrics={})
    meta_path = target / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["artifact"] = "aligned backbone"
    meta["aligned_on"] = corpus or "the run's own few-shot training windows"
    from llm4ts_scale.core.io import atomic_write_json

    atomic_write_json(meta_path, meta)
    return target


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def resolve(path: str | Path) -> Path:
    """The artifact directory behind model.aligned_from (a run directory or the artifact itself)."""
    path = Path(path).expanduser()
    for candidate in (artifact_dir(path), path):
        if (candidate / "config.json").is_file() and (candidate / WEIGHTS_FILE).is_file():
            meta = json.loads((candidate / "config.json").read_text())
            if meta.get("artifact") == "aligned backbone":
                return candidate
    raise UserError(f"model.aligned_from={path} holds no aligned backbone (no align/export/ with config.json and "
                    f"{WEIGHTS_FILE}); point at a run whose alignment stage finished, or run llm4ts-scale align first")


def load_aligned(config: RunConfig) -> tuple[dict, dict]:
    """(weights, record for run.json) of model.aligned_from, refused when a shaping setting differs."""
    source = resolve(config.model.aligned_from)
    meta = json.loads((source / "config.json").read_text())
    mine = config.to_dict()
    for dotted in ALIGNED_FIELDS:
        theirs, ours = _get(meta["config"], dotted), _get(mine, dotted)
        if theirs != ours:
            raise UserError(f"model.aligned_from={config.model.aligned_from} was aligned with {dotted}={theirs!r}, this "
                            f"run has {dotted}={ours!r}; set {dotted}={theirs!r} or align again")
    weights = load_weights(source / WEIGHTS_FILE)
    if any(_get(meta["config"], dotted) != _get(mine, dotted) for dotted in HEAD_FIELDS):
        weights = {k: v for k, v in weights.items() if not k.startswith(FORECAST_HEAD)}
    record = {"status": "done", "aligned_from": str(source), "weights_sha256": file_sha256(source / WEIGHTS_FILE),
              "aligned_on": meta.get("aligned_on")}
    return weights, record
