"""GGUF file -> an ordinary safetensors checkpoint in the package cache, converted once.

transformers can read a GGUF (dequantizing its Q4/Q5/Q8 blocks to fp32) but refuses to `save_pretrained`
such a model, and re-reading a GGUF costs seconds to minutes each time. So: read it once, move the weights
into a fresh model built from the same config without `quantization_config`, save that (atomically: a tmp
dir renamed into place) under `<cache>/backbones/<alias>/`, and load the cache with the ordinary Auto
classes afterwards, which makes 4-bit loading and layer truncation work as for any other checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llm4ts_scale.core.cache import cache_root

SOURCE_FILE = "llm4ts_source.json"  # provenance marker written next to the converted weights, last


def backbone_cache_dir(alias: str) -> Path:
    return cache_root() / "backbones" / alias


def is_cached(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / SOURCE_FILE).is_file()


def convert(gguf: Path, out_dir: Path, provenance: dict | None = None) -> None:
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
            record = {"gguf": str(gguf), "size": stat.st_size, "mtime": stat.st_mtime, "dtype": "float32"}
            (tmp / SOURCE_FILE).write_text(json.dumps({**record, **(provenance or {})}, indent=1))
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
