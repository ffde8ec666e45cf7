"""Run configuration: typed dataclasses, loaded from YAML/JSON plus `key=value` overrides.

Every field is declared once, with its type, default and help text (`metadata["help"]`, PEFT's convention;
`field_help`), and every section checks its own fields in `__post_init__` where they are declared, so a config
cannot be built invalid; RunConfig.__post_init__ checks what spans sections. Every choice field is a `Literal`
type below, the one place its allowed values are written; the loader refuses anything else with a one-line error.
(OmegaConf's structured configs would do the merging too, but its errors are multi-line and it would be a
dependency for ~60 lines of code.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.stages import STAGE_NAMES, TRAINABLE_GROUPS, probes, stage_spec

SplitRule = Literal["auto", "ett-hourly", "ett-minute", "ratio"]
Fill = Literal["none", "ffill"]  # ffill: forward-fill NaN instead of refusing
DataFormat = Literal["auto", "wide", "long"]  # auto: long when the table has data.id_column, else wide
Quantize = Literal["nf4", "fp4", "none"]
Switch = Literal["auto", "on", "off"]
Pooling = Literal["first", "mean"]
ReadPool = Literal["flatten", "mean", "last"]  # what the forecasting head reads of the chosen layers' tokens
EmbedInit = Literal["default", "backbone"]
CalendarInit = Literal["zero", "normal"]
BackboneInit = Literal["pretrained", "random", "scratch"]  # scratch: random weights that train end to end
Attention = Literal["auto", "eager", "sdpa", "flash_attention_2"]
Schedule = Literal["cosine", "constant", "type1", "type3"]
Precision = Literal["auto", "no", "bf16"]
Solver = Literal["sgd", "exact"]  # exact: the head as the closed-form ridge optimum on frozen features (LP only)
HeadKind = Literal["flatten", "flatten+linear"]
LogWith = Literal["tensorboard", "none"]
# how test origins use the validation residuals: split (split conformal, exchangeable future) | adaptive (the
# spread follows the errors as origins arrive: one ACI run) | aggregated (several ACI runs weighted by their
# interval scores), llm4ts_scale/stats/adaptive.py
Calibration = Literal["split", "adaptive", "aggregated"]


def choices(literal) -> tuple[str, ...]:
    """The allowed values of a Literal choice type (argparse `choices=`, messages)."""
    return typing.get_args(literal)


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its help text in the field's metadata (PEFT's convention): `field_help(Class, "name")`."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def field_help(cls, name: str) -> str:
    """The help text of config field `name` of dataclass `cls`."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


def _positive(obj, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value is None or value > 0, f"{prefix}.{name} must be positive, got {value}")


def _names(value, key: str) -> list[str]:
    _check(isinstance(value, list) and all(isinstance(v, str) and v for v in value),
           f"{key} must be a list of column names, e.g. [HUFL, HULL]; got {value!r}")
    return value


@dataclass
class CovariatesConfig:
    """Columns that drive the targets: `known` ones are known for the H future steps too (calendar, prices,
    planned events, a weather forecast), `past` ones only up to the forecast origin."""

    known: list[str] = option(factory=list, help="covariates known for the H future steps too")
    past: list[str] = option(factory=list, help="covariates known only up to the forecast origin")

    def __post_init__(self) -> None:
        both = sorted(set(_names(self.known, "data.covariates.known")) & set(_names(self.past, "data.covariates.past")))
        _check(not both, f"data.covariates lists {both[:1]} as both known and past; a column is one or the other")


