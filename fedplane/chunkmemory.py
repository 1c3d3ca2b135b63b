"""Malloc settings for processes that stream models in 1 MiB chunks (the combiner, the edge client).

Each chunk on its way through gRPC and protobuf is allocated and freed several times over, a few
MiB at once. glibc hands freed memory above its trim threshold (by default twice the largest
block it has seen, about 2 MiB here) back to the kernel at once, so every chunk faults its pages
in again: measured on a combiner's Download, that page-fault work cost four times the CPU of the
transfer itself. Keeping a few chunks' worth of freed memory for reuse removes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, not from a fresh mapping each time.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
# Free memory the heap keeps before trimming: several chunks' worth of transient buffers.
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024


def keep_freed_chunk_memory() -> bool:
    """Apply the settings (glibc only; elsewhere nothing happens); True when they took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not applied:
        logger.debug("mallopt refused the chunk memory settings")
    return applied
