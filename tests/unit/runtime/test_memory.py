"""The worker's allocator tuning: freed large blocks go back to the OS, not into the heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streamfold.runtime.memory import keep_large_blocks_mapped

pytestmark = pytest.mark.skipif(not keep_large_blocks_mapped(), reason="needs glibc")

# After one large block was freed (glibc then raises its mmap threshold above it), 64 blocks
# of 1 MiB are written and freed, a 64 KiB allocation kept after each so that the heap
# cannot shrink from its top. Prints the RSS that stays, in MiB.
_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    import psutil
    from streamfold.runtime.memory import keep_large_blocks_mapped
    if sys.argv[1] == "tuned":
        keep_large_blocks_mapped()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free(libc.malloc(4 << 20))
    rss = lambda: psutil.Process().memory_info().rss / 2**20
    before = rss()
    blocks, pins = [], []
    for _ in range(64):
        block = libc.malloc(1 << 20)
        ctypes.memset(block, 1, 1 << 20)
        blocks.append(block)
        pins.append(libc.malloc(64 << 10))
    for block in blocks:
        libc.free(block)
    print(rss() - before)
    """
)


def _kept_mib(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True
    )
    return float(done.stdout.strip())


def test_freed_large_blocks_are_unmapped_once_tuned() -> None:
    assert _kept_mib("default") > 32  # the behaviour the tuning is for
    assert _kept_mib("tuned") < 8
