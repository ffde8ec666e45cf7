"""One stage of the recipe (align, lp or ft): what every solver's recipe shares (train/sgd_stage.py: epochs of
AdamW; train/probe_stage.py: linear probing solved in closed form).

A stage starts from the previous stage's consolidated weights, trains only its parameter groups
(llm4ts_scale/core/stages.py), validates every epoch, keeps the best-validation weights and writes them as
`weights.safetensors` with `metrics.json` and `history.json` in its stage directory. Checkpoints
(every epoch and every `train.checkpoint_every_steps` steps) let a crashed stage resume where it
stopped: the data stream is deterministic for a (seed, epoch), so the position in it is restored by
skipping the batches already consumed. What is not training (telemetry, fault injection, the window
checksum the tests read) is a hook called by the loop.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from llm4ts_scale.core.config import RunConfig, stage_groups
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_json
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.core.stages import STAGE_NAMES, StageSpec, probes, stage_spec
from llm4ts_scale.core.topology import Topology
from llm4ts_scale.core.weights import collect_tunable_state, full_shape, load_tunable_state, save_weights
from llm4ts_scale.data.corpus import corpus_rank_samples
from llm4ts_scale.data.windows import WindowSpec, rank_num_samples
from llm4ts_scale.evaluation import eval_batch_size, evaluate_split
from llm4ts_scale.model import build_model
from llm4ts_scale.train.accelerator import release_engine
from llm4ts_scale.train.feature_cache import FeatureCache
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


class StageRecipe:
    """What a stage's recipe shares, whatever its solver: the model it starts from, its windows, validation,
    keeping the best weights and writing the stage's files. A subclass says how it trains (`run`)."""

    solver = ""

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
        self.probes = probes(self.spec.task, stage_groups(config, stage))  # the frozen part's features never change
        self.eval_batch = eval_batch_size(config.data.eval_batch_size, config.data.batch_size, accelerator.device.type)
        self.ckpt_root = self.stage_dir / "checkpoints"
        self.best_path = self.stage_dir / "best.safetensors"
        # Built by setup()
        self.started = 0.0
        self.model = self.unwrapped = self.optimizer = None
        self.params: list[torch.nn.Parameter] = []
        self.trainable = 0
        self.deepspeed = self.partitioned = False
        self.telemetry: StageTelemetry | None = None

    def build(self):
        """The stage's model, from the previous stage's weights, only its groups trainable; its telemetry."""
        self.started = time.time()
        model = build_stage_model(self.config, self.store, self.spec.name, self.init_state, self.precision)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(full_shape(p).numel() for p in self.params)
        self.telemetry = StageTelemetry(self.trainable)
        self.hooks.append(self.telemetry)
        return model

    def adopt(self, prepared) -> None:
        """Hold `prepared` (the model, possibly wrapped in a DeepSpeed engine) as the one the loops call."""
        self.model = prepared
        self.deepspeed = hasattr(prepared, "zero_optimization_partition_weights")  # a DeepSpeed engine
        self.partitioned = self.deepspeed and prepared.zero_optimization_partition_weights()
        self.unwrapped = self.accelerator.unwrap_model(self.model)

    def run(self) -> StageResult:
        raise NotImplementedError

    def log(self, message: str) -> None:
        if self.main:
            log.info(f"[{self.spec.name}] {message}")

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
        release_engine(acc, self.model, self.optimizer)
        self.model = self.unwrapped = self.optimizer = None  # the manager returns the freed memory once this recipe is gone
        return StageResult(best_epoch=p.best_epoch, val={"mse": best["val_loss"], "mae": best["val_mae"]},
                           history=p.history, wall_time_s=time.time() - self.started, trainable_params=self.trainable,
                           start_val=p.start_val, solver=self.solver)
