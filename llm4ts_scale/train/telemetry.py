"""Per-rank training telemetry of one stage: loop time, samples, peak RSS, optimizer-state bytes.

Every rank writes `<stage_dir>/rank<k>.json` at the end of the stage, so a benchmark (benchmarks/bench_train.py)
reads what a real run measured instead of instrumenting it from outside. Timing covers the training
loop only (batches fetched, forward, backward, optimizer step), never validation or model loading.
A resumed stage reports only the part this process ran.

Memory is counted two ways: peak RSS (ru_maxrss, which includes the checkpoint pages a load maps and reads) and
anonymous memory (RssAnon, what the process itself allocated: the figure ZeRO-3 divides), sampled from process
start, so `peak_anon_load_bytes` covers loading and `peak_anon_bytes` the whole stage.

Optimizer bytes are what this rank holds, read after its first optimizer step (Adam's state is lazy):
  * `optimizer_state_bytes`: the tensors in the innermost torch optimizer's `state` (Adam moments and
    step counters). Under DeepSpeed ZeRO-1/2/3 that inner optimizer steps only this rank's partition,
    so with N ranks each holds about 1/N of what a single process holds.
  * `optimizer_master_bytes`: the fp32 tensors that optimizer updates. Plain torch: the trainable
    parameters themselves (no extra copy). ZeRO: this rank's flat fp32 partition, a copy besides the
    model's own parameters.
"""

from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

import psutil
import torch

from llm4ts_scale.core.io import atomic_write_json
from llm4ts_scale.train.hooks import StageHook

MAX_STEPS_KEPT = 1000


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def anon_bytes() -> int | None:
    """This process's anonymous resident memory (RssAnon: heap and tensors; memory-mapped checkpoint pages, which
    the kernel can drop, are RssFile and not counted); None where /proc is absent."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class AnonPeak:
    """The peak of `anon_bytes` since `start()`, sampled every `interval` seconds by a daemon thread (the kernel keeps
    a peak of the whole RSS only), and the peak of a window opened by `new_window()` (training, after loading).
    Started once per process before the model loads, so loading is counted; `floor` is what the process held just
    before its first model was built."""

    interval = 0.01
    _thread: threading.Thread | None = None
    peak = window = 0
    floor: int | None = None

    @classmethod
    def start(cls) -> None:
        if cls._thread is not None or anon_bytes() is None:
            return
        cls._thread = threading.Thread(target=cls._sample, name="anon-peak", daemon=True)
        cls._thread.start()

    @classmethod
    def _sample(cls) -> None:
        while True:
            cls._fold()
            time.sleep(cls.interval)

    @classmethod
    def _fold(cls) -> int:
        now = anon_bytes() or 0
        cls.peak, cls.window = max(cls.peak, now), max(cls.window, now)
        return now

    @classmethod
    def read(cls) -> int | None:
        """The peak so far (None when not sampling), with the current value folded in."""
        if cls._thread is None:
            return None
        cls._fold()
        return cls.peak

    @classmethod
    def new_window(cls) -> None:
        cls.window = cls._fold()

    @classmethod
    def read_window(cls) -> int | None:
        if cls._thread is None:
            return None
        cls._fold()
        return cls.window

    @classmethod
    def mark_floor(cls) -> None:
        if cls.floor is None:
            cls.floor = anon_bytes()


def _optimizer_chain(optimizer):
    """Accelerate's wrapper -> (DeepSpeed ZeRO optimizer ->) the torch optimizer that does the update."""
    chain = [optimizer]
    while getattr(chain[-1], "optimizer", None) is not None and not any(chain[-1].optimizer is o for o in chain):
        chain.append(chain[-1].optimizer)
    return chain


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def optimizer_bytes(optimizer) -> dict:
    chain = _optimizer_chain(optimizer)
    inner = chain[-1]
    state = _tensor_bytes(v for per_param in inner.state.values() for v in per_param.values())
    master = None
    for holder in chain:  # ZeRO keeps the partition outside param_groups between steps (stage 3 empties them)
        flat = (getattr(holder, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
                or getattr(holder, "fp32_partitioned_groups_flat", None))  # ZeRO-3
        if flat:
            master = _tensor_bytes(flat)
            break
    if master is None:
        master = _tensor_bytes(p for group in inner.param_groups for p in group["params"])
    return {"optimizer_state_bytes": state, "optimizer_master_bytes": master,
            "optimizer_chain": "/".join(type(o).__name__ for o in chain[1:] or chain)}


class StageTelemetry(StageHook):
    """A hook timing the training loop (each step: batch fetch + forward + backward + optimizer step);
    `write` once at the end of the stage."""

    def __init__(self, trainable_params: int):
        self.record = {"trainable_params": trainable_params, "train_samples": 0, "train_seconds": 0.0, "train_steps": 0,
                       "step_seconds": [], "step_samples": [], "optimizer_state_bytes": None,
                       "peak_rss_train_bytes": None, "torch_threads": torch.get_num_threads(),
                       "eval_samples": 0, "eval_seconds": 0.0}
        self._last = None

    def on_epoch_begin(self, recipe) -> None:
        self._last = time.perf_counter()
        if "peak_anon_load_bytes" not in self.record:  # loading and engine set-up, before the first step
            self.record["peak_anon_load_bytes"] = AnonPeak.read()
            AnonPeak.new_window()

    def on_batch(self, recipe, batch, loss) -> None:
        rec, now = self.record, time.perf_counter()
        seconds, samples = now - self._last, len(batch["x"])
        self._last = now
        rec["train_steps"] += 1
        rec["train_samples"] += samples
        rec["train_seconds"] += seconds
        if len(rec["step_seconds"]) < MAX_STEPS_KEPT:  # per step, so warm-up can be told apart
            rec["step_seconds"].append(round(seconds, 6))
            rec["step_samples"].append(samples)
        if rec["optimizer_state_bytes"] is None:
            found = optimizer_bytes(recipe.optimizer)
            if found["optimizer_state_bytes"]:  # with grad_accum > 1 the first step comes later
                rec.update(found)

    def on_epoch_end(self, recipe) -> dict:
        if self.record["peak_rss_train_bytes"] is None:  # before the first validation runs
            self.record["peak_rss_train_bytes"] = peak_rss_bytes()
            # what training holds now, without the transient peak of loading (a checkpoint's pages read once)
            self.record["rss_train_bytes"] = psutil.Process().memory_info().rss
            self.record["anon_train_bytes"] = anon_bytes()
            self.record["peak_anon_train_bytes"] = AnonPeak.read_window()  # training steps only
        return {}

    def count_eval(self, samples: int, seconds: float) -> None:
        """One validation pass: (window, channel) pairs scored over all ranks, and its wall time on this rank."""
        self.record["eval_samples"] += int(samples)
        self.record["eval_seconds"] += seconds

    def write(self, path: Path) -> None:
        atomic_write_json(path, {**self.record, "peak_rss_bytes": peak_rss_bytes(), "peak_anon_bytes": AnonPeak.read(),
                                 "anon_floor_bytes": AnonPeak.floor})
