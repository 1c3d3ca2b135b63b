"""A bounded, seeded schedule of faults, and the thread that injects it into a running federation.

A fault is SIGKILL of one process group, a pause (its downtime), a restart with the same argv and
environment, and a wait (with a deadline) until the restarted process says it is up again. Faults
are tied to rounds, not to wall-clock time: fault i fires `delay` seconds after the injector sees
round `at_round` (or a later one, when it is behind) in training, so a fault lands mid-round however
fast the rounds run. Faults run one after another, never two at once, and every target is a
loopback process of the federation.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.e2e.harness import Federation

# Each kind: (downtime range in seconds, text in the restarted process's log that means it is up).
# "client-quick" is the restart inside the combiner's online window (back within 2 s).
KINDS: dict[str, tuple[tuple[float, float], str]] = {
    "worker": ((0.5, 2.5), "ready."),
    "beat": ((1.0, 4.0), "beat: Starting"),
    "combiner": ((1.0, 4.0), "registered with controller"),
    "client": ((3.0, 6.0), "event=task_stream_open"),
    "client-quick": ((0.2, 1.5), "event=task_stream_open"),
    "controller": ((0.5, 3.0), ""),
}
# How long a restarted process may take to be up again before the run counts as failed.
READY_TIMEOUT = 90.0
# Seconds after a round is seen in training: a round of the digits example trains for about one.
DELAY = (0.1, 1.5)


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    at_round: int
    delay: float
    downtime: float
    # The first fault of its kind: the run fails unless it was injected.
    required: bool = False

    def __str__(self) -> str:
        return (
            f"{self.kind:<12} {self.target:<11} round {self.at_round:>2} +{self.delay:.1f} s, "
            f"down {self.downtime:.1f} s"
        )


@dataclass(frozen=True)
class Profile:
    """How much chaos: rounds of the session, faults, which kinds, and the time budget."""

    rounds: int
    faults: int
    kinds: tuple[str, ...]
    round_timeout: int
    # Faults fire only until this many seconds after the session started.
    budget: float
    # No fault is scheduled in the last rounds (one running late may still land there), so the
    # schedule has room: a fault and its restart take several of the digits example's short rounds.
    quiet_rounds: int = 2


def build_schedule(
    rng: random.Random, profile: Profile, *, combiners: Sequence[str], clients: Sequence[str]
) -> list[Fault]:
    """Each kind of the profile once (required), then the rest drawn at random; one per round.

    The required faults come first, so a session that ends before the schedule does (the
    injector runs late when restarts take longer than rounds) can only cut the extra ones.
    """
    if profile.faults < len(profile.kinds):
        raise ValueError(f"{profile.faults} faults cannot cover the kinds {profile.kinds}")
    last_round = profile.rounds - profile.quiet_rounds
    if profile.faults > last_round:
        raise ValueError(f"{profile.faults} faults do not fit one per round in rounds 1..{last_round}")
    kinds = rng.sample(profile.kinds, len(profile.kinds))
    kinds += [rng.choice(profile.kinds) for _ in range(profile.faults - len(profile.kinds))]
    rounds = sorted(rng.sample(range(1, last_round + 1), profile.faults))
    # One combiner is the one that dies: the other keeps the session going.
    victim_combiner = rng.choice(list(combiners))
    schedule = []
    for index, (kind, at_round) in enumerate(zip(kinds, rounds, strict=True)):
        (low, high), _ = KINDS[kind]
        if kind in ("client", "client-quick"):
            target = rng.choice(list(clients))
        elif kind == "combiner":
            target = victim_combiner
        else:
            target = kind
        schedule.append(
            Fault(
                kind=kind,
                target=target,
                at_round=at_round,
                delay=round(rng.uniform(*DELAY), 2),
                downtime=round(rng.uniform(low, high), 2),
                required=index < len(profile.kinds),
            )
        )
    return schedule


@dataclass
class Injection:
    fault: Fault
    started: float
    back_after: float


@dataclass
class Injector:
    """Runs a schedule against `federation` in a thread.

    `round_in_training()` is the session's round (1 for its first) that is training now, or None.
    """

    federation: Federation
    schedule: list[Fault]
    round_in_training: Callable[[], int | None]
    budget: float
    log: Callable[[str], None] = print
    done: list[Injection] = field(default_factory=list)
    skipped: list[Fault] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos-injector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = READY_TIMEOUT + 30) -> None:
        """Inject no further faults; wait for the one in progress to be restarted and up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"the chaos injector did not finish within {timeout:.0f} s")

    def counts(self) -> Counter[str]:
        return Counter(injection.fault.kind for injection in self.done)

    def _run(self) -> None:
        try:
            for index, fault in enumerate(self.schedule):
                if not self._wait_for_round(fault):
                    self.skipped.extend(self.schedule[index:])
                    return
                self._inject(fault)
        except BaseException as exc:  # handed to the test thread, which fails with it
            self.error = exc

    def _wait_for_round(self, fault: Fault) -> bool:
        while not self._stop.is_set():
            if time.monotonic() - self._started > self.budget:
                return False
            try:
                training = self.round_in_training()
                if training is not None and training >= fault.at_round:
                    return not self._stop.wait(fault.delay)
            except Exception:  # the database is shared and up; a failed poll is tried again
                pass
            self._stop.wait(0.2)
        return False

    def _inject(self, fault: Fault) -> None:
        started = time.monotonic()
        self.log(f"chaos: {fault}")
        self.federation.kill(fault.target)
        time.sleep(fault.downtime)
        self.federation.restart(fault.target)
        self._wait_ready(fault)
        back = time.monotonic() - started
        self.done.append(Injection(fault, started - self._started, back))
        self.log(f"chaos: {fault.target} back after {back:.1f} s")

    def _wait_ready(self, fault: Fault) -> None:
        _, ready_text = KINDS[fault.kind]
        federation = self.federation
        if fault.kind == "controller":
            federation.wait_for(
                "the restarted controller",
                lambda: federation.api.get_controller_status()["state"],
                READY_TIMEOUT,
                watch=("controller",),
            )
            return
        process = federation.processes[fault.target]
        federation.wait_for(
            f"{ready_text!r} in the log of the restarted {fault.target}",
            lambda: ready_text in process.tail(10**6),
            READY_TIMEOUT,
            interval=0.1,
            watch=(fault.target,),
        )