@dataclass
class DataConfig:
    path: str = option("ETTh1", "CSV/Parquet file, prepared store dir, or a known dataset name")
    format: DataFormat = option("auto", "wide: a date column + one column per channel | long: id, timestamp, target "
                                        "rows | auto: long when the table has data.id_column")
    id_column: str = option("id", "long format: the series id")
    time_column: Optional[str] = option(None, 'null: "date" (wide) or "timestamp" (long)')
    target: Optional[Union[str, list[str]]] = option(
        None, 'null: every column but the covariates (wide) or "target" (long); a name or a list (wide)')
    covariates: CovariatesConfig = option(factory=CovariatesConfig, help="columns that drive the targets")
    split: SplitRule = option("auto", "train/val/test borders: ETT's fixed months or 70/10/20 ratios; auto by name")
    seq_len: int = option(336, "look-back L")
    pred_len: int = option(96, "horizon H")
    patch_len: int = option(16, "values per patch token")
    stride: int = option(8, "steps between patch starts")
    few_shot_percent: int = option(10, "the first P % of the training windows (100: all; configs/etth1_full.yaml)")
    batch_size: int = option(32, "per process")
    eval_batch_size: Optional[int] = option(None, "null: automatic (256 on a CPU, 4x batch_size on a GPU)")
    val_stride: int = option(4, "select on every k-th validation window (1: all of them); the test is always whole")
    num_workers: int = option(0, "DataLoader workers")
    shuffle_buffer: int = option(10000, "windows in the streaming shuffle buffer")
    freq: Optional[str] = option(None, "override the inferred frequency (pandas alias)")
    fill: Fill = option("none", "ffill: forward-fill NaN instead of refusing")

    def __post_init__(self) -> None:
        target = self.target
        _check(target is None or isinstance(target, str) or (isinstance(target, list) and target
                                                             and all(isinstance(x, str) for x in target)),
               f"data.target must be a column name or a list of them, got {target!r}")
        targets = [target] if isinstance(target, str) else (target or [])
        clash = sorted(set(targets) & (set(self.covariates.known) | set(self.covariates.past)))
        _check(not clash, f"data.target {clash[:1]} is also a covariate; a column is a target or a covariate")
        _check(self.format != "long" or not isinstance(target, list),
               "data.target in the long format is one column (the series' values); give its name")
        _check(bool(self.id_column), "data.id_column must name the id column of a long-format table")
        _positive(self, "data", "seq_len", "pred_len", "patch_len", "stride", "batch_size")
        _check(self.patch_len <= self.seq_len, f"data.patch_len={self.patch_len} exceeds data.seq_len={self.seq_len}; "
                                               "lower it")
        _check(self.stride <= self.patch_len,
               f"data.stride={self.stride} exceeds data.patch_len={self.patch_len}; patches would skip values")
        _check((self.seq_len - self.patch_len) % self.stride == 0,
               f"data.seq_len - data.patch_len ({self.seq_len - self.patch_len}) must be a multiple of "
               f"data.stride={self.stride}")
        _check(0 < self.few_shot_percent <= 100, f"data.few_shot_percent must be in (0, 100], got {self.few_shot_percent}")
        _check(self.num_workers >= 0, "data.num_workers must be >= 0")
        _check(self.eval_batch_size is None or self.eval_batch_size > 0, "data.eval_batch_size must be positive")
        _check(self.val_stride >= 1, f"data.val_stride must be >= 1, got {self.val_stride}")


@dataclass
class LoraConfig:
    r: int = option(8, "LoRA rank")
    alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = option(0.0, "not part of the LLM4TS method; every mask costs as much as a block's matmuls on CPU")
    targets: Union[Literal["auto"], list[str]] = option(
        "auto", "auto: PEFT's mapping for the architecture; or a list of module names, e.g. [q_proj,v_proj]")

    def __post_init__(self) -> None:
        _check(self.r > 0, f"model.lora.r must be positive, got {self.r}")
        _check(0 <= self.dropout < 1, "model.lora.dropout must be in [0, 1)")
        _check(self.targets == "auto" or (isinstance(self.targets, list) and all(isinstance(x, str) for x in self.targets)),
               "model.lora.targets must be auto or a list of module names, e.g. [q_proj,v_proj]")


