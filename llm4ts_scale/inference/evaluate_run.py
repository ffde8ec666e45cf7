"""Score an exported model in a fresh process exactly like training did (same windows, same metric code, same
precision): what `llm4ts-scale evaluate RUN_DIR` (llm4ts_scale/commands/evaluate.py) and Forecaster.evaluate print."""

from __future__ import annotations

from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.inference.loading import open_checked_store


def evaluate_loaded(loaded, data_path=None, split: str = "test") -> dict:
    """Metrics of `split` for a LoadedModel, on its training data (or `data_path`, same columns)."""
    store = open_checked_store(loaded, data_path, changed_hint="pass --data with the original file to score it")
    d = loaded.config.data
    return evaluate_split(loaded.model, store, split, seq_len=d.seq_len, pred_len=d.pred_len,
                          batch_size=eval_batch_size(d.eval_batch_size, d.batch_size, loaded.device.type),
                          task="forecast", rank=0, world_size=1, device=loaded.device, precision=loaded.precision)
