"""Where one process runs, passed as one value instead of five loose arguments."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Topology:
    """This process: its rank among `world_size`, its device and compute precision ("bf16" or "no"), the
    DataLoader workers it reads with, and whether it draws progress bars (the main process does)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    precision: str = "no"
    num_workers: int = 0
    progress: bool = False

    @classmethod
    def of(cls, accelerator, precision: str, num_workers: int = 0) -> Topology:
        """The topology of an Accelerate run (progress bars on its main process)."""
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, precision, num_workers,
                   accelerator.is_main_process)
