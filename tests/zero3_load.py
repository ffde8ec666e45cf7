"""Load backbones under a real ZeRO-3 DeepSpeed config and dump what each rank holds (a helper the tests run).

    python tests/zero3_load.py OUT SETTINGS.json                     # one process (a ZeRO-3 world of one)
    accelerate launch --num_processes 2 tests/zero3_load.py OUT SETTINGS.json

SETTINGS.json maps a setting name to its config overrides. For each setting every rank loads the backbone with
llm4ts_scale.model.backbone.load_backbone while the Accelerator's stage-3 config is alive, then:
  rank 0 writes OUT/<name>.safetensors: every backbone parameter gathered to full size (a 4-bit one also its
         quantization state, as `<name>::<field>`), to be compared with a plain one-process load;
  each rank writes OUT/<name>.rank<k>.json: the bytes of backbone it holds after loading (its shards plus
         anything whole), the bytes of the whole backbone, whether any partitioned parameter was left gathered,
         and the most elements that DeepSpeed's GatheredParameters held at once during the load (transformers'
         loader and ours both gather through it: observed, not replaced).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import deepspeed
import torch
from safetensors.torch import save_file

from llm4ts_scale.core.config import load_config
from llm4ts_scale.core.weights import full_shape, gathered, is_partitioned
from llm4ts_scale.model.backbone import is_quantized, load_backbone, logical_numel
from llm4ts_scale.train.accelerator import build_accelerator


class GatherWatch:
    """Counts the elements held by live GatheredParameters contexts (nested ones add up)."""

    live = 0
    peak = 0

    @classmethod
    def install(cls) -> None:
        original = deepspeed.zero.GatheredParameters

        class Watched(original):
            def __init__(self, params, *args, **kwargs):
                super().__init__(params, *args, **kwargs)
                params = [params] if isinstance(params, torch.Tensor) else list(params or [])
                self._watched = sum(getattr(p, "ds_numel", 0) for p in params if p is not None)

            def __enter__(self):
                out = super().__enter__()
                cls.live += self._watched
                cls.peak = max(cls.peak, cls.live)
                return out

            def __exit__(self, *exc):
                cls.live -= self._watched
                return super().__exit__(*exc)

        deepspeed.zero.GatheredParameters = Watched


def held_bytes(model) -> int:
    """Backbone bytes this rank holds now: each partitioned parameter's shard (and its data if gathered), the whole
    of the others."""
    total = 0
    for p in model.parameters():
        if is_partitioned(p):
            total += p.ds_tensor.numel() * p.ds_tensor.element_size()
        total += p.data.numel() * p.element_size()
    return total


def quant_state_tensors(state, prefix: str) -> dict:
    out = {f"{prefix}::{k}": getattr(state, k) for k in ("absmax", "code") if isinstance(getattr(state, k, None), torch.Tensor)}
    if getattr(state, "state2", None) is not None:
        out.update(quant_state_tensors(state.state2, f"{prefix}::state2"))
    if getattr(state, "offset", None) is not None:
        out[f"{prefix}::offset"] = torch.as_tensor(state.offset).reshape(1)
    return out


def main(out: Path, settings: dict) -> None:
    GatherWatch.install()
    out.mkdir(parents=True, exist_ok=True)
    first = load_config(None, [f"run_dir={out / 'run'}", *next(iter(settings.values()))])
    accelerator, precision, _ = build_accelerator(first, str(Path(__file__).parents[1] / "ds_configs" / "zero3.json"),
                                                  str(out / "run"))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rank = accelerator.process_index
    for name, overrides in settings.items():
        m = load_config(None, [f"run_dir={out / 'run'}", *overrides]).model
        GatherWatch.peak = 0
        model, info = load_backbone(m.backbone, m.layers, m.quantize, m.double_quant, compute_dtype=dtype,
                                    attention="eager", init=m.backbone_init, dequantize=m.dequantize_frozen == "on")
        peak = GatherWatch.peak
        record = {"held_bytes": held_bytes(model), "embed_std": info.embed_std, "gather_peak_elements": peak,
                  "full_bytes": sum(full_shape(p).numel() * p.element_size() for p in model.parameters()),
                  "logical_elements": sum(logical_numel(p) for p in model.parameters()),  # 4-bit: values, not bytes
                  "left_gathered": any(is_partitioned(p) and p.data.numel() > 0 for p in model.parameters()),
                  "partitioned": all(is_partitioned(p) for p in model.parameters()),
                  "world_size": accelerator.num_processes, "precision": precision}
        tensors = {}
        for pname, p in model.named_parameters():
            with gathered([p]):
                if rank == 0:
                    tensors[pname] = p.detach().clone()
                    if is_quantized(p):
                        tensors.update({k: v.clone() for k, v in quant_state_tensors(p.quant_state, pname).items()})
        if rank == 0:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))
        (out / f"{name}.rank{rank}.json").write_text(json.dumps(record))
        del model
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
