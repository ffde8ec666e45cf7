"""Give freed memory back to the operating system, where ZeRO-3 frees a lot of it in small pieces.

Under ZeRO-3 a rank gathers and frees module-sized tensors over and over (loading, every forward and backward).
Two things keep that memory with the process although nothing uses it: modules dropped while loading sit in
reference cycles until the cycle collector runs, and glibc keeps freed heap below its mmap threshold (32 MB) for
reuse instead of returning it. Measured on 6 TinyLlama-width blocks loaded partitioned with NF4: 2.84 GB resident
after loading, 2.03 after a collection, 1.37 after malloc_trim, where the shards are 1.01 GB. `release()` does both;
it is a collection and a no-op on C libraries without malloc_trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Collect reference cycles, then return free heap pages to the OS (glibc's malloc_trim)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
