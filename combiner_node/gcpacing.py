"""Garbage-collector pacing for a combiner process holding thousands of clients.

Each open task stream keeps a few dozen objects alive, so with 5,000 clients the collector tracks
some 370,000 long-lived objects, and every automatic full collection walks them all: a pause of
about 250 ms on the event loop, every 15-20 s, in which every heartbeat waits. The pacer moves the
survivors of each full collection out of the collector's sight (`gc.freeze`), so the next one walks
only what was made since; cyclic garbage among the frozen objects is reclaimed by a full
collection over everything every 15 minutes, the only long pause left.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

FULL_COLLECTION_SECONDS = 900.0


class CollectorPacing:
    def __init__(self, full_collection_seconds: float = FULL_COLLECTION_SECONDS) -> None:
        self.full_collection_seconds = full_collection_seconds
        self.freezes = 0
        self._collected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc-pacing", daemon=True)

    def start(self) -> None:
        gc.freeze()  # what start-up made (modules, settings, the server) lives as long as the process
        gc.callbacks.append(self._on_collection)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._collected.set()
        self._thread.join(timeout=5)
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        gc.unfreeze()

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: only note it; the pacing thread freezes after it.
        if phase == "stop" and info.get("generation") == 2:
            self._collected.set()

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stop.is_set():
            self._collected.wait(
                timeout=max(0.0, last_full + self.full_collection_seconds - time.monotonic())
            )
            if self._stop.is_set():
                return
            self._collected.clear()
            if time.monotonic() - last_full >= self.full_collection_seconds:
                self.collect_all()
                last_full = time.monotonic()
            gc.freeze()
            self.freezes += 1

    @staticmethod
    def collect_all() -> int:
        """A full collection over every object, the frozen ones included; what it freed."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        logger.debug("full collection freed=%d took_ms=%.1f", freed, (time.perf_counter() - started) * 1000)
        return freed
