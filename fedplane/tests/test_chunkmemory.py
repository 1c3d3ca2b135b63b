"""Freed chunk buffers are kept for reuse instead of being faulted in again for every chunk."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Three 1 MiB buffers per chunk, freed together, like a chunk through protobuf and gRPC.
CHUNKS = """
import resource, sys
from fedplane.chunkmemory import keep_freed_chunk_memory
if sys.argv[1] == "kept":
    assert keep_freed_chunk_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(200):
    buffers = [bytes([i % 256]) * (1 << 20) for _ in range(3)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHUNKS, mode], cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_chunk_buffers_stop_faulting_pages_in_once_freed_memory_is_kept():
    default, kept = page_faults("default"), page_faults("kept")
    # 200 chunks of 3 MiB are 150,000 pages: the default heap faults most of them in again.
    assert default > 50_000
    assert kept < default / 20
