"""Load the first K blocks of a pre-trained decoder (HF id, local dir, or alias) as a base model.

Only the first K blocks are materialized: the layer count is set on the config before
`from_pretrained`, so the remaining blocks' weights are skipped on load. Inputs always enter as
`inputs_embeds`, so the token-embedding table is dropped right after loading.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.weights import full_shape
from llm4ts_scale.model import packaged
from llm4ts_scale.model.partitioned import dequantized_linear, embedding_std, load_partitioned, seeded_init, zero3_enabled
from llm4ts_scale.model.smollm2 import ALIAS as SMOLLM2_ALIAS
from llm4ts_scale.model.smollm2 import ensure_cached as smollm2_cached

# alias -> function returning the converted local checkpoint (converting on first use)
ALIASES = {SMOLLM2_ALIAS: smollm2_cached,
           **{alias: (lambda a=alias: packaged.ensure_cached(a)) for alias in packaged.PACKAGED}}


@dataclass
class BackboneInfo:
    name: str  # what the user asked for (id, path or alias)
    source: str  # what from_pretrained read (id or directory)
    model_type: str
    class_name: str
    layers_total: int
    layers_loaded: int
    hidden_size: int
    max_positions: int | None  # learned absolute position tables cap the number of tokens
    quantize: str
    compute_dtype: torch.dtype
    attention: str  # the attention implementation in use
    embed_std: float  # std of the pretrained token-embedding table (the scale blocks expect as input)
    init: str = "pretrained"


class TokenEmbeddingsDropped(nn.Module):
    """Stands in for the token-embedding table: inputs come as `inputs_embeds`, never as ids."""

    def forward(self, input_ids):
        raise RuntimeError("this backbone takes inputs_embeds only; its token embedding table was dropped")


@contextlib.contextmanager
def quiet_transformers():
    """Truncating to K layers makes transformers report every skipped weight (intended), and a failed
    hub lookup logs each retry; the user gets one error line instead."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    verbosity, hub_verbosity = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        hf_logging.enable_progress_bar()


def resolve(name: str) -> str:
    """Alias -> cached local dir; existing dir -> itself; path-looking but missing -> error; else a hub id."""
    if name in ALIASES:
        return str(ALIASES[name]())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")) or path.exists():
        raise UserError(f"model.backbone={name!r} is not a model directory; pass a directory with config.json "
                        "or a Hugging Face id")
    return name


def _load_error(name: str, err: Exception) -> UserError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return UserError(
        f"cannot load backbone {name!r} ({type(err).__name__}: {first[:200]}); pass a local model directory "
        "or check the id and the network (offline: set HF_HUB_OFFLINE=1 and use a directory or a cached id)"
    )


# Below this many tokens the eager (matmul + softmax) attention beats PyTorch's CPU SDPA kernel,
# forward + backward (measured with benchmarks/bench_model.py's shapes on a 2-core Xeon: 79 vs 85 ms at
# T=42; SDPA wins from T=64 on: 111 vs 135 ms, and by 2x at T=256).
CPU_EAGER_MAX_TOKENS = 48


def attention_implementation(requested: str, device_type: str, num_tokens: int) -> str:
    """`auto`: SDPA (flash kernels) on GPUs; on CPUs the faster of eager/SDPA for this token count."""
    if requested != "auto":
        return requested
    if device_type == "cpu" and num_tokens <= CPU_EAGER_MAX_TOKENS:
        return "eager"
    return "sdpa"


def bnb_config(quantize: str, double_quant: bool, dtype: torch.dtype):
    """4-bit config; quant_storage = the model dtype so ZeRO-3 can shard the packed weights."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantize,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype,
    )


def backbone_config(name: str, layers: int):
    """(resolved source, HF config cut to `layers` blocks, total blocks): every check that needs no weights,
    so a run can refuse a bad backbone before it writes anything."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    source = resolve(name)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from None
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(f"backbone {name!r} ({config.model_type}) is not a decoder-only language model; "
                        "use a causal LM such as gpt2, Llama, Qwen2 or Mistral")
    total = config.num_hidden_layers  # attribute_map: n_layer for GPT-2
    if layers > total:
        raise UserError(f"model.layers={layers} exceeds the {total} blocks of backbone {name!r}; set model.layers <= {total}")
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-block attention kinds (Gemma 3, Qwen 2): cut too
        config.layer_types = config.layer_types[:layers]
    return source, config, total


