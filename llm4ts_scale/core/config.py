"""Run configuration: typed dataclasses, loaded from YAML/JSON plus `key=value` overrides, validated once.

Every choice field is a `Literal` type below, the one place its allowed values are written; the
loader refuses anything else with a one-line error. (OmegaConf's structured configs would do the
merging too, but its errors are multi-line and it would be a dependency for ~60 lines of code.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Union

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


@dataclass
class CovariatesConfig:
    """Columns that drive the targets: `known` ones are known for the H future steps too (calendar, prices,
    planned events, a weather forecast), `past` ones only up to the forecast origin."""

    known: Any = field(default_factory=list)
    past: Any = field(default_factory=list)


@dataclass
class DataConfig:
    path: str = "ETTh1"  # CSV/Parquet file, prepared store dir, or a known dataset name
    format: DataFormat = "auto"  # wide: a date column + one column per channel | long: id, timestamp, target rows
    id_column: str = "id"  # long format: the series id
    time_column: Optional[str] = None  # null: "date" (wide) or "timestamp" (long)
    target: Any = None  # null: every column but the covariates (wide) or "target" (long); a name or a list (wide)
    covariates: CovariatesConfig = field(default_factory=CovariatesConfig)
    split: SplitRule = "auto"
    seq_len: int = 336
    pred_len: int = 96
    patch_len: int = 16
    stride: int = 8
    few_shot_percent: int = 10  # the few-shot recipe by default; 100 (configs/etth1_full.yaml) for all the data
    batch_size: int = 32  # per process
    eval_batch_size: Optional[int] = None  # null: automatic (256 on a CPU, 4x batch_size on a GPU)
    val_stride: int = 4  # select on every k-th validation window (1: all of them); the test is always whole
    num_workers: int = 0
    shuffle_buffer: int = 10000
    freq: Optional[str] = None  # override the inferred frequency (pandas alias)
    fill: Fill = "none"


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.0  # not part of the LLM4TS method; every mask costs as much as a block's matmuls on CPU
    targets: Any = "auto"  # "auto" (PEFT's mapping for the architecture) or a list of module names


@dataclass
class ModelConfig:
    backbone: str = "smollm2-135m"  # HF model id, local path, or a built-in alias
    layers: int = 2  # first K blocks (validation: 2 beat 6 on ETTh1 and ILI, results/sweep/table.md)
    quantize: Quantize = "nf4"
    double_quant: bool = True
    dequantize_frozen: Switch = "auto"  # hold 4-bit weights dequantized (auto: on a CPU, backbone < 4 GiB)
    lora: LoraConfig = field(default_factory=LoraConfig)
    tune_norms: bool = True
    tune_positions: bool = True  # learned absolute position tables of the backbone (GPT-2's wpe)
    temporal_pooling: Pooling = "first"
    calendar: Any = "none"  # none | auto (every attribute the data's frequency resolves) | a list, e.g. [hour,weekday]
    calendar_init: CalendarInit = "zero"  # zero: unseen calendar values add nothing | normal: N(0, 1), PyTorch's
    embed_init: EmbedInit = "default"  # default: PyTorch's | backbone: encoder output on the LLM's embedding scale
    # random: same architecture, fresh frozen weights (does the LLM matter?); scratch: fresh weights that train
    # in align and ft like every other group (Tan et al. 2024's ablation: the architecture without its pretraining)
    backbone_init: BackboneInit = "pretrained"
    aligned_from: Optional[str] = None  # an aligned backbone (run dir or align/export/): replaces the align stage
    attention: Attention = "auto"  # auto: measured per device and token count
    revin_affine: bool = True
    conv_kernel: int = 3
    dropout: float = 0.1
    head: HeadKind = "flatten+linear"  # + Linear(L -> H) of the RevIN-normalized look-back; flatten: the official head
    # The hidden states the forecasting head reads: last (block K's, the official head) | all (blocks 1..K, side by
    # side: exact LP then weighs the layers by ridge) | a list of blocks, e.g. [1, 2]; each block below K through
    # the backbone's final norm, so that every layer enters on the same scale.
    read_layers: Any = "last"
    read_pool: ReadPool = "flatten"  # flatten: every token (official) | mean over tokens | last token

@dataclass
class StageConfig:
    epochs: int = 1
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"  # type1/type3: Time-Series-Library's per-epoch rules
    warmup_ratio: float = 0.1
    solver: Solver = "sgd"  # exact: closed-form ridge head, penalties chosen on validation (a probing stage only)
    penalty_linear: Any = "auto"  # exact solver: ridge penalty of the shortcut (relative), auto = validation search
    penalty_llm: Any = "auto"  # exact solver: ridge penalty of the flatten head on the LLM features (relative)
    penalty_cov: Any = "auto"  # exact solver: ridge penalty of the covariates' map (relative), when there are covariates
    groups: Any = "default"  # parameter groups that train: default (the stage table's) or a list, e.g. [head,lora]
    data: Any = field(default_factory=list)  # align only: a corpus of sources (llm4ts_scale/data/corpus.py); [] = own windows


def _stage_default(name: str):
    spec = stage_spec(name)
    return field(default_factory=partial(StageConfig, epochs=spec.default_epochs, lr=spec.default_lr,
                                         solver=spec.default_solver))


@dataclass
class StagesConfig:
    """One `stages.<name>` entry per row of the stage table (llm4ts_scale/core/stages.py), in run order, with
    that row's defaults (tests/test_configs.py checks the two agree)."""

    align: StageConfig = _stage_default("align")
    lp: StageConfig = _stage_default("lp")
    ft: StageConfig = _stage_default("ft")

    def __getitem__(self, name: str) -> StageConfig:
        return getattr(self, name)


