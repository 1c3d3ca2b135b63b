"""Capped exponential backoff with jitter, for every reconnect loop of the client."""

from __future__ import annotations

import random


class Backoff:
    """Delays of initial, 2x, 4x, ... up to `maximum`, each with up to 10% jitter."""

    def __init__(
        self, initial: float = 1.0, maximum: float = 30.0, *, factor: float = 2.0, jitter: float = 0.1
    ):
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._next = initial
        self.attempts = 0

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        self.attempts += 1
        # Jitter spreads out many clients reconnecting to the same restarted combiner.
        return min(delay * (1 + random.uniform(-self.jitter, self.jitter)), self.maximum)

    def reset(self) -> None:
        self._next = self.initial
        self.attempts = 0
