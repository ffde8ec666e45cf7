"""`llm4ts-scale evaluate RUN_DIR`: score an exported model in a fresh process, exactly like training did."""

from __future__ import annotations

import json

import torch

from llm4ts_scale.data.store import open_store
from llm4ts_scale.errors import UserError
from llm4ts_scale.export import load_exported_model
from llm4ts_scale.metrics import write_metrics_json
from llm4ts_scale.train.evaluation import evaluate_split


def evaluate_run_dir(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config, data = load_exported_model(args.run_dir, device=device)
    d = config.data
    store = open_store(args.data or d.path, split=d.split, freq=d.freq, fill=d.fill)
    if not args.data and store.fingerprint != data["fingerprint"]:
        raise UserError(f"the data at {d.path} changed since training (fingerprint differs); "
                        "pass --data with the original file to score it")
    if list(store.calendar_attrs) != list(data["calendar_attrs"]):
        raise UserError(f"the data's calendar attributes {store.calendar_attrs} differ from the model's "
                        f"{data['calendar_attrs']}; pass data with the training frequency")
    split = args.split or "test"
    metrics = evaluate_split(model, store, split, seq_len=d.seq_len, pred_len=d.pred_len,
                             batch_size=d.eval_batch_size or d.batch_size, task="forecast", rank=0, world_size=1,
                             device=device, show_progress=False)
    if args.out:
        write_metrics_json(args.out, {split: metrics})
    print(json.dumps(metrics))
    return 0
