"""Keep freed memory inside the process while the network runs, then give it back.

Each tile's forward pass allocates and frees gigabytes of activations. glibc serves every
block above its mmap threshold with a fresh ``mmap``, which the kernel zero-fills page by page
on first touch, and hands it back with ``munmap`` on free. On the MRSegmentator-sized network
that was about 9 GB of freshly zeroed pages per float32 tile and a third of all CPU time
(../shared/BASELINE.md). Inside :func:`reuse_freed_memory` glibc serves blocks up to
:data:`HEAP_BLOCK_LIMIT` from its heap and keeps freed ones there, so later tiles reuse pages
that are already mapped; the lean forward pass (:class:`mrseg.inference.lean_unet.InferenceUNet`)
runs its large convolutions in slabs of about 8 MiB, so most of its traffic is in such
blocks. Whole activations (over 100 MB on that network) still get their own ``mmap`` and go
back on free: kept in the heap they fragment it, and that cost about 0.25 GB of peak memory
for a few percent of speed (README, "Speed and memory"). On exit the trim threshold
comes back and the heap is trimmed, which returns the memory to the system (``malloc_trim``
also releases free pages in the middle of the heap); the mmap threshold stays at the limit,
where glibc's own dynamic threshold ends up after the first large free.

Where the C library is not glibc (macOS, Windows, musl) this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import platform
import threading
from typing import Iterator

log = logging.getLogger(__name__)

# mallopt parameters and their glibc defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
HEAP_BLOCK_LIMIT = 32 * 2**20
"""Largest block served from the heap while reusing (glibc's ceiling for the mmap threshold)."""
_KEEP_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: never trim while inside

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # pragma: no cover - glibc reported but not loadable
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def heap_reuse_supported() -> bool:
    """Whether :func:`reuse_freed_memory` does anything here (Linux with glibc)."""
    return _glibc() is not None


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Serve large allocations from the heap and keep freed blocks until the block ends.

    Nested and concurrent uses are counted: the trim setting is restored when the last one ends.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                # The mmap threshold stays at the limit: setting it switched glibc's dynamic threshold
                # off for good, and that threshold would have grown to this ceiling after the first
                # large free anyway; back at 128 KiB, every export buffer would be fresh zeroed pages.
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