@dataclass
class ModelConfig:
    backbone: str = option("smollm2-135m", "HF model id, local path, or a built-in alias")
    layers: int = option(2, "first K blocks (validation: 2 beat 6 on ETTh1 and ILI, results/sweep/table.md)")
    quantize: Quantize = option("nf4", "4-bit NF4 or FP4 frozen weights (bitsandbytes), or none")
    double_quant: bool = option(True, "quantize the 4-bit scales too")
    dequantize_frozen: Switch = option("auto", "hold 4-bit weights dequantized (auto: on a CPU, backbone < 4 GiB)")
    lora: LoraConfig = option(factory=LoraConfig, help="the adapters (PEFT)")
    tune_norms: bool = option(True, "the backbone's norm layers train in FT")
    tune_positions: bool = option(True, "learned absolute position tables of the backbone (GPT-2's wpe)")
    temporal_pooling: Pooling = option("first", "how a patch's calendar values become one per token")
    calendar: Union[Literal["auto", "none"], list[str]] = option(
        "none", "none | auto (every attribute the data's frequency resolves) | a list, e.g. [hour,weekday]")
    calendar_init: CalendarInit = option("zero", "zero: unseen calendar values add nothing | normal: N(0, 1)")
    embed_init: EmbedInit = option("default", "default: PyTorch's | backbone: encoder output on the LLM's embedding scale")
    backbone_init: BackboneInit = option(
        "pretrained", "random: same architecture, fresh frozen weights (does the LLM matter?); scratch: fresh weights "
                      "that train in align and ft like every other group (the architecture without its pretraining)")
    aligned_from: Optional[str] = option(None, "an aligned backbone (run dir or align/export/): replaces the align stage")
    attention: Attention = option("auto", "auto: measured per device and token count")
    revin_affine: bool = option(True, "RevIN's learned per-channel scale and shift")
    conv_kernel: int = option(3, "the token encoder's kernel (odd)")
    dropout: float = option(0.1, "dropout of the encoder and head")
    head: HeadKind = option("flatten+linear", "+ Linear(L -> H) of the RevIN-normalized look-back; flatten: the "
                                              "official head")
    read_layers: Union[Literal["last", "all"], list[int]] = option(
        "last", "the hidden states the head reads: last (block K's) | all (blocks 1..K side by side: exact LP weighs "
                "them by ridge) | a list of blocks, e.g. [1, 2]; each block below K through the final norm")
    read_pool: ReadPool = option("flatten", "flatten: every token (official) | mean over tokens | last token")

    def __post_init__(self) -> None:
        _check(self.layers > 0, f"model.layers must be positive, got {self.layers}")
        _check(self.backbone_init != "scratch" or self.quantize == "none",
               f"model.backbone_init=scratch trains the backbone's weights, which {self.quantize} 4-bit weights cannot; "
               "set model.quantize=none")
        read = self.read_layers
        _check(read in ("last", "all") or (isinstance(read, list) and read and all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= self.layers for k in read)),
               f"model.read_layers must be last, all or a list of blocks between 1 and model.layers={self.layers}, "
               f"got {read!r}")
        _check(self.conv_kernel % 2 == 1, f"model.conv_kernel must be odd, got {self.conv_kernel}")
        _check(self.calendar in ("auto", "none") or (isinstance(self.calendar, list)
                                                     and all(isinstance(a, str) for a in self.calendar)),
               "model.calendar must be auto, none or a list of calendar attributes, e.g. [hour,weekday]")


Penalty = Union[Literal["auto"], float]


