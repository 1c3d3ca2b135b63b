"""A round whose only combiner is SIGKILLed mid-round, with an update already folded, and restarted
within seconds: the round is retried under the same number once the combiner and its clients are
back, and the session finishes with one model per round, each built on the one before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import running_federation
from tests.e2e.harness import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

COMBINER = "combiner-r"
CLIENTS = {"client-1": COMBINER, "client-2": COMBINER}
# client-2 trains for seconds, so the combiner dies with client-1's update folded and client-2's not.
SLOW = {"FEDPLANE_EPOCHS": "2500"}
ROUNDS = 2
ROUND_TIMEOUT = 40
# The orchestration waits this long past round_timeout for a report (REPORT_MARGIN), and a retry
# waits up to round_timeout for a combiner with enough clients.
REPORT_MARGIN = 30
SLACK = 60


@pytest.fixture(scope="module")
def federation(e2e_dir: Path) -> Iterator[Federation]:
    with running_federation(
        e2e_dir, combiners=[COMBINER], clients=CLIENTS, client_envs={"client-2": SLOW}
    ) as running:
        yield running


def test_a_round_whose_combiner_is_killed_and_restarted_is_retried_and_the_session_finishes(
    federation: Federation,
) -> None:
    session_id = "retry-combiner"
    started = time.monotonic()
    federation.start_session(
        session_id,
        rounds=ROUNDS,
        round_timeout=ROUND_TIMEOUT,
        min_clients=len(CLIENTS),
        requested_clients=len(CLIENTS),
        validate=False,
    )
    interrupted = federation.wait_training(session_id)
    federation.wait_log(COMBINER, "model update accepted", timeout=60)
    federation.kill(COMBINER)
    killed = time.monotonic()
    time.sleep(2.0)
    federation.restart(COMBINER)
    print(f"\ncombiner down for {time.monotonic() - killed:.1f} s")

    session = federation.wait_session_end(
        session_id, timeout=ROUNDS * ROUND_TIMEOUT + 2 * REPORT_MARGIN + ROUND_TIMEOUT + SLACK
    )
    print(f"retried session: {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", session
    assert session["rounds_completed"] == ROUNDS

    rounds = sorted(federation.session_rounds(session_id), key=lambda r: int(r["round_id"]))
    numbers = [int(r["round_id"]) for r in rounds]
    # No number repeated or skipped: the retried round kept its own.
    assert numbers == list(range(int(interrupted["round_id"]), int(interrupted["round_id"]) + ROUNDS))
    assert [r["status"] for r in rounds] == ["Finished"] * ROUNDS
    first = rounds[0]
    assert first["retries"] == 1, first
    (ended,) = first["round_data"]["attempts"]
    print(f"attempt 0 of round {first['round_id']} ended: {ended['reason']}")
    assert ended["participants"] == [COMBINER]
    assert [c["name"] for c in first["combiners"]] == [COMBINER]
    assert rounds[1]["retries"] == 0

    # The retry is an event of the session, and so is the commit after it.
    texts = [s["status"] for s in federation.api.get_statuses(session_id=session_id, n_max=500)["result"]]
    assert any(f"Round {first['round_id']} retry 1 of 1" in text for text in texts), texts
    assert any(
        f"Round {first['round_id']} committed model" in text and "after 1 retry" in text for text in texts
    )

    # One committed model per round, each the child of the one before, the first of the seed.
    models = federation.api.get_models(session_id=session_id)["result"]
    assert sorted(m["model"] for m in models) == sorted(r["model_id"] for r in rounds)
    seed = first["round_config"]["model_id"]
    parent = seed
    for done in rounds:
        assert federation.api.get_model(done["model_id"])["parent_model"] == parent
        parent = done["model_id"]
