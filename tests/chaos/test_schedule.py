"""The fault schedule: the same seed gives the same schedule, and every schedule stays in its bounds."""

from __future__ import annotations

import random

import pytest

from tests.chaos.schedule import DELAY, KINDS, Profile, build_schedule
from tests.chaos.test_chaos import CLIENTS, COMBINERS, FULL, SHORT


def schedule(seed: int, profile: Profile) -> list:
    return build_schedule(random.Random(seed), profile, combiners=COMBINERS, clients=list(CLIENTS))


def test_a_seed_replays_the_same_schedule() -> None:
    assert schedule(7, FULL) == schedule(7, FULL)
    assert schedule(7, FULL) != schedule(8, FULL)


@pytest.mark.parametrize("profile", [SHORT, FULL], ids=["short", "full"])
@pytest.mark.parametrize("seed", range(50))
def test_every_schedule_is_bounded_and_covers_its_kinds(seed: int, profile: Profile) -> None:
    faults = schedule(seed, profile)
    assert len(faults) == profile.faults
    assert {f.kind for f in faults} == set(profile.kinds)
    # Each kind once first, those required; then the extras.
    required = [f for f in faults if f.required]
    assert faults[: len(profile.kinds)] == required
    assert sorted(f.kind for f in required) == sorted(profile.kinds)
    rounds = [f.at_round for f in faults]
    # One fault per round, none in the quiet rounds at the end.
    assert len(set(rounds)) == len(rounds) and rounds == sorted(rounds)
    assert rounds[0] >= 1 and rounds[-1] <= profile.rounds - profile.quiet_rounds
    # Only one combiner is ever the victim, so the other carries the rounds.
    assert len({f.target for f in faults if f.kind == "combiner"}) <= 1
    for fault in faults:
        (low, high), _ = KINDS[fault.kind]
        assert low <= fault.downtime <= high
        assert DELAY[0] <= fault.delay <= DELAY[1]
        if fault.kind == "client-quick":
            assert fault.downtime < 2.0
        if fault.kind.startswith("client"):
            assert fault.target in CLIENTS
        elif fault.kind == "combiner":
            assert fault.target in COMBINERS
        else:
            assert fault.target == fault.kind


def test_the_full_run_has_ten_rounds_or_more_and_every_kind() -> None:
    assert FULL.rounds >= 10
    assert set(FULL.kinds) == set(KINDS)


def test_a_profile_that_cannot_hold_its_faults_is_refused() -> None:
    with pytest.raises(ValueError, match="one per round"):
        schedule(1, Profile(rounds=4, faults=4, kinds=("worker",), round_timeout=10, budget=60))
    with pytest.raises(ValueError, match="cannot cover"):
        schedule(1, Profile(rounds=10, faults=1, kinds=("worker", "beat"), round_timeout=10, budget=60))
