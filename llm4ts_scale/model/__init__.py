"""The LLM4TS model: `build_model(run_config, calendar_attrs)` and its parts (no logic here)."""

import logging

from llm4ts_scale.model.build import build_model
from llm4ts_scale.model.encoder import CALENDAR_SIZES, HOURLY_ATTRS, num_patches
from llm4ts_scale.model.groups import GROUPS
from llm4ts_scale.model.llm4ts import LLM4TS

# bitsandbytes warns on every import that an optional CPU kernel package is missing; the CPU path
# works without it (docs/ARCHITECTURE.md section 5), and the line would break our one-line-error contract.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

__all__ = ["build_model", "LLM4TS", "GROUPS", "CALENDAR_SIZES", "HOURLY_ATTRS", "num_patches"]
