"""Does a ZeRO-3 stage leave its model behind? (a helper tests/train/test_release_engine.py runs)

    python tests/zero3_release.py OUT.json     # a ZeRO-3 world of one process

Twice, a small model is prepared with its optimizer under ds_configs/zero3.json, takes one optimizer step and is let
go: first through llm4ts_scale.train.accelerator.release_engine, then through Accelerate's `free_memory` alone.
After each, with every reference of this script dropped and the cycle collector run, OUT.json records whether the
model is still alive (a weak reference to it) and how many DeepSpeed engines are.
"""

from __future__ import annotations

import gc
import json
import sys
import weakref
from pathlib import Path

import deepspeed
import torch

from llm4ts_scale.core.config import load_config
from llm4ts_scale.train.accelerator import build_accelerator, release_engine


def one_stage(accelerator, release) -> weakref.ref:
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, optimizer = accelerator.prepare(model, optimizer)
    loss = engine(torch.randn(8, 64)).pow(2).mean()
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    alive = weakref.ref(engine.module)
    release(engine, optimizer)
    return alive


def main(out: Path) -> None:
    config = load_config(None, [f"run_dir={out.parent / 'run'}", "data.batch_size=8", "train.mixed_precision=no"])
    accelerator, _, _ = build_accelerator(config, str(Path(__file__).parents[1] / "ds_configs" / "zero3.json"),
                                          str(out.parent / "run"))
    record = {}
    for name, release in (("release_engine", lambda *objects: release_engine(accelerator, *objects)),
                          ("free_memory", accelerator.free_memory)):  # second: what it leaves would count in the first
        alive = one_stage(accelerator, release)
        gc.collect()
        record[name] = {"model_alive": alive() is not None,
                        "engines_alive": sum(type(o) is deepspeed.DeepSpeedEngine for o in gc.get_objects())}
    out.write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
