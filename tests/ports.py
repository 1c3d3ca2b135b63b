"""Ports for the servers that tests start on a port chosen beforehand, and ports nothing listens on.

A port probed with bind(("127.0.0.1", 0)) comes from the kernel's ephemeral range: until the server
binds it, any other process's port-0 listener may take it, and with pytest-xdist that is another
worker's combiner, gunicorn or gRPC server. These ports come from below (or above) that range, which
the kernel never hands out by itself, each worker from a block of its own, tried in turn from a
random start, and each is checked free when given. A port given out is also held by an flock until
the test process exits, so test runs of other checkouts on the machine (whose workers use the same
blocks) skip it too.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

BLOCK = 500  # ports per pytest-xdist worker
WORKERS = 16  # blocks; worker gwN takes block N modulo this
LOWEST = 10000  # never below: well-known and registered services live there


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _region_start() -> int | None:
    """The first port of the blocks, outside the ephemeral range; None when there is no room."""
    low, high = _ephemeral_range()
    if low - BLOCK * WORKERS >= LOWEST:
        return low - BLOCK * WORKERS
    if 65535 - high >= BLOCK * WORKERS:
        return high + 1
    return None


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw3" in a worker, unset in a serial run
    return int(worker[2:]) % WORKERS if worker[2:].isdigit() else 0


def _candidates() -> Iterator[int]:
    start = _region_start()
    if start is None:
        return iter(())
    first = start + BLOCK * _worker_index()
    offset = random.randrange(BLOCK)
    return itertools.cycle([first + (offset + step) % BLOCK for step in range(BLOCK)])


_CANDIDATES = _candidates()
# The locks of the ports this process gave out, held (open) until it exits.
_HELD: list[IO[str]] = []


def _free(port: int) -> bool:
    # Without SO_REUSEADDR: a port with a listener or with connections still in TIME_WAIT is skipped.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    handle = open(Path(tempfile.gettempdir()) / f"fedplane-test-port-{port}.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # given to another test process
        handle.close()
        return False
    if not _free(port):
        handle.close()
        return False
    _HELD.append(handle)
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing uses now and no other test process will be given."""
    for port in itertools.islice(_CANDIDATES, BLOCK):
        if _claim(port):
            return port
    # No room outside the ephemeral range on this machine, or the whole block is busy.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
