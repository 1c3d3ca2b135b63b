"""What the fuzz run did, per pass and operation; conftest.py prints it at the end."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass

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
