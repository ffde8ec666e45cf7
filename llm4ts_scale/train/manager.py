"""The run: align -> lp -> ft in one run directory, resumable, then test, baselines and export.

Each stage hands the next one a consolidated weights file, so stages are independent units: a done
stage is skipped on re-run, a running one resumes from its last checkpoint, and a run may start at
`lp` or `ft`. The test split is scored once, with the last stage's best-validation weights, on a plain
(not DeepSpeed-wrapped) copy of the model on every rank, each rank scoring its own shard of the test
windows; sums are reduced across ranks, so every window counts once.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llm4ts_scale.core import heap
from llm4ts_scale.core.config import RunConfig
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import file_sha256
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.core.run_state import RunState
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.core.weights import load_tunable_state, load_weights
from llm4ts_scale.data.corpus import describe as describe_corpus
from llm4ts_scale.data.corpus import open_corpus
from llm4ts_scale.data.sources import open_run_store
from llm4ts_scale.data.windows import WindowSpec
from llm4ts_scale.evaluation import calibrate, eval_batch_size, evaluate_split, score_with_intervals
from llm4ts_scale.inference.export import write_export
from llm4ts_scale.model import build_model
from llm4ts_scale.model.backbone import backbone_config
from llm4ts_scale.model.partitioned import zero3_enabled
from llm4ts_scale.stats.metrics import write_metrics_json
from llm4ts_scale.train.accelerator import build_accelerator, release_engine, serving_engine
from llm4ts_scale.train.aligned import artifact_dir, load_aligned, write_artifact
from llm4ts_scale.train.probe_stage import ExactProbeStage
from llm4ts_scale.train.sgd_stage import SgdStage
from llm4ts_scale.train.stage import StageResult, steps_per_epoch
from llm4ts_scale.train.telemetry import AnonPeak

log = get_logger(__name__)

def _flat(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _open_run_state(accelerator, config: RunConfig, store, restart: bool, precision: str, reason: str) -> RunState:
    """Rank 0 creates or checks run.json; the other ranks read what it decided."""
    run_dir = Path(config.run_dir)
    error = None
    if accelerator.is_main_process:
        try:
            _check_run_dir(run_dir)
            if restart and run_dir.exists():
                shutil.rmtree(run_dir)
            if (run_dir / "run.json").exists():
                RunState.read(run_dir).check_matches(config, store.fingerprint)
            elif run_dir.exists() and any(run_dir.iterdir()):
                raise UserError(f"run_dir {run_dir} exists and is not a run directory; choose a new run_dir "
                                "or pass --restart to clear it")
            else:
                d = config.data
                series = store.series_report(d.seq_len, d.pred_len, d.few_shot_percent)
                if series["skipped_too_short"] or series["without_train_windows"]:
                    log.warning(f"{series['skipped_too_short']} of {series['series']} series are too short for "
                                f"seq_len={d.seq_len} + pred_len={d.pred_len} in every split and are skipped; "
                                f"{series['without_train_windows']} have no training window (run.json: series)")
                RunState.new(config, store.fingerprint, accelerator.num_processes, precision, reason, series).save()
        except UserError as err:
            error = str(err)
        except OSError as err:  # unwritable, full, or otherwise unusable
            error = (f"cannot write run_dir {run_dir}: {err.strerror or type(err).__name__}; "
                     "choose a run_dir you can write to")
    error = _broadcast(accelerator, error)
    if error:
        raise UserError(error)
    return RunState.read(run_dir)


def _check_run_dir(run_dir: Path) -> None:
    """A run_dir must be a directory, or not exist yet (a path whose parent is a directory)."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise UserError(f"run_dir {run_dir} is a broken or looping symlink; remove it or choose another run_dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} is a file, not a directory; choose another run_dir")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"run_dir {run_dir} lies under {parent}, which is a file; choose another run_dir")
            break


