"""Named parameter groups, so a training stage says what trains without knowing module names."""

from __future__ import annotations

from llm4ts_scale.core.stages import STAGES, TRAINABLE_GROUPS

GROUPS = (*TRAINABLE_GROUPS, "frozen")

# What each stage trains, from the stage table (llm4ts_scale/core/stages.py; docs/ARCHITECTURE.md section 1).
STAGE_GROUPS: dict[str, set[str]] = {s.name: set(s.groups) for s in STAGES}
