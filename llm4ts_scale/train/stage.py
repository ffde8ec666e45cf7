"""One stage of the recipe (align, lp or ft), as a small recipe class: setup, train_epoch, validate,
checkpoint, and `run`, the loop that ties them together.

A stage starts from the previous stage's consolidated weights, trains only its parameter groups
(llm4ts_scale/core/stages.py), validates every epoch, keeps the best-validation weights and writes them as
`weights.safetensors` with `metrics.json` and `history.json` in its stage directory. Checkpoints
(every epoch and every `train.checkpoint_every_steps` steps) let a crashed stage resume where it
stopped: the data stream is deterministic for a (seed, epoch), so the position in it is restored by
skipping the batches already consumed. What is not training (telemetry, fault injection, the window
checksum the tests read) is a hook called by the loop.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from llm4ts_scale.core import heap
from llm4ts_scale.core.config import RunConfig, stage_groups
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.core.precision import autocast
from llm4ts_scale.core.stages import STAGE_NAMES, StageSpec, stage_spec
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.core.weights import collect_tunable_state, full_shape, load_tunable_state, save_weights
from llm4ts_scale.data.corpus import corpus_loader, corpus_rank_samples
from llm4ts_scale.data.windows import Shuffle, WindowSpec, make_loader, rank_num_samples
from llm4ts_scale.evaluation import eval_batch_size, evaluate_split, model_outputs
from llm4ts_scale.model import build_model
from llm4ts_scale.train.checkpoints import load_checkpoint, save_checkpoint, usable_checkpoint
from llm4ts_scale.train.exact_probe import fit_exact_head
from llm4ts_scale.train.feature_cache import FeatureCache, cache_bytes
from llm4ts_scale.train.hooks import FaultPoints, StageHook, WindowChecksum
from llm4ts_scale.train.telemetry import StageTelemetry

log = get_logger(__name__)

@dataclass
class Progress:
    """Where a stage is; saved with every checkpoint (progress.json) and restored on resume."""
    epoch: int = 0  # epochs finished
    step: int = 0  # batches done in the current epoch
    global_step: int = 0
    best_val: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    world_size: int = 1
    loss_sum: float = 0.0  # of the current epoch, this rank
    loss_count: int = 0
    lrs: list = field(default_factory=list)  # learning rate of every optimizer step of the current epoch
    scheduler: dict = field(default_factory=dict)  # the LR scheduler's state_dict (JSON: lambdas are functions)
    extra: dict = field(default_factory=dict)  # hooks' state (e.g. the window checksum)
    start_val: dict | None = None  # validation of the weights the stage started from (epoch 0), when scored

    @classmethod
    def from_dict(cls, values: dict) -> Progress:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageResult:
    best_epoch: int  # 0: no epoch beat the weights the stage started from, which it kept
    val: dict
    history: list
    wall_time_s: float
    trainable_params: int
    start_val: dict | None = None
    solver: str = "sgd"


def stage_horizon(config: RunConfig, spec: StageSpec) -> int:
    """Steps after the look-back a window carries: H to forecast, or the stride for alignment (the true
    next patch), so alignment data does not depend on the forecast horizon."""
    return config.data.stride if spec.task == "align" else config.data.pred_len


def steps_per_epoch(config: RunConfig, store, world_size: int, stage: str = "ft", corpus=None) -> int:
    """Batches every rank runs per epoch: the same on all ranks (collectives stay in step), and a multiple
    of train.grad_accum, so that no partial accumulation window carries gradients into the next epoch.
    `corpus`: the alignment corpus's sources (llm4ts_scale/data/corpus.py) in place of the store's windows."""
    d, t = config.data, config.train
    horizon = stage_horizon(config, stage_spec(stage))
    if corpus:
        per_rank = [corpus_rank_samples(corpus, d.seq_len, horizon, r, world_size) for r in range(world_size)]
    else:
        spec = WindowSpec("train", d.seq_len, horizon, d.few_shot_percent)
        per_rank = [rank_num_samples(store, spec, r, world_size) for r in range(world_size)]
    steps = min(per_rank) // d.batch_size
    if t.limit_train_batches:
        steps = min(steps, t.limit_train_batches)
    steps -= steps % t.grad_accum
    if steps == 0:
        raise UserError(f"data.batch_size={d.batch_size} x train.grad_accum={t.grad_accum} exceeds the {min(per_rank)} "
                        f"training windows a rank gets with {world_size} processes in stage {stage}; lower "
                        "data.batch_size or train.grad_accum, or raise data.few_shot_percent")
    return steps


def build_stage_model(config: RunConfig, store, stage: str, init_state: dict | None, precision: str = "no"):
    """Fresh model for `stage`, loaded with the previous stage's weights, with only its groups trainable."""
    spec = stage_spec(stage)
    set_seed(config.seed + STAGE_NAMES.index(stage))
    model = build_model(config, store.calendar_attrs, precision)
    if init_state:
        if not spec.keeps_align_head:  # the alignment head is dropped once forecasting starts
            init_state = {k: v for k, v in init_state.items() if not k.startswith("align_head.")}
        load_tunable_state(model, init_state, source="previous stage weights")
    model.set_trainable(stage_groups(config, stage))
    return model


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


