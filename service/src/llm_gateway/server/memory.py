"""Giving memory back after large requests.

A large request body passes through buffers the C allocator keeps once freed, so without help a
worker that received twenty 15 MB bodies held 20 to 40 MB more for good. Two things undo that.
glibc serves an allocation over its mmap threshold with a mapping of its own, returned when freed,
but it raises that threshold to the size of the largest such block freed (up to 32 MiB), after
which large bodies come from the heap: the threshold is fixed at 1 MiB instead. And the transport
reads a body in small pieces that are freed into the heap: after a large call the allocator is
asked to return its free pages (`malloc_trim`, in a worker thread: ctypes releases the GIL, and
trimming a large heap takes milliseconds).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from typing import Any

LARGE_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
# After the call's own buffers are freed by the transport, which happens once its status is sent.
_TRIM_DELAY = 0.05


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()
# glibc only: musl and macOS keep no such heap growth to undo.
_MALLOPT = getattr(_LIBC, "mallopt", None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


def return_large_buffers() -> None:
    """Fixes glibc's mmap threshold for this process, so large buffers are returned when freed."""
    if _MALLOPT is not None:
        _MALLOPT(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(LARGE_BYTES))


def after_large_call() -> None:
    """Schedules giving the free heap back once a large call's buffers are freed."""
    if _MALLOC_TRIM is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(_TRIM_DELAY, loop.run_in_executor, None, _MALLOC_TRIM, ctypes.c_size_t(0))