@dataclass
class StageConfig:
    """What every stage has. Each kind of stage adds its own options: AlignStageConfig (a corpus) and
    ForecastStageConfig (the exact solver and its penalties)."""

    epochs: int = option(1, "0 skips the stage")
    lr: float = option(1.0e-3, "peak learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    schedule: Schedule = option("cosine", "type1/type3: Time-Series-Library's per-epoch rules")
    warmup_ratio: float = option(0.1, "share of the steps that warm up (cosine)")
    groups: Union[Literal["default"], list[str]] = option(
        "default", "parameter groups that train: default (the stage table's) or a list, e.g. [head,lora]")

    def trained_groups(self, name: str) -> set[str]:
        """The parameter groups stage `name` trains: the stage table's, or this stage's `groups`."""
        return set(stage_spec(name).groups) if self.groups == "default" else set(self.groups)

    def check(self, name: str) -> None:
        """Checks of stages.<name> (StagesConfig.__post_init__ calls it: the stage's name is part of them)."""
        _check(self.epochs >= 0, f"stages.{name}.epochs must be >= 0")
        _check(self.lr > 0, f"stages.{name}.lr must be positive")
        _check(0 <= self.warmup_ratio < 1, f"stages.{name}.warmup_ratio must be in [0, 1)")
        _check(self.groups == "default" or (isinstance(self.groups, list) and self.groups
                                            and set(self.groups) <= set(TRAINABLE_GROUPS)),
               f"stages.{name}.groups must be default or a non-empty list of {', '.join(TRAINABLE_GROUPS)}")

    @classmethod
    def without_unused_keys(cls, values: dict, prefix: str) -> dict:
        """`values` less the other kinds of stage's options, accepted where they change nothing (configs written
        when every stage carried every option stay valid: stages.align.solver=sgd, stages.lp.data=[])."""
        mine, name = {f.name for f in dataclasses.fields(cls)}, prefix.rstrip(".").rsplit(".", 1)[-1]
        kept = dict(values)
        for other in STAGE_CONFIGS.values():
            theirs = {f.name for f in dataclasses.fields(other)} - mine
            unused = {k: kept.pop(k) for k in list(kept) if k in theirs}
            if unused:
                _build(other, unused, prefix).check(name)  # refused with the message it always had
        return kept


@dataclass
class AlignStageConfig(StageConfig):
    """The alignment stage: next-patch MSE, always epochs of AdamW; it alone may read a corpus."""

    solver: ClassVar[Solver] = "sgd"
    data: Optional[list[Union[str, dict]]] = option(
        factory=list, help="a corpus of sources (llm4ts_scale/data/corpus.py); [] = the run's own windows")

    def check(self, name: str) -> None:
        super().check(name)
        if self.data:
            _check(name == "align", f"stages.{name}.data: only the alignment stage reads a corpus; drop it")
            check_sources(self.data)


@dataclass
class ForecastStageConfig(StageConfig):
    """A forecasting stage (lp, ft): epochs of AdamW, or, when only the head trains (linear probing), the head
    solved in closed form."""

    solver: Solver = option("sgd", "exact: closed-form ridge head, penalties chosen on validation (a probing stage only)")
    penalty_linear: Penalty = option("auto", "exact solver: ridge penalty of the shortcut (relative); auto = validation "
                                             "search")
    penalty_llm: Penalty = option("auto", "exact solver: ridge penalty of the flatten head on the LLM features (relative)")
    penalty_cov: Penalty = option("auto", "exact solver: ridge penalty of the covariates' map (relative), when there are "
                                          "covariates")

    def check(self, name: str) -> None:
        super().check(name)
        _check(self.solver == "sgd" or probes(stage_spec(name).task, self.trained_groups(name)),
               f"stages.{name}.solver=exact needs a stage that trains only the head (linear probing); use sgd")
        for key in ("penalty_linear", "penalty_llm", "penalty_cov"):
            value = getattr(self, key)
            ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
            _check(ok, f"stages.{name}.{key} must be auto or a positive number (relative to the features' scale)")


STAGE_CONFIGS = {"align": AlignStageConfig, "forecast": ForecastStageConfig}  # a stage's task -> its options
# The layout run directories were hashed in before each kind of stage had its own options (RunConfig.hash).
_EVERY_STAGE_HAD = {"solver": "sgd", "penalty_linear": "auto", "penalty_llm": "auto", "penalty_cov": "auto", "data": []}


def _stage_default(name: str):
    spec = stage_spec(name)
    cls = STAGE_CONFIGS[spec.task]
    solver = {"solver": spec.default_solver} if cls is ForecastStageConfig else {}
    return option(factory=partial(cls, epochs=spec.default_epochs, lr=spec.default_lr, **solver),
                  help=f"the {spec.title} stage")


@dataclass
class StagesConfig:
    """One `stages.<name>` entry per row of the stage table (llm4ts_scale/core/stages.py), in run order, with
    that row's defaults and its task's options (tests/test_configs.py checks the two agree)."""

    align: AlignStageConfig = _stage_default("align")
    lp: ForecastStageConfig = _stage_default("lp")
    ft: ForecastStageConfig = _stage_default("ft")

    def __post_init__(self) -> None:
        for name in STAGE_NAMES:
            self[name].check(name)

    def __getitem__(self, name: str) -> StageConfig:
        return getattr(self, name)


@dataclass
class TrainConfig:
    grad_accum: int = option(1, "gradient accumulation steps")
    max_grad_norm: float = option(1.0, "gradient clipping")
    patience: int = option(2, "early stopping on validation loss")
    limit_train_batches: Optional[int] = option(None, "cap per epoch, for smoke runs; evaluation is never capped")
    checkpoint_every_steps: int = option(500, "besides every epoch end")
    mixed_precision: Precision = option("auto", "auto: bf16 on GPUs and on CPUs with native bf16, else fp32")
    lp_feature_cache: Switch = option("auto", "compute the frozen features once per LP stage")
    feature_cache_gb: float = option(8.0, "auto turns the LP cache off when a rank's features would exceed this")
    log_with: LogWith = option("tensorboard", "experiment tracker")
    collective_timeout_s: int = option(120, "how long a rank waits for the others")
    compare_baselines: bool = option(True, "after the test: naive, DLinear and rlinear on the same windows, printed "
                                           "and in run.json")
    test: bool = option(True, "score the test split at the end; false for validation-only sweeps (no test, no baselines)")
    ridge_max_gram_features: int = option(32768, "exact LP: above this many features, conjugate gradient instead of a "
                                                 "Gram")

    def __post_init__(self) -> None:
        _check(self.grad_accum >= 1, "train.grad_accum must be >= 1")
        _check(self.patience >= 1, "train.patience must be >= 1")
        _check(self.limit_train_batches is None or self.limit_train_batches > 0,
               "train.limit_train_batches must be positive or null")
        _positive(self, "train", "checkpoint_every_steps", "feature_cache_gb", "collective_timeout_s",
                  "ridge_max_gram_features")


@dataclass
class RunConfig:
    run_dir: str = option("runs/etth1-10pct-96", "where checkpoints, exports and results go")
    seed: int = option(2023, "one seed for data order, initialisation and dropout")
    quantiles: list[float] = option(factory=lambda: [0.1, 0.5, 0.9], help="forecast quantiles next to the point "
                                    "forecast: split-conformal, from the validation residuals")
    calibration: Calibration = option("adaptive", "split | adaptive | aggregated (docs/PROTOCOL.md, "
                                                  "\"Prediction intervals\")")
    data: DataConfig = option(factory=DataConfig, help="what to forecast and how it is windowed")
    model: ModelConfig = option(factory=ModelConfig, help="backbone, adapters, encoder and head")
    stages: StagesConfig = option(factory=StagesConfig, help="align, lp and ft, in run order")
    train: TrainConfig = option(factory=TrainConfig, help="the loop around every stage")

    def __post_init__(self) -> None:
        """What spans sections; each section checked its own fields when it was built."""
        check_quantiles(self.quantiles)
        covariates = self.data.covariates
        _check(not (covariates.known or covariates.past) or self.model.head == "flatten+linear",
               "data.covariates enter the forecast through the linear shortcut; set model.head=flatten+linear")
        _check(not self.stages.align.data or self.model.calendar == "none",
               "stages.align.data (a corpus) needs model.calendar=none: other sources have other calendars")
        _check(not (self.model.aligned_from and self.stages.align.data),
               "model.aligned_from replaces the alignment stage, so stages.align.data would go unused; drop one of them")
        _check(bool(self.active_stages()), "every stage has epochs: 0; give at least one stage epochs > 0")
        _check(self.active_stages() != ["align"], "only the align stage is enabled; enable lp or ft to get a forecaster")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, exclude: tuple[str, ...] = ("run_dir",)) -> str:
        """Stable hash of what determines the results (run_dir excluded: moving a run keeps it). `calibration`
        is left out where it has its default, and every stage is hashed with the options only one kind of stage
        has now (at the values that changed nothing), so run directories made before still resume; the test
        intervals `calibration` chooses are re-scored any time by `llm4ts-scale evaluate RUN_DIR --calibration ...`."""
        payload = {k: v for k, v in self.to_dict().items() if k not in exclude}
        if payload.get("calibration") == RunConfig.calibration:
            payload.pop("calibration")
        for stage in payload.get("stages", {}).values():  # hashed as when every stage carried every option
            for key, value in _EVERY_STAGE_HAD.items():
                stage.setdefault(key, value)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def active_stages(self) -> list[str]:
        """Stages this run trains; model.aligned_from stands in for the alignment stage."""
        return [name for name in STAGE_NAMES if getattr(self.stages, name).epochs > 0
                and not (name == "align" and self.model.aligned_from)]