class StageRecipe:
    """Train one stage. `run()` = setup, then per epoch: train_epoch, validate, keep the best, checkpoint."""

    def __init__(self, accelerator, config: RunConfig, store, stage: str, init_state: dict | None,
                 precision: str = "no", hooks: list[StageHook] | None = None, corpus=None):
        self.accelerator, self.config, self.store = accelerator, config, store
        self.spec = stage_spec(stage)
        self.stage_cfg = config.stages[stage]
        self.stage_dir, self.init_state, self.precision = Path(config.run_dir) / stage, init_state, precision
        self.topology = Topology.of(accelerator, precision, config.data.num_workers)
        self.corpus = corpus if self.spec.task == "align" else None  # alignment sources besides the store's windows
        channels = sum(src.store.n_channels for src in self.corpus) if self.corpus else store.n_series
        self.hooks = hooks if hooks is not None else [WindowChecksum(channels), FaultPoints()]
        self.horizon = stage_horizon(config, self.spec)
        self.main = accelerator.is_main_process
        self.progress = Progress(world_size=accelerator.num_processes)
        self.caches: dict[str, FeatureCache] = {}
        groups = stage_groups(config, stage)
        # Only the forecasting head trains: the frozen part's features are the same every epoch.
        self.probes = self.spec.task == "forecast" and groups <= {"head"}
        self.exact = self.probes and self.stage_cfg.solver == "exact"
        # A forecasting stage that starts from a forecasting head (ft after lp) scores that start first
        # and keeps it when no epoch beats it on validation.
        earlier = config.active_stages()[:config.active_stages().index(stage)] if stage in config.active_stages() else []
        self.guards_start = (self.spec.task == "forecast" and not self.exact and init_state is not None
                             and any(stage_spec(name).task == "forecast" for name in earlier))
        self.eval_batch = eval_batch_size(config.data.eval_batch_size, config.data.batch_size, accelerator.device.type)
        self.ckpt_root = self.stage_dir / "checkpoints"
        self.best_path = self.stage_dir / "best.safetensors"
        # Built by setup(): the model and optimizer go through the accelerator's prepare.
        self.started = 0.0
        self.model = self.unwrapped = self.optimizer = self.scheduler = None
        self.params: list[torch.nn.Parameter] = []
        self.trainable = self.steps = 0
        self.deepspeed = self.partitioned = False
        self.telemetry: StageTelemetry | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        acc, t = self.accelerator, self.config.train
        self.started = time.time()
        model = build_stage_model(self.config, self.store, self.spec.name, self.init_state, self.precision)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(full_shape(p).numel() for p in self.params)
        optimizer = torch.optim.AdamW(self.params, lr=self.stage_cfg.lr, weight_decay=self.stage_cfg.weight_decay)
        self.steps = steps_per_epoch(self.config, self.store, acc.num_processes, self.spec.name, self.corpus)
        updates_per_epoch = self.steps // t.grad_accum
        # Not passed to prepare(): Accelerate would step it once per process for every optimizer step
        # (it assumes a schedule sized for one process), running it N times too fast on N processes.
        self.scheduler = make_scheduler(optimizer, self.stage_cfg, self.stage_cfg.epochs * updates_per_epoch,
                                        updates_per_epoch)
        # Its state travels in progress.json, not through register_for_checkpointing: the accelerator
        # outlives the stage, and objects registered by earlier stages would break a later resume.
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        self.partitioned = self.deepspeed and self.model.zero_optimization_partition_weights()
        self.unwrapped = acc.unwrap_model(self.model)
        self.telemetry = StageTelemetry(self.trainable)
        self.hooks.append(self.telemetry)
        latest = usable_checkpoint(self.ckpt_root, self.main)
        if latest is not None:
            self.progress = Progress.from_dict(load_checkpoint(acc, latest))
            self.scheduler.load_state_dict(self.progress.scheduler)
            self.log(f"resuming from {latest.name} (epoch {self.progress.epoch}, step {self.progress.step})")
        if self.probes and not self.exact:
            self.fill_feature_caches()

    def log(self, message: str) -> None:
        if self.main:
            log.info(f"[{self.spec.name}] {message}")

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

    def windows(self, split: str) -> WindowSpec:
        """This stage's windows of `split`: few-shot training windows, every data.val_stride-th validation one."""
        d = self.config.data
        if split == "train":
            return WindowSpec("train", d.seq_len, self.horizon, d.few_shot_percent)
        return WindowSpec(split, d.seq_len, self.horizon, step=d.val_stride if split == "val" else 1)

    def validate(self) -> dict:
        return evaluate_split(self.model if self.deepspeed else self.unwrapped, self.store, self.windows("val"),
                              self.topology, batch_size=self.eval_batch, task=self.spec.task,
                              cache=self.caches.get("val"))

    def keep_if_best(self, val: dict) -> bool:
        """Write the tunable weights when validation improved (every rank joins: ZeRO-3 gathers)."""
        p = self.progress
        improved = p.best_val is None or val["mse"] < p.best_val
        if improved:
            state = collect_tunable_state(self.unwrapped, keep=self.main)
            if not self.spec.keeps_align_head:
                state = {k: v for k, v in state.items() if not k.startswith("align_head.")}
            if self.main:
                save_weights(state, self.best_path)
            p.best_val, p.best_epoch, p.bad_epochs = val["mse"], p.epoch + 1, 0
        else:
            p.bad_epochs += 1
        return improved

    def checkpoint(self) -> None:
        self.progress.scheduler = self.scheduler.state_dict()
        save_checkpoint(self.accelerator, self.model, self.ckpt_root, self.progress.to_dict())

    # ------------------------------------------------------------------ the loop

    def run(self) -> StageResult:
        self.setup()
        p, acc = self.progress, self.accelerator
        if self.exact:
            return self.run_exact()
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

    def run_exact(self) -> StageResult:
        """Linear probing solved in closed form: one pass over the windows, then the ridge search
        (llm4ts_scale/train/exact_probe.py). Atomic: a crash inside it re-runs it whole."""
        p = self.progress
        result = fit_exact_head(self)
        self.keep_if_best(result.val)
        p.history.append({"epoch": 1, "train_loss": result.train_loss, "val_loss": result.val["mse"],
                          "val_mae": result.val["mae"], **result.entry, "time_s": time.time() - self.started})
        chosen = ", ".join(f"{k} {result.entry[k]:.3g}" for k in ("alpha_linear", "alpha_llm")
                           if result.entry.get(k) is not None)
        self.log(f"exact head ({result.entry['method']}, {result.entry['features']} features, {chosen}): "
                 f"val {result.val['mse']:.5f}")
        p.epoch = 1
        return self.finish()

    def finish(self) -> StageResult:
        acc, p = self.accelerator, self.progress
        acc.wait_for_everyone()
        if p.best_epoch == 0:
            best = {"val_loss": p.start_val["mse"], "val_mae": p.start_val["mae"]}
            self.log(f"no epoch beat the weights this stage started from on validation (val {p.start_val['mse']:.5f}); "
                     "keeping them")
        else:
            best = p.history[p.best_epoch - 1]
        if self.main:
            if self.best_path.exists():  # absent only when a crash came after this rename: the weights are in place
                self.best_path.replace(self.stage_dir / "weights.safetensors")
            atomic_write_json(self.stage_dir / "history.json", p.history)
            atomic_write_json(self.stage_dir / "metrics.json", {"val": {"mse": best["val_loss"], "mae": best["val_mae"]},
                                                                "best_epoch": p.best_epoch})
        self.telemetry.write(self.stage_dir / f"rank{acc.process_index}.json")
        acc.wait_for_everyone()
        self.caches.clear()
        acc.free_memory(self.model, self.optimizer)
        return StageResult(best_epoch=p.best_epoch, val={"mse": best["val_loss"], "mae": best["val_mae"]},
                           history=p.history, wall_time_s=time.time() - self.started, trainable_params=self.trainable,
                           start_val=p.start_val, solver="exact" if self.exact else "sgd")


def run_stage(accelerator, config: RunConfig, store, stage: str, init_state: dict | None, precision: str = "no",
              corpus=None) -> StageResult:
    return StageRecipe(accelerator, config, store, stage, init_state, precision, corpus=corpus).run()
