"""`llm4ts-scale describe`: build the model a config asks for and print, as JSON, what it holds
(backbone, layers loaded, parameters per group, trainable per stage, backbone bytes in memory),
so a user sees the cost of a backbone/quantization choice before renting GPUs."""

from __future__ import annotations

import json

from llm4ts_scale.core.config import load_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("describe", help="print the model a config builds (parameters, groups, memory) as JSON",
                              description=__doc__)
    p.add_argument("--config", help="YAML or JSON run config")
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
    from llm4ts_scale.core.precision import resolve_precision
    from llm4ts_scale.core.stages import STAGE_NAMES
    from llm4ts_scale.model import build_model

    config = load_config(args.config, args.overrides)
    # the precision a run on this machine would use: it decides the dtype the frozen backbone is held in
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision, _ = resolve_precision(config.train.mixed_precision, device_type)
    model = build_model(config, calendar_attrs_for(config), precision=precision, device_type=device_type)
    summary = model.summary({name: stage_groups(config, name) for name in STAGE_NAMES})
    if config.model.quantize != "none":
        # On a CPU the 4-bit weights are held dequantized by default (model.dequantize_frozen=auto), so
        # backbone_bytes is what THIS machine holds; a GPU holds them in 4 bits: report both.
        values = config.to_dict()
        values["model"]["dequantize_frozen"] = "off"
        packed = build_model(config_from_dict(values), calendar_attrs_for(config), precision=precision,
                             device_type=device_type).summary()["backbone_bytes"]
        summary["backbone_bytes_4bit"] = packed
        summary["backbone_bytes_note"] = ("backbone_bytes: as held on this machine; backbone_bytes_4bit: as held in "
                                          "4 bits (on a GPU, or with model.dequantize_frozen=off)")
    summary["precision"] = precision
    print(json.dumps(summary, indent=2))
    return 0
