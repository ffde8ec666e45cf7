"""The backbone built partitioned under DeepSpeed ZeRO-3, so that no rank ever holds the whole of it.

A ZeRO-3 run exists to train a backbone one rank cannot hold, so the division has to start at load, not at
`deepspeed.initialize`. transformers does this for an unquantized checkpoint while a stage-3 DeepSpeed config is
alive (Accelerate registers it when the Accelerator is built): the model is constructed under `deepspeed.zero.Init`,
rank 0 reads the checkpoint (memory-mapped) and the values are scattered one module at a time. It does not for a
bitsandbytes model (every rank builds and quantizes all of it) nor for random weights (each rank's RNG). Here
every setting takes the partitioned route:

1. the unquantized architecture, first K blocks, in the compute dtype: loaded by transformers (pretrained), or
   constructed under zero.Init and filled by `seeded_init` (random, scratch);
2. quantize=nf4/fp4: each Linear, one at a time, is gathered on every rank, quantized exactly as
   `from_pretrained(quantization_config=...)` quantizes it (same bitsandbytes call on the same dtype), then held
   dequantized (a CPU's frozen weights) or packed (a GPU's), and partitioned again at once.

A rank's peak is its 1/N share plus one module in full; what it keeps is the share. The gathered values equal a
one-process load bit for bit (tests/model/test_partitioned.py). The rest of the backbone's life under ZeRO-3
(forward, gathered weights released after use) is DeepSpeed's, tuned by ds_configs/zero3*.json (docs/SCALING.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from llm4ts_scale.core import heap
from llm4ts_scale.core.weights import full_shape, gathered, is_partitioned


def zero3_enabled() -> bool:
    """A ZeRO-3 DeepSpeed config is alive (transformers' flag: models built now are partitioned)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _is_rank0() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _partition_config() -> dict:
    """The run's DeepSpeed config, for partitioning modules built after load. Its memory-efficient linear is
    off here: with an existing module zero.Init would patch torch's F.linear for the rest of the process."""
    from transformers.integrations import deepspeed_config

    config = copy.deepcopy(deepspeed_config())
    config.setdefault("zero_optimization", {})["memory_efficient_linear"] = False
    return config


def partition(module: nn.Module) -> nn.Module:
    """Partition a module built whole (rank 0's values are kept): from here on each rank holds its share."""
    import deepspeed

    deepspeed.zero.Init(module=module, config_dict_or_path=_partition_config())
    return module


def load_partitioned(source: str, config, *, dtype: torch.dtype, attention: str, init: str,
                     quantize: str, double_quant: bool, dequantize: bool) -> nn.Module:
    """The base decoder (config already cut to K blocks), partitioned across the ranks from the start."""
    from transformers import AutoModel

    if init == "pretrained":
        model = AutoModel.from_pretrained(source, config=config, dtype=dtype, attn_implementation=attention)
    else:
        model = AutoModel.from_config(config, dtype=dtype, attn_implementation=attention)
        seeded_init(model, config)
    if quantize != "none":
        quantize_linears(model, quantize, double_quant, dtype, packed=not dequantize)
    heap.release()
    return model


# ---------------------------------------------------------------- random weights, the same on any world size

RANDOM_INIT_SEED = 0
SEED_CHUNK = 1 << 24  # values are drawn in chunks of this many elements, each from its own seed


def _seed(seed: int, name: str, chunk: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/{name}/{chunk}".encode()).digest()[:8], "little") & (2**63 - 1)


def seeded_fill(p: torch.Tensor, name: str, std: float, seed: int = RANDOM_INIT_SEED) -> None:
    """Write N(0, std) into `p` (whole, not a shard), drawn in fp32 chunk by chunk, each chunk from a seed of
    (seed, name, chunk index): the values are a function of those alone, and no fp32 copy of a large matrix is made."""
    flat = p.view(-1)
    part = torch.empty(min(SEED_CHUNK, flat.numel()), dtype=torch.float32)
    for i, start in enumerate(range(0, flat.numel(), SEED_CHUNK)):
        n = min(SEED_CHUNK, flat.numel() - start)
        part[:n].normal_(0.0, std, generator=torch.Generator().manual_seed(_seed(seed, name, i)))
        flat[start:start + n].copy_(part[:n])


def seeded_init(model: nn.Module, config, seed: int = RANDOM_INIT_SEED) -> None:
    """Random weights that do not depend on how the model was built or how many ranks hold it: every matrix
    N(0, initializer_range) from a seed of its own name (the initializer transformers' decoders use for linear
    and embedding weights); vectors (norm gains, biases) keep the constants the architecture constructs them with.
    Under ZeRO-3 each matrix is gathered alone and rank 0's values are scattered; call it on every rank."""
    std = float(getattr(config, "initializer_range", 0.02))
    rank0 = _is_rank0()
    for name, p in model.named_parameters():
        if len(full_shape(p)) < 2:
            continue
        with gathered([p], modifier_rank=0), torch.no_grad():
            if rank0 or not is_partitioned(p):
                seeded_fill(p.data, name, std, seed)


STD_CHUNK = 1 << 20  # elements summed at a time in float64


def embedding_std(weight: torch.Tensor) -> float:
    """Standard deviation (n-1) of a (token embedding) table, two passes in float64 a chunk at a time. A ZeRO-3 table
    is never gathered: each rank sums its own shard and the sums are all-reduced, so a large vocabulary table costs
    no transient copy, and the value is the same however many ranks hold the table."""
    partitioned = is_partitioned(weight)
    values = weight.ds_tensor.view(-1)[:_shard_numel(weight)] if partitioned else weight.detach().view(-1)
    n = full_shape(weight).numel()

    def total(fn) -> float:
        acc = torch.zeros(1, dtype=torch.float64)
        for start in range(0, values.numel(), STD_CHUNK):
            acc += fn(values[start:start + STD_CHUNK].double()).sum()
        if partitioned and torch.distributed.is_initialized():
            torch.distributed.all_reduce(acc)
        return float(acc)

    mean = total(lambda x: x) / n
    return (total(lambda x: (x - mean) ** 2) / max(1, n - 1)) ** 0.5


def _shard_numel(p: torch.Tensor) -> int:
    """Elements of this rank's shard that belong to the parameter (the last shard is padded)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    size = p.ds_tensor.numel()
    return max(0, min(size, p.ds_numel - rank * size))


# ---------------------------------------------------------------- 4-bit, one module at a time


def quantize_linears(model: nn.Module, quantize: str, double_quant: bool, dtype: torch.dtype, packed: bool) -> None:
    """Replace every Linear (and GPT-2's Conv1D) as bitsandbytes loading would: a Linear4bit (packed) or a plain
    frozen Linear holding the 4-bit values dequantized; gathered, rebuilt and partitioned one module at a time."""
    from transformers.pytorch_utils import Conv1D

    targets = [(parent, name) for parent in list(model.modules()) for name, child in parent.named_children()
               if isinstance(child, (nn.Linear, Conv1D))]  # names only: a replaced module must not stay referenced
    for parent, name in targets:
        old = getattr(parent, name)
        params = [old.weight] + ([old.bias] if old.bias is not None else [])
        with gathered(params), torch.no_grad():
            weight = old.weight.detach()
            if isinstance(old, Conv1D):  # stored [in, out]; transformers transposes it before quantizing
                weight = weight.t()
            bias = None if old.bias is None else old.bias.detach().clone()
            new = linear_4bit(weight.to(dtype).contiguous(), bias, quantize, double_quant, dtype)
            if not packed:
                new = dequantized_linear(new, dtype)
        setattr(parent, name, partition(new) if is_partitioned(old.weight) else new)
        del old, params, weight, new
        heap.release()  # the replaced module's shards, now unreferenced (core/heap.py)


def linear_4bit(weight: torch.Tensor, bias: torch.Tensor | None, quantize: str, double_quant: bool,
                dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes Linear4bit holding `weight` [out, in] quantized the way transformers' loader does it
    (the module built empty, then `Params4bit(value, **its empty weight's settings)` moved to the value's device)."""
    import bitsandbytes as bnb

    out_features, in_features = weight.shape
    module = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=dtype,
                               compress_statistics=double_quant, quant_type=quantize, quant_storage=dtype,
                               device="meta")
    settings = {k: v for k, v in module.weight.__dict__.items() if k != "data"}
    module.weight = bnb.nn.Params4bit(weight, requires_grad=False, **settings).to(weight.device)
    if bias is not None:
        module.bias = nn.Parameter(bias.to(weight.device), requires_grad=False)
    return module


def dequantized_linear(module: nn.Module, dtype: torch.dtype) -> nn.Linear:
    """A plain frozen Linear holding a Linear4bit's values dequantized into `dtype`: exactly what bitsandbytes
    computes with on every call (it dequantizes to the compute dtype, then F.linear), done once."""
    import bitsandbytes.functional as bnbF

    weight = bnbF.dequantize_4bit(module.weight.data, module.weight.quant_state).to(dtype)
    # skip_init: no random initialization, so building the model draws the same RNG either way
    plain = torch.nn.utils.skip_init(nn.Linear, module.in_features, module.out_features,
                                     bias=module.bias is not None, dtype=dtype, device=weight.device)
    with torch.no_grad():
        plain.weight.copy_(weight.reshape(module.out_features, module.in_features))
        if module.bias is not None:
            plain.bias.copy_(module.bias.float())
    plain.requires_grad_(False)
    return plain


def match_dtype(model: nn.Module, dtype: torch.dtype) -> None:
    """Give the parameters built after load (LoRA, encoder, heads) the partitioned backbone's dtype.

    DeepSpeed casts a whole model to bf16 when it partitions it itself, and casts nothing when the model
    arrives partitioned; its ZeRO-3 optimizer then needs one dtype across the trainable parameters."""
    for p in model.parameters():
        if not is_partitioned(p) and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
