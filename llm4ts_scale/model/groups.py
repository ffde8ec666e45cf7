"""Named parameter groups, so a training stage says what trains without knowing module names."""

from __future__ import annotations

from llm4ts_scale.core.stages import TRAINABLE_GROUPS

# The model only names its groups; which of them a stage trains is the caller's (train/stage.py) to say.
GROUPS = (*TRAINABLE_GROUPS, "frozen")
