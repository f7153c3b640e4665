"""Keep freed memory in the process on glibc, so CPU training stops paying for page faults.

PyTorch's CPU tensors come from malloc. glibc serves every block above 32 MiB with a fresh
mmap and returns it to the kernel on free, so each training step of a large batch maps its
activations anew, and the kernel zeroes every page on first touch. On the 2-core machines
this project measures on, that was 30% of the CPU time of the `fast` net at batch 2,000
(517 images/s, 12.6 s of 42.5 s in the kernel; 892 images/s once memory is kept, the same
as tcmalloc's 894) and 17% of the step time at batch 1,024 (756 -> 908 images/s), in
benchmarks/cpu_allocator.py. Telling glibc never to use mmap for a block and never
to trim the heap makes freed blocks reusable by the next step. The price is fragmentation:
peak memory rose 13% for the `fast` run (2,950 -> 3,321 MiB) and 20-40% in the small test
net of tests/test_train.py, and it does not grow with the number of steps.

It is process-wide and only for CPU runs (`train.retain_memory`); other C libraries (musl,
macOS) are left alone. tcmalloc through LD_PRELOAD does as well, but needs a system package
and a relaunch; this needs neither (benchmarks/cpu_allocator.py compares them).
"""

from __future__ import annotations

import ctypes
import platform
import sys

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; True when it is in effect (idempotent)."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
            except OSError:
                return False
            # mallopt returns 1 on success
            _applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
    return _applied
