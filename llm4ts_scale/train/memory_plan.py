"""What one rank holds while training, predicted from the run config and the launch, before renting anything.

`describe --ds ... --processes N` prints it; benchmarks/bench_zero3_memory.py sets it beside measured rows
(docs/SCALING.md). The counts come from the model built on the meta device (exact, no weights read); the bytes
per rank are arithmetic:

  backbone     frozen values x bytes held per value (the compute dtype; 4-bit packed: half a byte plus its
               quantization state); ZeRO-3 divides it by N, except parameters under the persistence threshold,
               which DeepSpeed keeps whole on every rank
  trainable    parameters + gradients in the training dtype, an fp32 master copy under DeepSpeed, Adam's two fp32
               moments; ZeRO-2 divides gradients and optimizer state by N, ZeRO-3 the parameters too
  gathered     ZeRO-3 only: what DeepSpeed holds gathered at once, stage3_max_live_parameters (capped by the
               backbone) plus the largest module, in the bytes the backbone is held in
  activations  what autograd keeps for the backward of one micro-batch: per token and block the norm inputs,
               LoRA inputs, q/k/v, the attention weights and the MLP's three d_ff-wide tensors
  floor        the process itself: Python, torch, DeepSpeed, the data stream (measured, per device type)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from llm4ts_scale.core.config import RunConfig, stage_groups
from llm4ts_scale.model.backbone import is_quantized

GIB = 2**30
# RssAnon of a training process on a CPU before it builds a model (benchmarks/bench_zero3_memory.py measures it per
# run: 0.5-0.6 GiB on the 2-core machines here); on a GPU, the memory the CUDA context and its workspaces take.
FLOOR_BYTES = {"cpu": int(0.55 * GIB), "cuda": int(0.75 * GIB)}
PACKED_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # nf4/fp4 by double_quant (absmax state)
ADAM_BYTES, MASTER_BYTES = 8, 4


@dataclass
class Launch:
    """How a run is launched: ranks, the DeepSpeed config (None: plain torch), device and arithmetic."""
    processes: int = 1
    deepspeed: dict | None = None
    device_type: str = "cpu"
    precision: str = "no"  # bf16 | no

    @property
    def zero_stage(self) -> int:
        return int((self.deepspeed or {}).get("zero_optimization", {}).get("stage", 0))

    def zero(self, key: str, default):
        return (self.deepspeed or {}).get("zero_optimization", {}).get(key, default)


@dataclass
class MemoryPlan:
    processes: int
    zero_stage: int
    device_type: str
    precision: str
    backbone_held_as: str
    backbone_bytes: int
    trainable_bytes: int
    gathered_bytes: int
    activation_bytes: int
    floor_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.backbone_bytes + self.trainable_bytes + self.gathered_bytes + self.activation_bytes
                + self.floor_bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "total_gib": round(self.total_bytes / GIB, 2)}


def plan(model, config: RunConfig, launch: Launch, *, dequantize: bool, stage: str = "ft") -> MemoryPlan:
    """Per-rank bytes of training `stage` of `model` (built with build_model(..., meta=True)) under `launch`."""
    n, z = launch.processes, launch.zero_stage
    dtype_bytes = 2 if launch.precision == "bf16" else 4
    m = config.model
    packed = m.quantize != "none" and not dequantize
    held = PACKED_BYTES[m.double_quant] if packed else dtype_bytes
    groups = model.param_groups()
    frozen = [p for _, p in groups["frozen"]]
    threshold = int(launch.zero("stage3_param_persistence_threshold", 100_000)) if z == 3 else 0
    whole = sum(p.numel() for p in frozen if p.numel() < threshold)
    split = sum(p.numel() for p in frozen) - whole
    backbone = held * (whole + (split / n if z == 3 else split))

    trainable = sum(p.numel() for g in stage_groups(config, stage) for _, p in groups[g] if not is_quantized(p))
    train_dtype = 2 if launch.deepspeed and launch.precision == "bf16" else 4
    params_and_grads = 2 * train_dtype * trainable
    optimizer = (ADAM_BYTES + (MASTER_BYTES if launch.deepspeed else 0)) * trainable
    if z >= 2:
        optimizer /= n
        params_and_grads = train_dtype * trainable * (1 / n if z == 3 else 1) + train_dtype * trainable / n

    gathered = 0
    if z == 3:
        largest = max((sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.backbone.modules()),
                      default=0)
        # the live limit counts elements of the stored tensors (a packed 4-bit tensor stores several values per element)
        live_bytes = min(int(launch.zero("stage3_max_live_parameters", 10**9)) * dtype_bytes, held * split)
        gathered = live_bytes + held * largest

    held_as = f"{m.quantize} packed" if packed else ("bf16" if dtype_bytes == 2 else "fp32") + (
        " (dequantized)" if m.quantize != "none" else "")
    return MemoryPlan(processes=n, zero_stage=z, device_type=launch.device_type, precision=launch.precision,
                      backbone_held_as=held_as,
                      backbone_bytes=int(backbone), trainable_bytes=int(params_and_grads + optimizer),
                      gathered_bytes=int(gathered), activation_bytes=activation_bytes(model, config, dtype_bytes),
                      floor_bytes=FLOOR_BYTES.get(launch.device_type, FLOOR_BYTES["cpu"]))


def activation_bytes(model, config: RunConfig, dtype_bytes: int) -> int:
    """Autograd's saved tensors for one micro-batch: every block keeps, per token, its two norm inputs and the
    LoRA inputs (d each), q, k and v (d + 2 d_kv), the attention weights (heads x tokens) and the MLP's gate, up
    and activation (3 d_ff)."""
    backbone_config = model.backbone.get_base_model().config
    d = backbone_config.hidden_size
    heads = getattr(backbone_config, "num_attention_heads", 1)
    head_dim = getattr(backbone_config, "head_dim", None) or d // heads
    kv = getattr(backbone_config, "num_key_value_heads", heads) * head_dim
    d_ff = getattr(backbone_config, "intermediate_size", None) or 4 * d
    tokens = model.num_patches
    per_token = 5 * d + 2 * kv + 3 * d_ff + heads * tokens
    return int(config.data.batch_size * tokens * model.info.layers_loaded * per_token * dtype_bytes)


def meta_model(config: RunConfig, calendar_attrs: list[str], precision: str, device_type: str):
    """The model a run builds, on the meta device: exact parameter counts at no memory cost."""
    from llm4ts_scale.model import build_model

    with torch.no_grad():
        return build_model(config, calendar_attrs, precision, device_type=device_type, meta=True)