def _broadcast(accelerator, obj):
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _preflight(config: RunConfig, store, world_size: int, corpus=None) -> tuple[dict, dict] | None:
    """Refuse data that cannot feed this run before anything is written to the run directory; returns the aligned
    backbone of model.aligned_from (weights, record), read once, or None."""
    d = config.data
    for split in ("train", "val", "test"):
        store.num_samples(split, d.seq_len, d.pred_len, d.few_shot_percent if split == "train" else 100)
    for stage in config.active_stages():
        steps_per_epoch(config, store, world_size, stage, corpus)
    if config.model.aligned_from:
        return load_aligned(config)  # a missing or mismatched artifact is refused here, before run.json exists
    return None


def _verified_weights(path: Path, sha256: str | None) -> dict:
    if sha256 is not None and path.is_file() and file_sha256(path) != sha256:
        raise UserError(f"weights file {path} is corrupted (checksum differs from run.json); restore it from a "
                        "backup, or pass --restart to train again")
    return load_weights(path)


@dataclass
class RunOutcome:
    """What `train` leaves, on every path (finished before, stopped after a stage, tested): the test metrics ({} when
    the test was not scored: train.test=false, a stop after a stage) and the last stage's best validation metrics.
    Read from run.json, so every rank returns the same."""
    run_dir: Path
    test: dict
    val: dict

    @classmethod
    def read(cls, run_dir: Path, last_stage: str) -> RunOutcome:
        state = RunState.read(run_dir)
        return cls(run_dir, state.test.get("metrics") or {}, state.stage(last_stage).get("val") or {})


def train(config: RunConfig, ds_config: str | None = None, restart: bool = False,
          stop_after: str | None = None) -> RunOutcome:
    """Run every pending stage, then test and export. `stop_after="align"` (the `llm4ts-scale align` command) stops
    once the aligned backbone is written."""
    run_dir = Path(config.run_dir)
    AnonPeak.start()  # per-rank memory telemetry counts loading too (train/telemetry.py)
    accelerator, precision, precision_reason = build_accelerator(config, ds_config, str(run_dir))
    if zero3_enabled():
        heap.map_large_allocations()  # what a step gathers and frees goes back to the OS (core/heap.py)
    main = accelerator.is_main_process
    with accelerator.local_main_process_first():  # one process per node prepares data and backbone caches
        store = open_run_store(config.data)
        corpus = None
        if config.stages.align.data and "align" in config.active_stages():
            corpus = open_corpus(config.stages.align.data, store, config.data.few_shot_percent, seed=config.seed,
                                 fill=config.data.fill)
        aligned = _preflight(config, store, accelerator.num_processes, corpus)
        backbone_config(config.model.backbone, config.model.layers)  # converts a built-in alias once
    AnonPeak.mark_floor()  # what the process holds before any model: the floor of the memory plan
    state = _open_run_state(accelerator, config, store, restart, precision, precision_reason)
    last_stage = stop_after or config.active_stages()[-1]
    if state.finished:
        if main:
            log.info(f"run {run_dir} is already finished; nothing to do (pass --restart to train again)")
        return RunOutcome.read(run_dir, last_stage)
    if config.train.log_with != "none":
        accelerator.init_trackers("llm4ts", config=_flat("", config.to_dict(), {}))
    if main:
        log.info(f"llm4ts-scale: {accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
                 f"precision {'bf16' if precision == 'bf16' else 'fp32'} ({precision_reason}), "
                 f"stages {', '.join(config.active_stages())}, run_dir {run_dir}")
        log.debug(f"config hash {state.data.get('config_hash')}, data fingerprint {store.fingerprint}")

    init_state = None
    if aligned is not None:  # an aligned backbone from another run stands in for the alignment stage
        init_state, record = aligned
        if main and state.set_aligned_from(record):
            state.save()
    for stage in config.active_stages():
        stage_dir = run_dir / stage
        if state.stage(stage)["status"] == "done":
            init_state = _verified_weights(stage_dir / "weights.safetensors", state.stage(stage).get("weights_sha256"))
            if stage == "align":
                _ensure_artifact(accelerator, config, store, state, init_state, precision)
            if stage == stop_after:
                break
            continue
        if main:
            state.update_stage(stage, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                               **({"corpus": describe_corpus(corpus, config.data.seq_len, config.data.stride)}
                                  if corpus and stage == "align" else {}))
            state.save()
        result = run_stage(accelerator, config, store, stage, init_state, precision, corpus=corpus)
        heap.release()  # the stage's model and engine, released by the recipe (train/accelerator.py:release_engine)
        if main:
            state.update_stage(stage, status="done", best_epoch=result.best_epoch, val=result.val, solver=result.solver,
                               start_val=result.start_val, kept_start=result.best_epoch == 0,
                               epochs_run=len(result.history), history=result.history, trainable_params=result.trainable_params,
                               wall_time_s=round(result.wall_time_s, 3),
                               weights_sha256=file_sha256(stage_dir / "weights.safetensors"))
            state.save()
        accelerator.wait_for_everyone()
        init_state = load_weights(stage_dir / "weights.safetensors")
        if stage == "align":
            _ensure_artifact(accelerator, config, store, state, init_state, precision)
        if stage == stop_after:
            break
    if stop_after is None:
        evaluate_and_export(accelerator, config, store, state, init_state, precision)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if main and stop_after is None and config.train.compare_baselines and config.train.test:
        state.add_baselines(compare_with_baselines(config, store))  # after the last collective: others may exit
        state.save()
    return RunOutcome.read(run_dir, last_stage)