def stage_groups(config: RunConfig, name: str) -> set[str]:
    """The parameter groups stage `name` trains: the stage table's, or stages.<name>.groups."""
    return config.stages[name].trained_groups(name)


# ---------------------------------------------------------------- building from dicts


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[rest]), True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """The YAML value as the field's type; a union (a choice or a list) or a list passes as written, for the
    dataclass's __post_init__ to check with the message that names the fix."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"config key '{key}' cannot be null; give a value of type {getattr(base, '__name__', base)}")
    if typing.get_origin(base) in (Union, types.UnionType, list):
        return value
    if dataclasses.is_dataclass(base):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping of its sub-keys, got {value!r}")
        return _build(base, value, prefix=key + ".")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"config key '{key}' must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise UserError(f"config key '{key}' must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        return int(as_float)
    if base is float:
        if isinstance(value, bool):
            raise UserError(f"config key '{key}' must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}' must be a number, got {value!r}") from None
    if typing.get_origin(base) is Literal:
        allowed = typing.get_args(base)
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans: take the spelling this choice uses
            spellings = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((v for v in spellings if v in allowed), spellings[0])
        if value not in allowed:
            raise UserError(f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}")
        return value
    if base is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls, values: dict, prefix: str = ""):
    types_ = _field_types(cls)
    if issubclass(cls, StageConfig):
        values = cls.without_unused_keys(values, prefix)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys"
            f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(types_)}"
        )
    kwargs = {name: _coerce(values[name], types_[name], prefix + name) for name in values}
    return cls(**kwargs)


def merge_dicts(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML or JSON file to --config")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config file {path} is not valid YAML/JSON ({first}); fix its syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """`a.b=1 c=x` -> nested dict; values parsed as YAML scalars/lists (`lora.targets=[q_proj,v_proj]`)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value; write e.g. data.pred_len=192")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}' has an empty key; write e.g. data.pred_len=192")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- config file <- key=value overrides; each section checks itself as it is built."""
    values: dict = read_config_file(path) if path else {}
    values = merge_dicts(values, parse_overrides(overrides or []))
    return _build(RunConfig, values)


def add_run_arguments(parser) -> None:
    """The command line of a training run (`launch/train.py`, `llm4ts-scale train`, `llm4ts-scale align`);
    `load_config(args.config, args.overrides)` turns it into a validated RunConfig, --quiet/--verbose go to
    llm4ts_scale/core/log.py:set_verbosity."""
    from llm4ts_scale.core.log import add_verbosity_arguments

    parser.add_argument("--ds", metavar="JSON", default=None,
                        help="DeepSpeed config (ds_configs/zero2.json, zero3.json, zero3_offload.json); "
                             "omit for plain Accelerate")
    parser.add_argument("--config", metavar="FILE", default=None, help="run config, YAML or JSON")
    parser.add_argument("--restart", action="store_true", help="clear an existing run_dir and start over")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.pred_len=192")
    add_verbosity_arguments(parser)


def config_from_dict(values: dict) -> RunConfig:
    return _build(RunConfig, values)


# The keys of one stages.align.data mapping (llm4ts_scale/data/corpus.py reads them).
SOURCE_KEYS = ("path", "split", "weight", "series", "length", "seed")


def check_sources(entries) -> None:
    """Refuse a malformed stages.align.data before anything is opened."""
    if not isinstance(entries, list):
        raise UserError("stages.align.data must be a list of sources (names, files, stores, synthetic:kernelsynth)")
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and entry:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UserError(f"stages.align.data[{i}] must be a string or a mapping with a 'path'; got {entry!r}")
        unknown = sorted(set(entry) - set(SOURCE_KEYS))
        if unknown:
            raise UserError(f"stages.align.data[{i}] has unknown key {unknown[0]!r}; valid keys: {', '.join(SOURCE_KEYS)}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise UserError(f"stages.align.data[{i}].weight must be a positive number, got {weight!r}")


def check_quantiles(levels, where: str = "quantiles") -> list[float]:
    """Quantile levels as a sorted list of distinct floats in (0, 1); UserError otherwise."""
    if not isinstance(levels, (list, tuple)) or not levels:
        raise UserError(f"{where} must be a non-empty list of levels in (0, 1), e.g. [0.1, 0.5, 0.9]")
    out = []
    for q in levels:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
            raise UserError(f"{where}: {q!r} is not a level in (0, 1); use e.g. 0.1 for the 10 % quantile")
        out.append(float(q))
    if len(set(out)) != len(out):
        raise UserError(f"{where} lists a level twice: {out}")
    return sorted(out)
