"""After the last stage: score the test split with the best-validation weights, write metrics.json, export.

Evaluation runs on a plain (not DeepSpeed-wrapped) copy of the model on every rank, each rank scoring
its own shard of the test windows; sums are reduced across ranks, so every window counts once.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from llm4ts_scale.config import RunConfig
from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.export import write_export
from llm4ts_scale.metrics import write_metrics_json
from llm4ts_scale.model import build_model
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
        test = results["test"]
        print(f"test: mse {test['mse']:.6f}  mae {test['mae']:.6f}  samples {test['samples']}", flush=True)
        baselines = compare_with_baselines(config, store) if config.train.compare_baselines else {}
        run_state.data["test"] = {"status": "done", "metrics": test, "baselines": baselines,
                                  "wall_time_s": round(time.time() - started, 3)}
        run_state.save()
    accelerator.wait_for_everyone()
    return results["test"]


# DLinear trains on every training window for up to 10 epochs: seconds on ETTh1, too long on the
# largest datasets, where the comparison is left to `llm4ts-scale evaluate --baseline dlinear`.
DLINEAR_MAX_TRAIN_SAMPLES = 500_000


def compare_with_baselines(config: RunConfig, store) -> dict:
    """Naive (repeat the last value) and DLinear on the same test windows, printed under the model's score:
    the floors a forecaster must clear (docs/ARCHITECTURE.md section 4)."""
    from llm4ts_scale.baselines import baseline_forecast
    from llm4ts_scale.data.windows import make_loader
    from llm4ts_scale.dlinear import train_dlinear
    from llm4ts_scale.metrics import MetricAccumulator

    d = config.data
    naive = MetricAccumulator()
    for batch in make_loader(store, "test", d.seq_len, d.pred_len, 4096):
        naive.update(baseline_forecast("naive", batch["x"], d.pred_len), batch["y"])
    out = {"naive": naive.compute()}
    lines = [f"naive:   mse {out['naive']['mse']:.6f}  mae {out['naive']['mae']:.6f}  (repeat the last value)"]
    if store.num_samples("train", d.seq_len, d.pred_len, d.few_shot_percent) <= DLINEAR_MAX_TRAIN_SAMPLES:
        result = train_dlinear(store, d.seq_len, d.pred_len, few_shot_percent=d.few_shot_percent, seed=config.seed)
        out["dlinear"] = {**result.test, "val_mse": result.val["mse"], "best_epoch": result.best_epoch,
                          "wall_time_s": round(result.wall_time_s, 1)}
        lines.append(f"dlinear: mse {result.test['mse']:.6f}  mae {result.test['mae']:.6f}  (trained on the same "
                     f"training windows in {result.wall_time_s:.0f} s, epoch chosen on validation)")
    else:
        lines.append("dlinear: skipped (too many training windows); run llm4ts-scale evaluate --baseline dlinear")
    print("\n".join(lines), flush=True)
    return out
