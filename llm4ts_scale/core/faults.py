"""Crash injection for the reliability tests: a real SIGKILL at a named point of the run.

`LLM4TS_KILL_AT=<point>@<n>` kills this process (SIGKILL, no clean-up, like an OOM kill or a lost
node) the n-th time it reaches `<point>`; on multi-process runs `LLM4TS_KILL_RANK` picks the rank.
Points: `<stage>.step` (after a training step), `eval` (inside an evaluation pass), `checkpoint`
(checkpoint files written, not yet renamed into place), `test` (during the final test pass).
Unset, it costs one dict lookup per call.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("LLM4TS_KILL_AT")
    if not spec or "@" not in spec:
        return None
    rank = os.environ.get("LLM4TS_KILL_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return None
    point, n = spec.rsplit("@", 1)
    return point, int(n)


_TARGET = _target()


def maybe_die(point: str) -> None:
    if _TARGET is None or _TARGET[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_fail_write(point: str) -> None:
    """`LLM4TS_FAIL_WRITE=<point>` makes that write fail as a full disk would (OSError ENOSPC)."""
    if os.environ.get("LLM4TS_FAIL_WRITE") == point:
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