@dataclass
class TrainConfig:
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    patience: int = 2  # early stopping on validation loss
    limit_train_batches: Optional[int] = None  # cap per epoch, for smoke runs; evaluation is never capped
    checkpoint_every_steps: int = 500  # besides every epoch end
    mixed_precision: Precision = "auto"  # auto: bf16 on GPUs and on CPUs with native bf16, else fp32
    lp_feature_cache: Switch = "auto"  # compute the frozen features once per LP stage
    feature_cache_gb: float = 8.0  # auto turns the LP cache off when a rank's features would exceed this
    log_with: LogWith = "tensorboard"
    collective_timeout_s: int = 120
    compare_baselines: bool = True  # after the test: naive, DLinear and rlinear on the same windows, printed and in run.json
    test: bool = True  # score the test split at the end; false for validation-only sweeps (no test, no baselines)
    ridge_max_gram_features: int = 32768  # exact LP: above this many features, conjugate gradient instead of a Gram


@dataclass
class RunConfig:
    run_dir: str = "runs/etth1-10pct-96"
    seed: int = 2023
    # forecast quantiles next to the point forecast: split-conformal, from the validation residuals
    quantiles: Any = field(default_factory=lambda: [0.1, 0.5, 0.9])
    calibration: Calibration = "adaptive"  # split | adaptive | aggregated (docs/PROTOCOL.md, "Prediction intervals")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, exclude: tuple[str, ...] = ("run_dir",)) -> str:
        """Stable hash of what determines the results (run_dir excluded: moving a run keeps it). `calibration`
        is left out where it has its default, so run directories made before the key existed still resume; the
        test intervals it chooses are re-scored any time by `llm4ts-scale evaluate RUN_DIR --calibration ...`."""
        payload = {k: v for k, v in self.to_dict().items() if k not in exclude}
        if payload.get("calibration") == RunConfig.calibration:
            payload.pop("calibration")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def active_stages(self) -> list[str]:
        """Stages this run trains; model.aligned_from stands in for the alignment stage."""
        return [name for name in STAGE_NAMES if getattr(self.stages, name).epochs > 0
                and not (name == "align" and self.model.aligned_from)]


def stage_groups(config: RunConfig, name: str) -> set[str]:
    """The parameter groups stage `name` trains: the stage table's, or stages.<name>.groups."""
    chosen = config.stages[name].groups
    return set(stage_spec(name).groups) if chosen == "default" else set(chosen)


# ---------------------------------------------------------------- building from dicts


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional or base is Any:
            return None
        raise UserError(f"config key '{key}' cannot be null; give a value of type {base.__name__}")
    if base is Any:
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
    """Defaults <- config file <- key=value overrides, then validated."""
    values: dict = read_config_file(path) if path else {}
    values = merge_dicts(values, parse_overrides(overrides or []))
    config = _build(RunConfig, values)
    validate(config)
    return config


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
    config = _build(RunConfig, values)
    validate(config)
    return config


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


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


def _names(value, key: str) -> list[str]:
    _check(isinstance(value, list) and all(isinstance(v, str) and v for v in value),
           f"{key} must be a list of column names, e.g. [HUFL, HULL]; got {value!r}")
    return value


