"""`llm4ts-scale evaluate RUN_DIR`: score an exported model in a fresh process, exactly like training did
(same windows, same metric code, same precision)."""

from __future__ import annotations

import json

from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.inference import load_model, open_checked_store
from llm4ts_scale.metrics import write_metrics_json


def evaluate_loaded(loaded, data_path=None, split: str = "test") -> dict:
    """Metrics of `split` for a LoadedModel, on its training data (or `data_path`, same columns)."""
    store = open_checked_store(loaded, data_path, changed_hint="pass --data with the original file to score it")
    d = loaded.config.data
    return evaluate_split(loaded.model, store, split, seq_len=d.seq_len, pred_len=d.pred_len,
                          batch_size=eval_batch_size(d.eval_batch_size, d.batch_size, loaded.device.type),
                          task="forecast", rank=0, world_size=1, device=loaded.device, precision=loaded.precision)


def evaluate_run_dir(args) -> int:
    loaded = load_model(args.run_dir)
    split = args.split or "test"
    metrics = evaluate_loaded(loaded, args.data, split)
    if args.out:
        write_metrics_json(args.out, {split: metrics})
    print(json.dumps({**metrics, "precision": loaded.precision}))
    return 0
