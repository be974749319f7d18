"""glibc malloc settings for XLA's CPU runtime, and the one place that sets them.

Every execution of a compiled step allocates its temporary buffer (344 MiB for the demo's ASembleNet-small step
at batch 32, 128 px) on one of XLA's worker threads and frees it at the end. glibc serves a thread outside the
main arena from 64 MiB heaps and maps anything larger afresh with mmap whatever M_MMAP_MAX says, so each step
unmapped and re-faulted the whole buffer: 88,000 minor page faults and ~0.26 s of system time per step, 55
million faults in a `make demo` (results/performance/allocation.md). One arena with mmap and trimming off makes
glibc keep freed memory in its heap and hand the same pages to the next step.

M_ARENA_MAX only binds threads that have not allocated yet, so `apply()` runs when `asemble_jax` is imported
(asemble_jax/__init__.py), before JAX starts its thread pools. Skipped off glibc, where the user set their own
malloc tunables, and with ASEMBLE_MALLOC_DEFAULTS=0 (how the "before" counts were measured).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

OPT_OUT = "ASEMBLE_MALLOC_DEFAULTS"

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# (parameter, value): one arena for every thread, no mmap'd chunks, no returning the heap's top to the system.
SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))


def _user_tuned() -> bool:
    # glibc's own variables: MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, ...
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(name.startswith("MALLOC_")
                                                                           for name in os.environ)


def apply() -> bool:
    """Sets SETTINGS through mallopt; whether it did."""
    if os.environ.get(OPT_OUT) == "0" or platform.libc_ver()[0] != "glibc" or _user_tuned():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
