"""The recipe's stages, in one table: adding a stage is adding a row.

A stage says what it optimizes (`task`: next-patch alignment or forecasting), which parameter groups
train (see llm4ts_scale/model/groups.py), whether it keeps the alignment head in the weights it hands
on, its title in reports, and the default epochs and learning rate of its `stages.<name>` config.
The order of the table is the order a run executes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str
    task: str  # "align" (next-patch MSE on windows of L + stride) or "forecast" (H-step MSE)
    groups: frozenset[str]
    keeps_align_head: bool
    title: str
    default_epochs: int
    default_lr: float
    default_solver: str = "sgd"

    @property
    def probes(self) -> bool:
        return probes(self.task, self.groups)


def probes(task: str, groups) -> bool:
    """Linear probing: a forecasting stage in which only the head trains, so the frozen part's features are the same
    every epoch (computed once: the LP cache) and the head can be solved in closed form (solver: exact)."""
    return task == "forecast" and set(groups) <= {"head"}


STAGES: tuple[StageSpec, ...] = (
    StageSpec("align", "align", frozenset({"align_head", "lora", "norms", "embeddings", "positions", "backbone"}),
              keeps_align_head=True, title="align (next-patch MSE)", default_epochs=3, default_lr=1.0e-3),
    StageSpec("lp", "forecast", frozenset({"head"}),
              keeps_align_head=False, title="lp (forecast MSE)", default_epochs=10, default_lr=1.0e-4,
              default_solver="exact"),
    StageSpec("ft", "forecast", frozenset({"head", "lora", "norms", "embeddings", "positions", "revin", "backbone"}),
              keeps_align_head=False, title="ft (forecast MSE)", default_epochs=0, default_lr=1.0e-5),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# Every group a stage may train (llm4ts_scale/model/groups.py adds `frozen`, which never trains).
# What each stage trains by default (a run's stages.<name>.groups may say otherwise: core/config.py:stage_groups).
STAGE_GROUPS: dict[str, set[str]] = {s.name: set(s.groups) for s in STAGES}

# `backbone`: the blocks' own weights, which train only when the backbone starts from scratch
# (model.backbone_init: scratch); for a pretrained or random frozen backbone the group is empty.
TRAINABLE_GROUPS = ("head", "align_head", "embeddings", "lora", "norms", "positions", "revin", "backbone")
_BY_NAME = {s.name: s for s in STAGES}


def stage_spec(name: str) -> StageSpec:
    return _BY_NAME[name]
