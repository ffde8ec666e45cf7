"""After the last stage: score the test split with the best-validation weights, write metrics.json, export.

Evaluation runs on a plain (not DeepSpeed-wrapped) copy of the model on every rank, each rank scoring
its own shard of the test windows; sums are reduced across ranks, so every window counts once.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from llm4ts_scale.config import RunConfig
from llm4ts_scale.export import write_export
from llm4ts_scale.metrics import write_metrics_json
from llm4ts_scale.model import build_model
from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.train.run_state import RunState
from llm4ts_scale.weights import load_tunable_state


def load_trained_model(config: RunConfig, calendar_attrs: list[str], state: dict, device, precision: str = "no"):
    model = build_model(config, calendar_attrs, precision, device_type=torch.device(device).type)
    load_tunable_state(model, state, source="trained weights")  # lp/ft weights: no alignment head
    return model.to(device).eval()


def evaluate_and_export(accelerator, config: RunConfig, store, run_state: RunState, weights: dict, precision: str) -> dict:
    started = time.time()
    d = config.data
    device = accelerator.device
    model = load_trained_model(config, store.calendar_attrs, weights, device, precision)
    # validation was scored every epoch; run.json holds each stage's best
    results = {"test": evaluate_split(model, store, "test", seq_len=d.seq_len, pred_len=d.pred_len,
                                      batch_size=eval_batch_size(d.eval_batch_size, d.batch_size, device.type),
                                      task="forecast", rank=accelerator.process_index,
                                      world_size=accelerator.num_processes, device=device, precision=precision,
                                      show_progress=accelerator.is_main_process, num_workers=d.num_workers)}
    run_dir = Path(config.run_dir)
    if accelerator.is_main_process:
        write_metrics_json(run_dir / "metrics.json", results)
        write_export(run_dir / "export", config, store, model, weights, metrics=results, precision=precision)
        run_state.data["test"] = {"status": "done", "metrics": results["test"], "wall_time_s": round(time.time() - started, 3)}
        run_state.save()
        test = results["test"]
        print(f"test: mse {test['mse']:.6f}  mae {test['mae']:.6f}  samples {test['samples']}", flush=True)
    accelerator.wait_for_everyone()
    return results["test"]
