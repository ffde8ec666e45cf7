"""Tiny random-weight decoders saved with save_pretrained, for tests that need a backbone by path.

Plain helpers (not fixtures), shared by model and train tests: each builds a model of the given
architecture, saves it into `directory` and returns the path. Same seed -> same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _save(model, directory) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def tiny_gpt2(directory, layers: int = 4, hidden: int = 32, heads: int = 2, positions: int = 128, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions, vocab_size=256,
                        bos_token_id=0, eos_token_id=0)
    return _save(GPT2LMHeadModel(config), directory)


def _tiny_rotary(config_cls, model_cls, directory, layers, hidden, heads, kv_heads, seed, **extra) -> Path:
    torch.manual_seed(seed)
    config = config_cls(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=256,
                        max_position_embeddings=256, bos_token_id=0, eos_token_id=0, **extra)
    return _save(model_cls(config), directory)


def tiny_llama(directory, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _tiny_rotary(LlamaConfig, LlamaForCausalLM, directory, layers, hidden, heads, kv_heads, seed, pad_token_id=0)


def tiny_qwen2(directory, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _tiny_rotary(Qwen2Config, Qwen2ForCausalLM, directory, layers, hidden, heads, kv_heads, seed, pad_token_id=0)


def tiny_mistral(directory, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    return _tiny_rotary(MistralConfig, MistralForCausalLM, directory, layers, hidden, heads, kv_heads, seed,
                        sliding_window=None)


BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}