def validate(c: RunConfig) -> None:
    d, m, t = c.data, c.model, c.train
    check_quantiles(c.quantiles)
    known, past = _names(d.covariates.known, "data.covariates.known"), _names(d.covariates.past, "data.covariates.past")
    both = sorted(set(known) & set(past))
    _check(not both, f"data.covariates lists {both[:1]} as both known and past; a column is one or the other")
    _check(d.target is None or isinstance(d.target, str) or (isinstance(d.target, list) and d.target
                                                                and all(isinstance(x, str) for x in d.target)),
           f"data.target must be a column name or a list of them, got {d.target!r}")
    targets = [d.target] if isinstance(d.target, str) else (d.target or [])
    clash = sorted(set(targets) & (set(known) | set(past)))
    _check(not clash, f"data.target {clash[:1]} is also a covariate; a column is a target or a covariate")
    _check(d.format != "long" or not isinstance(d.target, list),
           "data.target in the long format is one column (the series' values); give its name")
    _check(bool(d.id_column), "data.id_column must name the id column of a long-format table")
    _check(not (known or past) or m.head == "flatten+linear",
           "data.covariates enter the forecast through the linear shortcut; set model.head=flatten+linear")
    for key in ("seq_len", "pred_len", "patch_len", "stride", "batch_size"):
        _check(getattr(d, key) > 0, f"data.{key} must be positive, got {getattr(d, key)}")
    _check(d.patch_len <= d.seq_len, f"data.patch_len={d.patch_len} exceeds data.seq_len={d.seq_len}; lower it")
    _check(d.stride <= d.patch_len, f"data.stride={d.stride} exceeds data.patch_len={d.patch_len}; patches would skip values")
    _check((d.seq_len - d.patch_len) % d.stride == 0,
           f"data.seq_len - data.patch_len ({d.seq_len - d.patch_len}) must be a multiple of data.stride={d.stride}")
    _check(0 < d.few_shot_percent <= 100, f"data.few_shot_percent must be in (0, 100], got {d.few_shot_percent}")
    _check(d.num_workers >= 0, "data.num_workers must be >= 0")
    _check(d.eval_batch_size is None or d.eval_batch_size > 0, "data.eval_batch_size must be positive")
    _check(d.val_stride >= 1, f"data.val_stride must be >= 1, got {d.val_stride}")
    _check(m.layers > 0, f"model.layers must be positive, got {m.layers}")
    _check(m.lora.r > 0, f"model.lora.r must be positive, got {m.lora.r}")
    _check(0 <= m.lora.dropout < 1, "model.lora.dropout must be in [0, 1)")
    _check(m.lora.targets == "auto" or (isinstance(m.lora.targets, list) and all(isinstance(x, str) for x in m.lora.targets)),
           "model.lora.targets must be auto or a list of module names, e.g. [q_proj,v_proj]")
    _check(m.backbone_init != "scratch" or m.quantize == "none",
           f"model.backbone_init=scratch trains the backbone's weights, which {m.quantize} 4-bit weights cannot; "
           "set model.quantize=none")
    _check(m.read_layers in ("last", "all") or (isinstance(m.read_layers, list) and m.read_layers
                                                and all(isinstance(k, int) and not isinstance(k, bool)
                                                        and 1 <= k <= m.layers for k in m.read_layers)),
           f"model.read_layers must be last, all or a list of blocks between 1 and model.layers={m.layers}, "
           f"got {m.read_layers!r}")
    _check(m.conv_kernel % 2 == 1, f"model.conv_kernel must be odd, got {m.conv_kernel}")
    _check(m.calendar in ("auto", "none") or (isinstance(m.calendar, list) and all(isinstance(a, str) for a in m.calendar)),
           "model.calendar must be auto, none or a list of calendar attributes, e.g. [hour,weekday]")
    for name in STAGE_NAMES:
        s = c.stages[name]
        _check(s.epochs >= 0, f"stages.{name}.epochs must be >= 0")
        _check(s.lr > 0, f"stages.{name}.lr must be positive")
        _check(0 <= s.warmup_ratio < 1, f"stages.{name}.warmup_ratio must be in [0, 1)")
        groups = stage_groups(c, name)
        _check(s.groups == "default" or (isinstance(s.groups, list) and s.groups and set(s.groups) <= set(TRAINABLE_GROUPS)),
               f"stages.{name}.groups must be default or a non-empty list of {', '.join(TRAINABLE_GROUPS)}")
        _check(s.solver == "sgd" or probes(stage_spec(name).task, groups),
               f"stages.{name}.solver=exact needs a stage that trains only the head (linear probing); use sgd")
        if s.data:
            _check(name == "align", f"stages.{name}.data: only the alignment stage reads a corpus; drop it")
            check_sources(s.data)
            _check(m.calendar == "none", "stages.align.data (a corpus) needs model.calendar=none: other sources "
                                         "have other calendars")
        for key in ("penalty_linear", "penalty_llm", "penalty_cov"):
            value = getattr(s, key)
            ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
            _check(ok, f"stages.{name}.{key} must be auto or a positive number (relative to the features' scale)")
    _check(not (m.aligned_from and c.stages.align.data),
           "model.aligned_from replaces the alignment stage, so stages.align.data would go unused; drop one of them")
    _check(bool(c.active_stages()), "every stage has epochs: 0; give at least one stage epochs > 0")
    _check(c.active_stages() != ["align"], "only the align stage is enabled; enable lp or ft to get a forecaster")
    _check(t.grad_accum >= 1, "train.grad_accum must be >= 1")
    _check(t.patience >= 1, "train.patience must be >= 1")
    _check(t.limit_train_batches is None or t.limit_train_batches > 0, "train.limit_train_batches must be positive or null")
    _check(t.checkpoint_every_steps > 0, "train.checkpoint_every_steps must be positive")
    _check(t.feature_cache_gb > 0, "train.feature_cache_gb must be positive")
    _check(t.collective_timeout_s > 0, "train.collective_timeout_s must be positive")
    _check(t.ridge_max_gram_features > 0, "train.ridge_max_gram_features must be positive")
