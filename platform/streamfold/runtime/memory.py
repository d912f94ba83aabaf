"""Give memory the process no longer uses back to the operating system.

A restore reads the whole changelog through Python and librdkafka; glibc keeps the freed
arenas for reuse, so the RSS stays at its peak (measured: 278 MB after restoring 1M entries,
112 MB after ``malloc_trim``). The worker trims once no store is restoring any more.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["release_free_memory"]

_LIBC_NAME = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None


def release_free_memory() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); False where unavailable."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    return bool(trim(0))
