"""`llm4ts-scale describe`: build the model a config asks for and print, as JSON, what it holds
(backbone, layers loaded, parameters per group, trainable per stage, backbone bytes in memory) and what one rank
would hold training it under a launch (`--ds`, `--processes`, `--device`: llm4ts_scale/train/memory_plan.py),
so a user sees the cost of a backbone/quantization/launch choice before renting GPUs. `--meta` builds nothing but
the architecture (no weights read): a 70B-class backbone is described on a laptop."""

from __future__ import annotations

import json

from llm4ts_scale.core.config import load_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("describe", help="print the model a config builds (parameters, groups, memory) as JSON",
                              description=__doc__)
    p.add_argument("--config", help="YAML or JSON run config")
    p.add_argument("--ds", help="DeepSpeed config of the launch to plan for (e.g. ds_configs/zero3.json); none: plain torch")
    p.add_argument("--processes", type=int, default=1, help="ranks of the launch to plan for (all nodes)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device of the launch (default: this machine's)")
    p.add_argument("--meta", action="store_true", help="count on the meta device only: no weights are read or held")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. model.quantize=none")
    p.set_defaults(handler=run)


def calendar_attrs_for(config) -> list[str]:
    """Calendar attributes of data.freq when given and the data side is importable; hourly otherwise
    (resolving them from the data itself would need the data stack; they change only a few
    thousand embedding parameters)."""
    from llm4ts_scale.model import HOURLY_ATTRS

    if config.data.freq:
        try:
            from llm4ts_scale.data.calendar import calendar_attributes
        except ImportError:
            return list(HOURLY_ATTRS)
        return calendar_attributes(config.data.freq)
    return list(HOURLY_ATTRS)


def run(args) -> int:
    import torch

    from llm4ts_scale.core.config import config_from_dict, stage_groups
    from llm4ts_scale.core.errors import UserError
    from llm4ts_scale.core.precision import resolve_precision
    from llm4ts_scale.core.stages import STAGE_NAMES
    from llm4ts_scale.model import build_model
    from llm4ts_scale.model.backbone import backbone_config, should_dequantize
    from llm4ts_scale.model.build import _approx_params
    from llm4ts_scale.train.ds_config import fill_auto, read_ds_config
    from llm4ts_scale.train.memory_plan import Launch, meta_model, plan

    config = load_config(args.config, args.overrides)
    if args.processes < 1:
        raise UserError(f"--processes {args.processes}: give the number of ranks, 1 or more")
    # the precision a run on that device would use: it decides the dtype the frozen backbone is held in
    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision, _ = resolve_precision(config.train.mixed_precision, device_type)
    if device_type == "cuda" and config.train.mixed_precision == "auto" and not torch.cuda.is_available():
        precision = "bf16"  # planning for GPUs from a machine without one: the bf16 a modern GPU runs
    attrs = calendar_attrs_for(config)
    groups = {name: stage_groups(config, name) for name in STAGE_NAMES}
    skeleton = meta_model(config, attrs, precision, device_type)
    if args.meta:
        summary = skeleton.summary(groups)
        summary.pop("backbone_bytes")
    else:
        model = build_model(config, attrs, precision=precision, device_type=device_type)
        summary = model.summary(groups)
        if config.model.quantize != "none":
            # On a CPU the 4-bit weights are held dequantized by default (model.dequantize_frozen=auto), so
            # backbone_bytes is what THIS machine holds; a GPU holds them in 4 bits: report both.
            values = config.to_dict()
            values["model"]["dequantize_frozen"] = "off"
            packed = build_model(config_from_dict(values), attrs, precision=precision,
                                 device_type=device_type).summary()["backbone_bytes"]
            summary["backbone_bytes_4bit"] = packed
            summary["backbone_bytes_note"] = ("backbone_bytes: as held on this machine; backbone_bytes_4bit: as held "
                                              "in 4 bits (on a GPU, or with model.dequantize_frozen=off)")
    summary["precision"] = precision
    ds = None
    if args.ds:
        ds = fill_auto(read_ds_config(args.ds), micro_batch=config.data.batch_size, grad_accum=config.train.grad_accum,
                       world_size=args.processes, max_grad_norm=config.train.max_grad_norm, bf16=precision == "bf16",
                       on_gpu=device_type == "cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    _, cut, _ = backbone_config(config.model.backbone, config.model.layers)
    dequantize = should_dequantize(config.model.dequantize_frozen, config.model.quantize, device_type,
                                   _approx_params(cut), dtype)
    summary["memory_per_rank"] = plan(skeleton, config, Launch(args.processes, ds, device_type, precision),
                                      dequantize=dequantize).to_dict()
    print(json.dumps(summary, indent=2))
    return 0
