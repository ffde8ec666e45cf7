"""One stage of the recipe (align, lp or ft): build the model, train with early stopping, keep the best.

A stage starts from the previous stage's consolidated weights, trains only its parameter groups,
validates every epoch, keeps the best-validation weights and writes them as `weights.safetensors`
with `metrics.json` and `history.json` in its stage directory. Checkpoints (every epoch and every
`train.checkpoint_every_steps` steps) let a crashed stage resume where it stopped: the data stream
is deterministic for a (seed, epoch), so the position in it is restored by skipping the batches
already consumed.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from llm4ts_scale.config import STAGE_NAMES, RunConfig
from llm4ts_scale.data.windows import make_loader, rank_num_samples
from llm4ts_scale.errors import UserError
from llm4ts_scale.io import atomic_write_json
from llm4ts_scale.model import build_model
from llm4ts_scale.model.groups import STAGE_GROUPS
from llm4ts_scale.train.checkpoints import load_checkpoint, save_checkpoint, usable_checkpoint
from llm4ts_scale.train.faults import maybe_die
from llm4ts_scale.train.evaluation import autocast, evaluate_split, model_outputs
from llm4ts_scale.train.telemetry import StageTelemetry
from llm4ts_scale.train.weights import collect_tunable_state, load_tunable_state, save_weights

STAGE_TASK = {"align": "align", "lp": "forecast", "ft": "forecast"}


@dataclass
class StageResult:
    best_epoch: int
    val: dict
    history: list
    wall_time_s: float
    trainable_params: int


def steps_per_epoch(config: RunConfig, store, world_size: int) -> int:
    """Batches every rank runs per epoch: the same on all ranks (collectives stay in step)."""
    d = config.data
    per_rank = [rank_num_samples(store, "train", d.seq_len, d.pred_len, d.few_shot_percent, r, world_size)
                for r in range(world_size)]
    steps = min(per_rank) // d.batch_size
    if steps == 0:
        raise UserError(f"data.batch_size={d.batch_size} exceeds the {min(per_rank)} training windows a rank gets "
                        f"with {world_size} processes; lower data.batch_size or raise data.few_shot_percent")
    if config.train.limit_train_batches:
        steps = min(steps, config.train.limit_train_batches)
    return steps


def build_stage_model(config: RunConfig, store, stage: str, init_state: dict | None):
    """Fresh model for `stage`, loaded with the previous stage's weights, with only its groups trainable."""
    set_seed(config.seed + STAGE_NAMES.index(stage))
    model = build_model(config, store.calendar_attrs)
    if init_state:
        if stage != "align":  # the alignment head is dropped once forecasting starts
            init_state = {k: v for k, v in init_state.items() if not k.startswith("align_head.")}
        load_tunable_state(model, init_state, source="previous stage weights")
    model.set_trainable(STAGE_GROUPS[stage])
    return model


