"""Named parameter groups, so a training stage says what trains without knowing module names."""

from __future__ import annotations

GROUPS = ("head", "align_head", "embeddings", "lora", "norms", "positions", "revin", "frozen")

# What each stage of LLM4TS trains (docs/ARCHITECTURE.md section 1): alignment, then linear probing, then fine-tuning.
STAGE_GROUPS: dict[str, set[str]] = {
    "align": {"align_head", "lora", "norms", "embeddings", "positions"},
    "lp": {"head"},
    "ft": {"head", "lora", "norms", "embeddings", "positions", "revin"},
}
