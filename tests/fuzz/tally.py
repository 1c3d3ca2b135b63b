"""What the fuzz run did, per pass and operation; the root conftest.py prints it at the end.

With pytest-xdist each worker counts its own; tests/fuzz/conftest.py sends them to the controller.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest

# Examples per operation and pass: a small budget by default (make test); make test-fuzz sets 200.
EXAMPLES = int(os.environ.get("FEDPLANE_FUZZ_EXAMPLES", "3"))


@dataclass
class Tally:
    examples: int = 0
    failed: bool = False
    seconds: float = 0.0


# (pass, operation) -> what the run did.
TALLIES: dict[tuple[str, str], Tally] = defaultdict(Tally)


class Timer:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.started = time.monotonic()

    def __enter__(self) -> Tally:
        return self.tally

    def __exit__(self, *exc: object) -> None:
        self.tally.seconds += time.monotonic() - self.started


# The key of pytest-xdist's workeroutput under which a worker sends its tallies.
WORKER_OUTPUT_KEY = "fuzz_tallies"


def exported() -> list[tuple[str, str, int, bool, float]]:
    """TALLIES as plain values, which pytest-xdist carries from a worker to the controller."""
    return [(run, operation, t.examples, t.failed, t.seconds) for (run, operation), t in TALLIES.items()]


def merge(rows: list[Any]) -> None:
    """Add a worker's exported() to TALLIES."""
    for run, operation, examples, failed, seconds in rows:
        tally = TALLIES[(run, operation)]
        tally.examples += examples
        tally.failed = tally.failed or failed
        tally.seconds += seconds


def write_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz section at the end of the run (nothing when no fuzz test ran)."""
    if not TALLIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz")
    for name in sorted({name for name, _ in TALLIES}):
        tallies = {operation: tally for (run, operation), tally in TALLIES.items() if run == name}
        failed = sorted(operation for operation, tally in tallies.items() if tally.failed)
        seconds = sum(tally.seconds for tally in tallies.values())
        write(
            f"{name}: {len(tallies)} operations, {sum(t.examples for t in tallies.values())} examples "
            f"(budget {EXAMPLES} per operation), {len(failed)} failed operations, {seconds:.0f} s"
        )
        for operation in failed:
            write(f"  FAILED {operation}")