def load_backbone(name: str, layers: int, quantize: str = "none", double_quant: bool = True, *,
                  compute_dtype: torch.dtype = torch.float32, attention: str = "sdpa",
                  init: str = "pretrained", dequantize: bool = False) -> tuple[nn.Module, BackboneInfo]:
    """AutoConfig + AutoModel (base decoder, no LM head) with only the first `layers` blocks.

    The frozen weights are held in `compute_dtype` (4-bit weights dequantize straight into it), so a
    bf16 run does not cast them on every call; the small trainable ones (norms, position tables)
    stay fp32, except under ZeRO-3, where the backbone is built partitioned (partitioned.py) in one dtype.
    `init="random"` builds the same architecture with fresh weights seeded per parameter name (`seeded_init`:
    reproducible in every stage, in a fresh process and at any world size, since frozen weights are never saved);
    `init="scratch"` starts from the same weights, held in fp32 because they train (autocast still
    computes in bf16 where the run does). `dequantize`: hold the 4-bit weights dequantized (see
    `dequantize_frozen`).
    """
    source, config, total = backbone_config(name, layers)
    if init != "pretrained":
        config = _without_token_table(config)
    partitioned = zero3_enabled()
    if init == "scratch" and not partitioned:  # (under ZeRO-3, DeepSpeed's fp32 master copy is what trains)
        compute_dtype = torch.float32
    try:
        # building draws nothing from the run's RNG (transformers initializes what it builds, on rank 0 only under
        # ZeRO-3), so the adapters and heads built next start the same on any path and world size
        with quiet_transformers(), torch.random.fork_rng(devices=_cuda_devices()):
            if partitioned:  # ZeRO-3: no rank holds the whole backbone, from the first byte (partitioned.py)
                model = load_partitioned(source, config, dtype=compute_dtype, attention=attention, init=init,
                                         quantize=quantize, double_quant=double_quant, dequantize=dequantize)
            else:
                model = _load_whole(source, config, quantize, double_quant, compute_dtype, attention, init)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None

    # random weights: the std their (never built) token table would be drawn with, the scale the blocks expect
    embed_std = (float(getattr(config, "initializer_range", 0.02)) if init != "pretrained"
                 else embedding_std(model.get_input_embeddings().weight))
    model.set_input_embeddings(TokenEmbeddingsDropped())
    if not partitioned:  # under ZeRO-3 every parameter keeps the one dtype DeepSpeed's optimizer needs
        _upcast_small_weights(model)
        if dequantize:
            dequantize_frozen(model, compute_dtype)
    _keep_4bit_layout(model)
    model.config.use_cache = False
    return model, _info(model, name, source, config, total, quantize=quantize, compute_dtype=compute_dtype,
                        attention=attention, embed_std=embed_std, init=init)


def meta_backbone(name: str, layers: int, *, compute_dtype: torch.dtype, attention: str) -> tuple[nn.Module, BackboneInfo]:
    """The architecture alone, on the meta device, unquantized: no weights read, no memory held. What a memory plan
    counts (llm4ts_scale/train/memory_plan.py), for backbones larger than this machine."""
    from transformers import AutoModel

    source, config, total = backbone_config(name, layers)
    with quiet_transformers(), torch.device("meta"):
        model = AutoModel.from_config(_without_token_table(config), dtype=compute_dtype, attn_implementation=attention)
    model.set_input_embeddings(TokenEmbeddingsDropped())
    _upcast_small_weights(model)
    return model, _info(model, name, source, config, total, quantize="none", compute_dtype=compute_dtype,
                        attention=attention, embed_std=1.0, init="random")


def _info(model: nn.Module, name: str, source: str, config, total: int, **chosen) -> BackboneInfo:
    return BackboneInfo(name=name, source=source, model_type=config.model_type, class_name=type(model).__name__,
                        layers_total=total, layers_loaded=_count_blocks(model), hidden_size=config.hidden_size,
                        max_positions=_learned_position_limit(model), **chosen)


def _cuda_devices() -> list[int]:
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []


def _without_token_table(config):
    """A copy of `config` with a one-row vocabulary: inputs enter as inputs_embeds and the token table is dropped
    on load, so random weights need not build one (a 7B-class table is over 1 GiB, and under ZeRO-3 it would be
    gathered whole on every rank to be initialized)."""
    import copy

    config = copy.deepcopy(config)
    config.vocab_size, config.pad_token_id = 1, None
    return config


