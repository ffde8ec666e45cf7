"""The one cache directory of the package: converted backbones, prepared stores, downloaded data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$LLM4TS_CACHE`, else `~/.cache/llm4ts_scale`."""
    env = os.environ.get("LLM4TS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llm4ts_scale"
