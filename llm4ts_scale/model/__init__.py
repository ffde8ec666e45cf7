"""The LLM4TS model: `build_model(run_config, calendar_attrs)` and its parts."""

from __future__ import annotations

import logging

# bitsandbytes warns on every import that an optional CPU kernel package is missing; the CPU path
# works without it (DESIGN section 5), and the line would break our one-line-error contract.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

from llm4ts_scale.model.encoder import CALENDAR_SIZES, HOURLY_ATTRS, num_patches
from llm4ts_scale.model.groups import GROUPS, STAGE_GROUPS
from llm4ts_scale.model.llm4ts import LLM4TS

__all__ = ["build_model", "LLM4TS", "GROUPS", "STAGE_GROUPS", "CALENDAR_SIZES", "HOURLY_ATTRS", "num_patches"]


def build_model(run_config, calendar_attrs: list[str]) -> LLM4TS:
    """Backbone (first K blocks, optional 4-bit) + LoRA, wrapped with the LLM4TS encoder and heads.
    All groups but `frozen` start trainable; stages call `set_trainable(STAGE_GROUPS[stage])`."""
    from llm4ts_scale.model.adapters import add_lora
    from llm4ts_scale.model.backbone import load_backbone

    m, d = run_config.model, run_config.data
    backbone, info = load_backbone(m.backbone, m.layers, m.quantize, m.double_quant)
    backbone = add_lora(backbone, info.model_type, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.targets)
    return LLM4TS(
        backbone, info, seq_len=d.seq_len, pred_len=d.pred_len, patch_len=d.patch_len, stride=d.stride,
        calendar_attrs=calendar_attrs, pooling=m.temporal_pooling, conv_kernel=m.conv_kernel, dropout=m.dropout,
        revin_affine=m.revin_affine, tune_norms=m.tune_norms, tune_positions=m.tune_positions,
    )