RECIPES = {"sgd": SgdStage, "exact": ExactProbeStage}  # stages.<name>.solver -> the recipe that runs the stage


def run_stage(accelerator, config: RunConfig, store, stage: str, init_state: dict | None, precision: str,
              corpus=None) -> StageResult:
    recipe = RECIPES[config.stages[stage].solver]
    return recipe(accelerator, config, store, stage, init_state, precision, corpus=corpus).run()


def _ensure_artifact(accelerator, config: RunConfig, store, state: RunState, weights: dict, precision: str) -> None:
    """The finished alignment stage as an aligned-backbone artifact (llm4ts_scale/train/aligned.py), once. Every rank
    calls it: under ZeRO-3 building the model is a collective."""
    run_dir = Path(config.run_dir)
    if _broadcast(accelerator, (artifact_dir(run_dir) / "config.json").is_file()):
        return
    model = load_trained_model(config, store.calendar_attrs, weights, accelerator.device, precision)
    if accelerator.is_main_process:
        path = write_artifact(run_dir, config, store, model, weights, state.stage("align").get("corpus"))
        log.info(f"aligned backbone written to {path} (start other runs from it with model.aligned_from={run_dir})")
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------- after the last stage


def load_trained_model(config: RunConfig, calendar_attrs: list[str], state: dict, device, precision: str = "no"):
    """The trained forecaster in eval mode. Under ZeRO-3 (every rank must call) it comes back partitioned: score it
    through `serving_engine`."""
    model = build_model(config, calendar_attrs, precision, device_type=torch.device(device).type)
    load_tunable_state(model, state, source="trained weights")  # lp/ft weights: no alignment head
    if not zero3_enabled():
        model = model.to(device)
    return model.eval()


