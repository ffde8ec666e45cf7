"""Score an exported model in a fresh process exactly like training did (same windows, same metric code, same
precision): what `llm4ts-scale evaluate RUN_DIR` (llm4ts_scale/commands/evaluate.py) and Forecaster.evaluate print."""

from __future__ import annotations

from llm4ts_scale.core.topology import Topology
from llm4ts_scale.data.windows import WindowSpec
from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.inference.loading import open_checked_store


def evaluate_loaded(loaded, data_path=None, split: str = "test") -> dict:
    """Metrics of `split` for a LoadedModel, on its training data (or `data_path`, same columns)."""
    store = open_checked_store(loaded, data_path, changed_hint="pass --data with the original file to score it")
    d = loaded.config.data
    return evaluate_split(loaded.model, store, WindowSpec(split, d.seq_len, d.pred_len),
                          Topology(device=loaded.device, precision=loaded.precision), task="forecast",
                          batch_size=eval_batch_size(d.eval_batch_size, d.batch_size, loaded.device.type),
                          conformal=loaded.conformal)
