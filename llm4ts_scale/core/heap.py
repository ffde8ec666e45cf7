"""Give freed memory back to the operating system, where ZeRO-3 frees a lot of it in small pieces.

Under ZeRO-3 a rank gathers and frees module-sized tensors over and over (loading, every forward and backward).
Two things keep that memory with the process although nothing uses it: modules dropped while loading sit in
reference cycles until the cycle collector runs, and glibc keeps freed heap below its mmap threshold for reuse
instead of returning it. Measured on 6 TinyLlama-width blocks loaded partitioned with NF4: 2.84 GB resident after
loading, 2.03 after a collection, 1.37 after malloc_trim, where the shards are 1.01 GB. `release()` does both; it is
a collection and a no-op on C libraries without malloc_trim.

Within a step no trim runs, and glibc's threshold moves: each freed memory-mapped block raises it (up to 32 MB), so
gathered weights and activations of a few MB to 32 MB soon come from the heap, where what a step frees piles up.
`map_large_allocations()` fixes the threshold at 1 MiB: such blocks get their own maps, returned to the OS when
freed. Measured on a 7B-shaped backbone (8 blocks, bf16, ZeRO-3, 2 ranks, 2-core CPU): training peak per rank 3345
-> 2538 MiB, loading peak 3178 -> 2659, resting memory and seconds per step unchanged (10.1 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


@functools.cache
def _libc_function(name: str):
    """The C library's `name` (malloc_trim, mallopt), or None where it has none."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Serve allocations of `threshold` bytes and more from their own memory maps from now on (glibc's mallopt; it
    also stops the threshold from moving). False where the C library has no mallopt."""
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))


def release() -> None:
    """Collect reference cycles, then return free heap pages to the OS (glibc's malloc_trim)."""
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