def evaluate_and_export(accelerator, config: RunConfig, store, run_state: RunState, weights: dict, precision: str) -> dict:
    """Calibrate the prediction intervals on the validation windows, score the test split once (unless
    train.test is false: a validation-only sweep) with them, then export (with adaptive calibration, the
    table carries each series' width factor at the end of the test split: where predict starts from)."""
    started = time.time()
    d = config.data
    device = accelerator.device
    model = load_trained_model(config, store.calendar_attrs, weights, device, precision)
    scorer = serving_engine(accelerator, model)
    topology = Topology.of(accelerator, precision, d.num_workers)
    batch = eval_batch_size(d.eval_batch_size, d.batch_size, device.type)
    table = calibrate(scorer, store, WindowSpec("val", d.seq_len, d.pred_len, step=d.val_stride), topology,
                      batch_size=batch, method=config.calibration)
    if config.train.test:  # validation was scored every epoch; run.json holds each stage's best
        results = {"test": evaluate_split(scorer, store, WindowSpec("test", d.seq_len, d.pred_len), topology,
                                          task="forecast", batch_size=batch, conformal=table)}
    else:  # the last stage's best validation (run.json is current on the main process only)
        results = {"val": run_state.stage(config.active_stages()[-1])["val"]} if accelerator.is_main_process else {}
    run_dir = Path(config.run_dir)
    if accelerator.is_main_process:
        write_metrics_json(run_dir / "metrics.json", results)
        write_export(run_dir / "export", config, store, model, weights, metrics=results, precision=precision,
                     conformal=table)
        if "test" in results:
            test = results["test"]
            log.info(f"test: mse {test['mse']:.6f}  mae {test['mae']:.6f}  {_interval_summary(test)}  "
                     f"samples {test['samples']}")
            run_state.set_test(status="done", metrics=test, wall_time_s=round(time.time() - started, 3))
        else:
            log.info(f"test: not scored (train.test=false); best val mse {results['val']['mse']:.6f}")
            run_state.set_test(status="skipped")
        run_state.save()
    accelerator.wait_for_everyone()
    release_engine(accelerator, scorer)
    return results.get("test", results.get("val"))


def _interval_summary(metrics: dict) -> str:
    mase = f"  mase {metrics['mase']:.3f}" if "mase" in metrics else ""
    return (f"crps {metrics['crps']:.4f}  80% coverage {metrics['coverage_80']:.3f} "
            f"({metrics.get('calibration', 'split')}){mase}")


# DLinear trains on every training window for up to 10 epochs: seconds on ETTh1, too long on the
# largest datasets, where the comparison is left to `llm4ts-scale evaluate --baseline dlinear`. PatchTST
# (a small transformer, up to 100 epochs) is left to `evaluate --baseline patchtst` sooner.
DLINEAR_MAX_TRAIN_SAMPLES = 500_000
PATCHTST_MAX_TRAIN_SAMPLES = 100_000


def compare_with_baselines(config: RunConfig, store) -> dict:
    """Naive (repeat the last value), DLinear, PatchTST (from scratch, selected on the run's validation windows)
    and rlinear on the same test windows, each with the same conformal intervals as the model, printed
    under the model's score: the floors a forecaster must clear (docs/ARCHITECTURE.md section 4)."""
    from llm4ts_scale.baselines.patchtst import PatchTSTRecipe
    from llm4ts_scale.baselines.registry import Windows, fit

    d = config.data
    val, test = WindowSpec("val", d.seq_len, d.pred_len, step=d.val_stride), WindowSpec("test", d.seq_len, d.pred_len)
    train_samples = store.num_samples("train", d.seq_len, d.pred_len, d.few_shot_percent)
    windows = Windows(store, d.seq_len, d.pred_len, d.few_shot_percent, config.seed)
    recipes = {"patchtst": PatchTSTRecipe(patch_len=min(d.patch_len, d.seq_len), stride=d.stride, val_stride=d.val_stride)}
    limits = {"dlinear": DLINEAR_MAX_TRAIN_SAMPLES, "patchtst": PATCHTST_MAX_TRAIN_SAMPLES}
    out, lines = {}, []
    for name in ("naive", "dlinear", "patchtst", "rlinear"):
        if train_samples > limits.get(name, train_samples):
            lines.append(f"{name}: skipped (too many training windows); run llm4ts-scale evaluate --baseline {name}")
            continue
        fitted = fit(name, windows, recipe=recipes.get(name), show_progress=name == "patchtst")
        m = out[name] = {**score_with_intervals(fitted.forecast, store, val, test, method=config.calibration),
                         **({"val_mse": fitted.val["mse"]} if fitted.val else {}), **fitted.facts}
        lines.append(f"{name + ':':<9} mse {m['mse']:.6f}  mae {m['mae']:.6f}  {_interval_summary(m)}  ({fitted.note})")
    log.info("\n".join(lines))
    return out