def _scheduler(optimizer, cfg, total_steps: int):
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def run_stage(accelerator, config: RunConfig, store, stage: str, stage_dir: Path,
              init_state: dict | None, bf16: bool) -> StageResult:
    stage_cfg = getattr(config.stages, stage)
    d, t = config.data, config.train
    task = STAGE_TASK[stage]
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    started = time.time()

    model = build_stage_model(config, store, stage, init_state)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
    steps = steps_per_epoch(config, store, world)
    scheduler = _scheduler(optimizer, stage_cfg, stage_cfg.epochs * math.ceil(steps / t.grad_accum))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    telemetry = StageTelemetry(optimizer, trainable)  # rank<k>.json: loop time, samples, RSS, optimizer bytes

    ckpt_root = stage_dir / "checkpoints"
    progress = {"epoch": 0, "step": 0, "global_step": 0, "best_val": None, "best_epoch": None,
                "bad_epochs": 0, "history": [], "world_size": world, "loss_sum": 0.0, "loss_count": 0,
                "windows": [0, 0]}
    latest = usable_checkpoint(ckpt_root, main)
    if latest is not None:
        progress = load_checkpoint(accelerator, latest)
        if main:
            print(f"[{stage}] resuming from {latest.name} (epoch {progress['epoch']}, step {progress['step']})", flush=True)

    eval_kwargs = dict(seq_len=d.seq_len, pred_len=d.pred_len, batch_size=d.eval_batch_size or d.batch_size,
                       task=task, rank=rank, world_size=world, device=accelerator.device, bf16=bf16,
                       show_progress=main, num_workers=d.num_workers)
    unwrapped = accelerator.unwrap_model(model)
    best_path = stage_dir / "best.safetensors"

    while progress["epoch"] < stage_cfg.epochs and progress["bad_epochs"] < t.patience:
        epoch = progress["epoch"]
        model.train()
        loader = make_loader(store, "train", d.seq_len, d.pred_len, d.batch_size, few_shot_percent=d.few_shot_percent,
                             shuffle=True, seed=config.seed, epoch=epoch, shuffle_buffer=d.shuffle_buffer,
                             rank=rank, world_size=world, num_workers=d.num_workers)
        batches = itertools.islice(loader, progress["step"], steps)  # skip what a resumed run already did
        bar = tqdm(batches, total=steps, initial=progress["step"], desc=f"{stage} epoch {epoch + 1}/{stage_cfg.epochs}",
                   disable=not main, leave=False)
        for batch in telemetry.timed(bar):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                with autocast(accelerator.device, bf16):
                    pred, target = model_outputs(model, batch, task)
                loss = torch.nn.functional.mse_loss(pred.float(), target.float())
                accelerator.backward(loss)
                if not deepspeed and accelerator.sync_gradients and t.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress["step"] += 1
            progress["global_step"] += 1
            progress["loss_sum"] += loss.item()
            progress["loss_count"] += 1
            # (count, checksum) of the windows this rank trained on: run.json shows ranks saw different data
            ids = batch["start"] * store.n_channels + batch["channel"]
            progress["windows"] = [progress["windows"][0] + len(ids), (progress["windows"][1] + int(ids.sum())) % 2**61]
            if main:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            accelerator.log({f"{stage}/train_loss": loss.item(), f"{stage}/lr": scheduler.get_last_lr()[0]},
                            step=progress["global_step"])
            maybe_die(f"{stage}.step")
            if (progress["step"] < steps and progress["global_step"] % t.checkpoint_every_steps == 0
                    and accelerator.sync_gradients):  # never inside a gradient-accumulation window
                save_checkpoint(accelerator, model, ckpt_root, progress)

        sums = accelerator.reduce(torch.tensor([progress["loss_sum"], progress["loss_count"]],
                                               dtype=torch.float64, device=accelerator.device), "sum")
        train_loss = (sums[0] / sums[1]).item()
        rank_windows = accelerator.gather(torch.tensor([progress["windows"]], dtype=torch.int64,
                                                       device=accelerator.device)).tolist()
        val = evaluate_split(unwrapped if not deepspeed else model, store, "val", **eval_kwargs)
        improved = progress["best_val"] is None or val["mse"] < progress["best_val"]
        if improved:
            state = collect_tunable_state(unwrapped)
            if stage != "align":  # forecasting stages carry no alignment head
                state = {k: v for k, v in state.items() if not k.startswith("align_head.")}
            if main:
                save_weights(state, best_path)
            progress.update(best_val=val["mse"], best_epoch=epoch + 1, bad_epochs=0)
        else:
            progress["bad_epochs"] += 1
        progress["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["mse"],
                                    "val_mae": val["mae"], "rank_windows": rank_windows,
                                    "time_s": time.time() - started})
        accelerator.log({f"{stage}/epoch_train_loss": train_loss, f"{stage}/val_loss": val["mse"]},
                        step=progress["global_step"])
        if main:
            print(f"[{stage}] epoch {epoch + 1}: train {train_loss:.5f}  val {val['mse']:.5f}"
                  f"{'  *best*' if improved else ''}", flush=True)
        progress.update(epoch=epoch + 1, step=0, loss_sum=0.0, loss_count=0, windows=[0, 0])
        save_checkpoint(accelerator, model, ckpt_root, progress)

    accelerator.wait_for_everyone()
    best_val = progress["history"][progress["best_epoch"] - 1]
    if main:
        if best_path.exists():  # absent only when a crash came after this rename: the weights are in place
            best_path.replace(stage_dir / "weights.safetensors")
        atomic_write_json(stage_dir / "history.json", progress["history"])
        atomic_write_json(stage_dir / "metrics.json", {"val": {"mse": best_val["val_loss"], "mae": best_val["val_mae"]},
                                                       "best_epoch": progress["best_epoch"]})
    telemetry.write(stage_dir / f"rank{rank}.json")
    accelerator.wait_for_everyone()
    accelerator.free_memory(model, optimizer, scheduler)
    return StageResult(best_epoch=progress["best_epoch"], val={"mse": best_val["val_loss"], "mae": best_val["val_mae"]},
                       history=progress["history"], wall_time_s=time.time() - started, trainable_params=trainable)