def _load_whole(source: str, config, quantize: str, double_quant: bool, dtype: torch.dtype, attention: str,
                init: str) -> nn.Module:
    """Every process builds the whole backbone (no ZeRO-3): from_pretrained, 4-bit through BitsAndBytesConfig."""
    from transformers import AutoModel

    kwargs = {"dtype": dtype, "attn_implementation": attention}
    if init != "pretrained" and quantize == "none":  # random weights, built in place
        model = AutoModel.from_config(config, **kwargs)
        seeded_init(model, config)
        return model
    if quantize != "none":
        kwargs["quantization_config"] = bnb_config(quantize, double_quant, dtype)
    with _random_weights(source, config, init, dtype) as weights_dir:
        return AutoModel.from_pretrained(weights_dir, config=config, **kwargs)


# Backbones whose dequantized weights stay under this are held dequantized on CPUs (model.dequantize_frozen=auto).
DEQUANTIZE_MAX_BYTES = 4 * 2**30


def should_dequantize(requested: str, quantize: str, device_type: str, logical_params: int, dtype: torch.dtype) -> bool:
    """auto: on a CPU, where bitsandbytes dequantizes every 4-bit weight on every call (forward and
    backward; about 20% of a training step for SmolLM2), if the dequantized copy is small."""
    if quantize == "none" or requested == "off":
        return False
    if requested == "on":
        return True
    return device_type == "cpu" and logical_params * torch.tensor([], dtype=dtype).element_size() <= DEQUANTIZE_MAX_BYTES


def dequantize_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Replace every 4-bit Linear by a plain frozen Linear holding its dequantized weight.

    The values are exactly those bitsandbytes computes with (it dequantizes to the compute dtype and
    calls F.linear), so the numerics stay those of the quantized model; what changes is that the
    dequantization runs once instead of on every call, and the memory is that of `dtype`.
    """
    import bitsandbytes as bnb

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                setattr(parent, child_name, dequantized_linear(child, dtype))


@contextlib.contextmanager
def _random_weights(source: str, config, init: str, dtype: torch.dtype):
    """Yield the directory to load weights from: the source itself, or (init="random" or "scratch") a temporary
    checkpoint of the architecture with `seeded_init`'s weights in `dtype`, so that 4-bit loading quantizes them
    the same way (from the values cast to the compute dtype)."""
    if init == "pretrained":
        yield source
        return
    import tempfile

    from transformers import AutoModel

    with tempfile.TemporaryDirectory(prefix="llm4ts-random-") as tmp:
        model = AutoModel.from_config(config, dtype=dtype)
        seeded_init(model, config)
        model.save_pretrained(tmp)
        del model
        yield tmp


def _upcast_small_weights(model: nn.Module) -> None:
    """Keep the small weights that may train (norms, position tables, biases) in fp32; frozen
    matrices stay in the compute dtype."""
    for module in model.modules():
        for p in module.parameters(recurse=False):
            small = p.dim() < 2 or isinstance(module, nn.Embedding)
            if small and p.is_floating_point() and p.dtype != torch.float32 and not is_quantized(p):
                p.data = p.data.float()


def _keep_4bit_layout(model: nn.Module) -> None:
    """Disable bitsandbytes' CPU inference fast path (AVX512-BF16 CPUs, eval mode, no grad).

    It repacks each 4-bit weight IN PLACE into a bf16 CPU layout on the first such forward:
    validation then computes with other numerics than training, and the next training forward
    fails (bnb 0.50.2: in-place bias add on a leaf) or needs shapes divisible by 64.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _count_blocks(model: nn.Module) -> int:
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return max((len(m) for m in lists), default=0)


def _learned_position_limit(model: nn.Module) -> int | None:
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    return min((t.num_embeddings for t in tables), default=None)


def is_quantized(p: torch.Tensor) -> bool:
    return type(p).__name__ == "Params4bit"


def logical_numel(p: torch.Tensor) -> int:
    """Parameter count as in the unquantized model (a Params4bit packs two values per byte)."""
    if is_quantized(p) and getattr(p, "quant_state", None) is not None:
        return int(torch.Size(p.quant_state.shape).numel())
    return full_shape(p).numel()


def memory_bytes(module: nn.Module, skip=lambda name: False) -> int:
    """Bytes of weights as held in memory: parameters, buffers, and 4-bit quantization state."""
    total = 0
    for name, p in module.named_parameters():
        if skip(name):
            continue
        total += full_shape(p).numel() * p.element_size()
        state = getattr(p, "quant_state", None) if is_quantized(p) else None
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in _state_tensors(state))
    total += sum(b.numel() * b.element_size() for _, b in module.named_buffers())
    return total


def _state_tensors(state):
    for key in ("absmax", "code", "offset"):
        t = getattr(state, key, None)
        if isinstance(t, torch.Tensor):
            yield t
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _state_tensors(nested)
