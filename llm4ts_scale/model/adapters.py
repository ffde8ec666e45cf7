"""What of the frozen backbone may still learn: LoRA adapters (PEFT), norms, learned position tables."""

from __future__ import annotations

import warnings

from torch import nn

from llm4ts_scale.core.errors import UserError


def default_lora_targets(model_type: str) -> list[str]:
    """PEFT's own per-architecture default (q_proj/v_proj for LLaMA-likes, c_attn for GPT-2)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    if model_type not in MAPPING:
        raise UserError(f"PEFT has no default LoRA targets for {model_type!r}; set model.lora.targets, e.g. [q_proj,v_proj]")
    return list(MAPPING[model_type])


def add_lora(model: nn.Module, model_type: str, r: int, alpha: int, dropout: float, targets="auto"):
    """Wrap the backbone in a PeftModel, so the adapter can be saved/loaded with save_pretrained.

    fan_in_fan_out is set when a target is a transformers Conv1D (GPT-2's fused c_attn stores
    weights transposed); once quantized, the same module is a Linear4bit and needs it unset.
    """
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = default_lora_targets(model_type) if targets == "auto" else list(targets)
    matched = [m for name, m in model.named_modules() if name.split(".")[-1] in targets]
    if not matched:
        raise UserError(f"model.lora.targets={targets} match no module of the {model_type} backbone; "
                        "give names of its linear layers, e.g. q_proj,v_proj (or c_attn for GPT-2)")
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in matched),
    )
    with warnings.catch_warnings():  # PEFT still calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def is_norm(module: nn.Module) -> bool:
    """LayerNorm / RMSNorm of any architecture (LlamaRMSNorm, Qwen2RMSNorm, ... are custom classes)."""
    name = type(module).__name__
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)) or name.endswith(("LayerNorm", "RMSNorm"))


def is_position_table(module: nn.Module) -> bool:
    """Learned absolute position tables (GPT-2's wpe). Token embeddings were dropped on load,
    so any embedding table left in the backbone indexes positions."""
    return isinstance(module, nn.Embedding)


def owned_parameter_names(model: nn.Module, predicate) -> set[str]:
    """Names (relative to model) of parameters directly owned by modules matching predicate."""
    names = set()
    for mod_name, module in model.named_modules():
        if predicate(module):
            prefix = f"{mod_name}." if mod_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names
