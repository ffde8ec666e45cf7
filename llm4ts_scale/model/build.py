"""`build_model(run_config, calendar_attrs)`: the LLM4TS forecaster a run config describes."""

from __future__ import annotations

import contextlib

from llm4ts_scale.model.encoder import CalendarSpec, Patching, num_patches
from llm4ts_scale.model.llm4ts import LLM4TS


def _approx_params(config) -> int:
    """Parameters of the cut backbone's blocks, from its config (12 d^2 per block is GPT-2's count; gated
    MLPs have more: use the intermediate size when the config gives it)."""
    d = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or 4 * d
    return config.num_hidden_layers * (4 * d * d + 3 * d * inter)


def build_model(run_config, calendar_attrs: list[str], precision: str = "no", device_type: str | None = None,
                meta: bool = False) -> LLM4TS:
    """Backbone (first K blocks, optional 4-bit) + LoRA, wrapped with the LLM4TS encoder and heads.
    All groups but `frozen` start trainable; each stage then calls `set_trainable(...)` with its groups
    (llm4ts_scale/core/config.py:stage_groups: the stage table's, or stages.<name>.groups).

    `precision` ("bf16" or "no") sets the dtype the frozen backbone is held and computed in;
    `device_type` (default: cuda when available) picks the attention implementation for `auto`. `meta`: every
    parameter on the meta device and the backbone unquantized, no weights read (llm4ts_scale/train/memory_plan.py
    counts it, for backbones this machine could not hold).
    """
    import torch

    from llm4ts_scale.model.backbone import (
        attention_implementation,
        backbone_config,
        load_backbone,
        meta_backbone,
        should_dequantize,
    )
    from llm4ts_scale.model.partitioned import match_dtype, zero3_enabled

    m, d = run_config.model, run_config.data
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    attention = attention_implementation(m.attention, device_type, num_patches(d.seq_len, d.patch_len, d.stride))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    _, cut_config, _ = backbone_config(m.backbone, m.layers)
    dequantize = should_dequantize(m.dequantize_frozen, m.quantize, device_type, _approx_params(cut_config), dtype)
    if meta:
        backbone, info = meta_backbone(m.backbone, m.layers, compute_dtype=dtype, attention=attention)
    else:
        backbone, info = load_backbone(m.backbone, m.layers, m.quantize, m.double_quant, compute_dtype=dtype,
                                       attention=attention, init=m.backbone_init, dequantize=dequantize)
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = _wrap(backbone, info, run_config, calendar_attrs)
    if zero3_enabled() and not meta:  # the backbone came partitioned: the rest takes its dtype, as DeepSpeed would give it
        match_dtype(model, info.compute_dtype)
    return model


def _wrap(backbone, info, run_config, calendar_attrs: list[str]) -> LLM4TS:
    """LoRA on the backbone, then the LLM4TS encoder and heads around it."""
    from llm4ts_scale.model.adapters import add_lora

    m, d = run_config.model, run_config.data
    backbone = add_lora(backbone, info.model_type, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.targets)
    use = {"auto": None, "none": []}.get(m.calendar, m.calendar) if isinstance(m.calendar, str) else m.calendar
    calendar = CalendarSpec(tuple(calendar_attrs), None if use is None else tuple(use), m.temporal_pooling,
                            zero_init=m.calendar_init == "zero")
    covariates = (len(d.covariates.known), len(d.covariates.past))
    return LLM4TS(backbone, info, Patching(d.seq_len, d.patch_len, d.stride), d.pred_len, calendar, m, covariates)
