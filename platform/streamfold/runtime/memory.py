"""Keep the worker's heap near what it uses: glibc's allocator, tuned and trimmed.

A restore reads the whole changelog through Python and librdkafka; glibc keeps the freed
arenas for reuse, so the RSS stays at its peak (measured: 278 MB after restoring 1M entries,
112 MB after ``malloc_trim``). The worker trims once no store is restoring any more
(:func:`release_free_memory`).

The peak itself comes from glibc's dynamic mmap threshold: a freed block larger than the
threshold raises it (up to 32 MiB), so librdkafka's fetch buffers and batches (up to a few
MiB each) are carved from the heap from then on, and a heap gives memory back only from its
top. :func:`keep_large_blocks_mapped` fixes the threshold at glibc's initial 128 KiB: every
larger block is mapped on its own and unmapped when freed. Measured on a bare restore of 1M
entries (``benchmarks/rss_probe.py`` with ``MALLOC_MMAP_THRESHOLD_``, two rounds each): RSS
peak 166 and 167 MB against 204 and 196 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD_BYTES", "keep_large_blocks_mapped", "release_free_memory"]

#: glibc's initial mmap threshold, kept fixed (see the module docstring).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

_LIBC_NAME = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None


def keep_large_blocks_mapped(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (``mallopt``); False where there is
    no glibc. Called once at the process edge, before the Kafka clients start their threads."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); False where unavailable."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    return bool(trim(0))
