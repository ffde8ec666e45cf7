"""A stage trained by epochs of AdamW (align, FT, and LP with stages.lp.solver=sgd): setup, train_epoch,
validate, keep the best, checkpoint, and `run`, the loop that ties them together.

Checkpoints (every epoch and every `train.checkpoint_every_steps` steps) let a crashed stage resume where it
stopped: the data stream is deterministic for a (seed, epoch), so the position in it is restored by skipping the
batches already consumed. A probing stage computes the frozen part's features once and reuses them every epoch.
"""

from __future__ import annotations

import itertools
import time

import torch
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from llm4ts_scale.core import heap
from llm4ts_scale.core.precision import autocast
from llm4ts_scale.core.stages import stage_spec
from llm4ts_scale.data.corpus import corpus_loader
from llm4ts_scale.data.windows import Shuffle, make_loader, rank_num_samples
from llm4ts_scale.evaluation import model_outputs
from llm4ts_scale.train.checkpoints import load_checkpoint, save_checkpoint, usable_checkpoint
from llm4ts_scale.train.feature_cache import FeatureCache, cache_bytes
from llm4ts_scale.train.stage import Progress, StageRecipe, StageResult, steps_per_epoch


def lr_lambda(schedule: str, steps_per_epoch: int):
    """Multiplier of the base lr at optimizer step s. cosine/constant: with linear warm-up; type1 and
    type3 are Time-Series-Library's per-epoch rules as the official LLM4TS loop applies them (after
    each epoch, for the next): type1 keeps the base lr for 2 epochs then halves every epoch; type3
    keeps it for 4 epochs then multiplies by 0.9 every epoch."""
    if schedule == "type1":
        return lambda s: 0.5 ** max(0, s // steps_per_epoch - 1)
    if schedule == "type3":
        return lambda s: 0.9 ** max(0, s // steps_per_epoch - 3)
    return None


def make_scheduler(optimizer, cfg, total_steps: int, steps_per_epoch: int):
    warmup = int(cfg.warmup_ratio * total_steps)
    rule = lr_lambda(cfg.schedule, steps_per_epoch)
    if rule is not None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


class SgdStage(StageRecipe):
    """Train one stage by epochs: setup, then per epoch train_epoch, validate, keep the best, checkpoint."""

    solver = "sgd"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config, stage = self.config, self.spec.name
        # A forecasting stage that starts from a forecasting head (ft after lp) scores that start first
        # and keeps it when no epoch beats it on validation.
        active = config.active_stages()
        earlier = active[:active.index(stage)] if stage in active else []
        self.guards_start = (self.spec.task == "forecast" and self.init_state is not None
                             and any(stage_spec(name).task == "forecast" for name in earlier))
        # Built by setup(): the model and optimizer go through the accelerator's prepare; a resume replaces progress.
        self.optimizer = self.scheduler = None
        self.steps = 0
        self.progress = Progress(world_size=self.accelerator.num_processes)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        acc, t = self.accelerator, self.config.train
        model = self.build()
        optimizer = torch.optim.AdamW(self.params, lr=self.stage_cfg.lr, weight_decay=self.stage_cfg.weight_decay)
        self.steps = steps_per_epoch(self.config, self.store, acc.num_processes, self.spec.name, self.corpus)
        updates_per_epoch = self.steps // t.grad_accum
        # Not passed to prepare(): Accelerate would step it once per process for every optimizer step
        # (it assumes a schedule sized for one process), running it N times too fast on N processes.
        self.scheduler = make_scheduler(optimizer, self.stage_cfg, self.stage_cfg.epochs * updates_per_epoch,
                                        updates_per_epoch)
        # Its state travels in progress.json, not through register_for_checkpointing: the accelerator
        # outlives the stage, and objects registered by earlier stages would break a later resume.
        prepared, self.optimizer = acc.prepare(model, optimizer)
        self.adopt(prepared)
        latest = usable_checkpoint(self.ckpt_root, self.main)
        if latest is not None:
            self.progress = Progress.from_dict(load_checkpoint(acc, latest))
            self.scheduler.load_state_dict(self.progress.scheduler)
            self.log(f"resuming from {latest.name} (epoch {self.progress.epoch}, step {self.progress.step})")
        if self.probes:
            self.fill_feature_caches()

    # ------------------------------------------------------------------ LP feature cache

    def use_feature_cache(self) -> bool:
        """on/off as asked; auto: when filling it costs fewer frozen forwards than the LP epochs would run
        (not so with a short train.limit_train_batches) and it fits in train.feature_cache_gb."""
        d, t = self.config.data, self.config.train
        if t.lp_feature_cache == "off" or not self.probes:
            return False
        if t.lp_feature_cache == "on":
            return True
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        train = rank_num_samples(self.store, self.windows("train"), rank, world)
        val = rank_num_samples(self.store, self.windows("val"), rank, world)
        if train + val >= self.stage_cfg.epochs * (self.steps * d.batch_size + val):
            return False
        need = cache_bytes(train + val, *self.unwrapped.feature_shape)
        if need > t.feature_cache_gb * 2**30:
            self.log(f"LP feature cache off: {need / 2**30:.1f} GiB of features per rank would exceed "
                     f"train.feature_cache_gb={t.feature_cache_gb} (raise it, or set train.lp_feature_cache=on)")
            return False
        return True

    def fill_feature_caches(self) -> None:
        if not self.use_feature_cache():
            return
        for split in ("train", "val"):
            self.caches[split] = FeatureCache(self.store.n_series).fill(
                self.model, self.store, self.windows(split), self.eval_batch, self.topology)
        self.log(f"LP features cached once for {len(self.caches['train'])} train and {len(self.caches['val'])} "
                 "validation windows on this rank (frozen part without dropout)")

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> float:
        """Train until the epoch's step count; returns the mean training loss over all ranks."""
        acc, d, t, p = self.accelerator, self.config.data, self.config.train, self.progress
        self.model.train()
        acc.step = 0  # Accelerate's accumulation counter: every epoch starts a fresh accumulation window
        self.optimizer.zero_grad()
        where = dict(shuffle=Shuffle(self.config.seed, p.epoch, d.shuffle_buffer), rank=acc.process_index,
                     world_size=acc.num_processes, num_workers=d.num_workers)
        train = self.windows("train")
        if self.corpus:
            loader = corpus_loader(self.corpus, train, d.batch_size, n_attrs=len(self.store.calendar_attrs), **where)
        else:
            loader = make_loader(self.store, train, d.batch_size, **where)
        batches = itertools.islice(loader, p.step, self.steps)  # skip what a resumed run already did
        bar = tqdm(batches, total=self.steps, initial=p.step, leave=False, disable=not self.main,
                   desc=f"{self.spec.name} epoch {p.epoch + 1}/{self.stage_cfg.epochs}")
        cache = self.caches.get("train")
        for hook in self.hooks:
            hook.on_epoch_begin(self)
        for batch in bar:
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            hidden = cache.lookup(batch) if cache is not None else None
            with acc.accumulate(self.model):
                with autocast(acc.device, self.precision):
                    pred, target = model_outputs(self.model, batch, self.spec.task, hidden)
                loss = torch.nn.functional.mse_loss(pred.float(), target.float())
                acc.backward(loss)
                if not self.deepspeed and acc.sync_gradients and t.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, t.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients:  # the lr this update used, read from the optimizer DeepSpeed steps
                    p.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
                    self.scheduler.step()
                self.optimizer.zero_grad()
            if self.partitioned and acc.sync_gradients:
                heap.release()  # what this step gathered and freed goes back to the OS (core/heap.py)
            p.step += 1
            p.global_step += 1
            p.loss_sum += loss.item()
            p.loss_count += 1
            for hook in self.hooks:
                hook.on_batch(self, batch, loss)
            if self.main:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            acc.log({f"{self.spec.name}/train_loss": loss.item(), f"{self.spec.name}/lr": self.scheduler.get_last_lr()[0]},
                    step=p.global_step)
            if p.step < self.steps and p.global_step % t.checkpoint_every_steps == 0 and acc.sync_gradients:
                self.checkpoint()  # never inside a gradient-accumulation window
        sums = acc.reduce(torch.tensor([p.loss_sum, p.loss_count], dtype=torch.float64, device=acc.device), "sum")
        return (sums[0] / sums[1]).item()

    def checkpoint(self) -> None:
        self.progress.scheduler = self.scheduler.state_dict()
        save_checkpoint(self.accelerator, self.model, self.ckpt_root, self.progress.to_dict())

    # ------------------------------------------------------------------ the loop

    def run(self) -> StageResult:
        self.setup()
        p, acc = self.progress, self.accelerator
        if self.guards_start and p.epoch == 0 and p.step == 0 and p.start_val is None:
            self.score_start()
        while p.epoch < self.stage_cfg.epochs and p.bad_epochs < self.config.train.patience:
            train_loss = self.train_epoch()
            extra = {k: v for hook in self.hooks for k, v in hook.on_epoch_end(self).items()}
            started = time.perf_counter()
            val = self.validate()
            self.telemetry.count_eval(val["samples"], time.perf_counter() - started)
            improved = self.keep_if_best(val)
            p.history.append({"epoch": p.epoch + 1, "train_loss": train_loss, "val_loss": val["mse"],
                              "val_mae": val["mae"], **extra, "lr_first": p.lrs[0] if p.lrs else None,
                              "lr_last": p.lrs[-1] if p.lrs else None, "lrs": [float(f"{v:.6g}") for v in p.lrs],
                              "time_s": time.time() - self.started})
            acc.log({f"{self.spec.name}/epoch_train_loss": train_loss, f"{self.spec.name}/val_loss": val["mse"]},
                    step=p.global_step)
            self.log(f"epoch {p.epoch + 1}: train {train_loss:.5f}  val {val['mse']:.5f}{'  *best*' if improved else ''}")
            p.epoch, p.step, p.loss_sum, p.loss_count, p.lrs = p.epoch + 1, 0, 0.0, 0, []
            self.checkpoint()
        return self.finish()

    def score_start(self) -> None:
        """Epoch 0: validate the weights this stage starts from (the previous stage's best) and hold them
        as the best so far, so that the stage keeps them unless an epoch validates better."""
        p = self.progress
        val = self.validate()
        p.start_val = {"mse": val["mse"], "mae": val["mae"]}
        self.keep_if_best(val)
        p.best_epoch = 0
        self.log(f"start (previous stage's weights): val {val['mse']:.5f}")
        # no checkpoint here: the first one (in epoch 1) carries this in its progress; a crash before it
        # scores the start again, and a stage boundary still resumes with any number of processes
