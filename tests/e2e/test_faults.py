"""Faults in a running federation: every session ends Finished or Failed with a reason, never stuck.

A combiner lost mid-round is left out when the others made enough updates; a round with too few is
retried (tests/e2e/test_round_retry_e2e.py), and the session fails only when the retry cannot run.

One federation serves the module: combiner-a with two fast clients, combiner-b with two slow ones
(long local training keeps combiner-b's rounds open for seconds, so a fault lands mid-round).
The tests run in file order and each leaves the federation usable for the next.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import running_federation
from tests.e2e.harness import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CLIENTS = {
    "client-1": "combiner-a",
    "client-2": "combiner-a",
    "client-3": "combiner-b",
    "client-4": "combiner-b",
}
# About five seconds of local training instead of a fraction of one.
SLOW = {"FEDPLANE_EPOCHS": "2500"}
# The orchestration waits this long past round_timeout for a combiner's report (REPORT_MARGIN).
REPORT_MARGIN = 30
SLACK = 30


@pytest.fixture(scope="module")
def federation(e2e_dir: Path) -> Iterator[Federation]:
    with running_federation(
        e2e_dir,
        combiners=["combiner-a", "combiner-b"],
        clients=CLIENTS,
        client_envs={"client-3": SLOW, "client-4": SLOW},
    ) as running:
        yield running


def run_session(federation: Federation, session_id: str, **config: Any) -> None:
    federation.start_session(session_id, min_clients=1, requested_clients=len(CLIENTS), **config)


def contiguous(rounds: list[dict[str, Any]]) -> list[int]:
    numbers = [int(r["round_id"]) for r in rounds]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    return numbers


def test_client_killed_mid_training_round_completes_with_the_others(federation: Federation) -> None:
    session_id = "fault-client"
    started = time.monotonic()
    # The round closes on its timeout (client-4's update never comes): client-3's must arrive
    # before it, also when parallel test workers load the machine.
    round_timeout = 30
    run_session(federation, session_id, rounds=1, round_timeout=round_timeout)
    federation.wait_training(session_id)
    federation.wait_log("client-4", "entry_point_start entry_point=train", timeout=30)
    federation.kill("client-4")

    session = federation.wait_session_end(session_id, timeout=round_timeout + REPORT_MARGIN + SLACK)
    print(f"\nclient fault: {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", session
    (only,) = federation.session_rounds(session_id)
    assert only["status"] == "Finished"
    assert sorted(only["round_data"]["participants_clients"]) == ["client-1", "client-2", "client-3"]
    reports = {c["name"]: c for c in only["combiners"]}
    assert set(reports) == {"combiner-a", "combiner-b"}
    # combiner-b expected both of its clients and closed on round_timeout with the one update it had.
    assert reports["combiner-b"]["status"] == "Success"
    assert reports["combiner-b"]["participants"] == ["client-3"]
    assert reports["combiner-b"]["data"]["nr_aggregated_models"] == 1
    # The next tests start from three clients the combiners see as online.
    federation.wait_clients_online(3, timeout=60, exactly=True)


def test_worker_killed_mid_round_session_resumes_without_repeating_a_round(federation: Federation) -> None:
    session_id = "fault-worker"
    rounds = 2
    started = time.monotonic()
    run_session(federation, session_id, rounds=rounds, round_timeout=30)
    interrupted = federation.wait_training(session_id)
    federation.kill("worker")

    def reported_combiners() -> set[str]:
        (current,) = [
            r for r in federation.session_rounds(session_id) if r["round_id"] == interrupted["round_id"]
        ]
        return {report["name"] for report in current["combiners"]}

    # Down until both combiners have reported the round: the step that reduces it is then queued
    # with no worker to take it, and the restarted worker has to pick it up.
    federation.wait_for(
        "both combiners to report the interrupted round",
        lambda: reported_combiners() == {"combiner-a", "combiner-b"},
        timeout=30 + REPORT_MARGIN,
        watch=("controller",),
    )
    federation.restart("worker")

    session = federation.wait_session_end(session_id, timeout=rounds * 30 + 2 * REPORT_MARGIN + SLACK)
    print(f"\nworker fault: {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", session
    assert session["rounds_completed"] == rounds
    done = federation.session_rounds(session_id)
    assert len(done) == rounds
    numbers = contiguous(done)
    assert int(interrupted["round_id"]) == numbers[0]
    assert [r["status"] for r in done] == ["Finished"] * rounds
    # The round that was running when the worker died was committed once, and the next built on it.
    assert federation.api.get_model(done[1]["model_id"])["parent_model"] == done[0]["model_id"]
    assert len(federation.api.get_models(session_id=session_id)["result"]) == rounds


def test_combiner_killed_mid_round_round_proceeds_with_the_other(federation: Federation) -> None:
    session_id = "fault-combiner"
    round_timeout = 15
    started = time.monotonic()
    run_session(federation, session_id, rounds=1, round_timeout=round_timeout)
    running = federation.wait_training(session_id)
    assert sorted(running["round_data"]["participants"]) == ["combiner-a", "combiner-b"]
    federation.kill("combiner-b")

    session = federation.wait_session_end(session_id, timeout=round_timeout + REPORT_MARGIN + SLACK)
    elapsed = time.monotonic() - started
    print(f"\ncombiner fault: {elapsed:.1f} s")
    # The orchestration's promise: a combiner it cannot reach has lost its part of the round; the
    # others made enough updates, so it reduces their reports and names the combiner that did not.
    assert session["status"] == "Finished", session
    (only,) = federation.session_rounds(session_id)
    assert only["status"] == "Finished"
    assert [c["name"] for c in only["combiners"]] == ["combiner-a"]
    assert "combiner-b" in only["status_reason"], only["status_reason"]
    assert sorted(only["round_data"]["participants_clients"]) == ["client-1", "client-2"]
    assert elapsed < round_timeout + REPORT_MARGIN + SLACK


def test_combiners_silent_through_the_round_and_its_retry_fail_the_session(federation: Federation) -> None:
    session_id = "fault-silent"
    round_timeout = 10
    alive = [name for name in federation.combiner_names() if federation.processes[name].alive()]
    assert alive
    # The fast clients' round is over in a few tenths of a second, often before the combiners
    # could be stopped once the round was seen in training: the clients are held until then.
    clients = [name for name in CLIENTS if federation.processes[name].alive()]
    started = time.monotonic()
    try:
        for name in clients:
            federation.signal(name, signal.SIGSTOP)
        run_session(federation, session_id, rounds=1, round_timeout=round_timeout)
        running = federation.wait_training(session_id)
        for name in alive:
            federation.signal(name, signal.SIGSTOP)
        for name in clients:
            federation.signal(name, signal.SIGCONT)
        # The round is retried once (round_retries defaults to 1), then waits round_timeout for a
        # combiner that answers; none does.
        session = federation.wait_session_end(session_id, timeout=2 * round_timeout + REPORT_MARGIN + SLACK)
    finally:
        for name in alive + clients:
            federation.signal(name, signal.SIGCONT)
    elapsed = time.monotonic() - started
    print(f"\nsilent combiners: {elapsed:.1f} s")
    assert session["status"] == "Failed", session
    reason = session["status_reason"]
    assert f"Round {running['round_id']} failed: Retry 1 of 1: No combiner produced a model." in reason
    assert "Retry not started: No combiner had 1 online client(s)" in reason, reason
    # A stopped combiner does not answer its health check: it is lost mid-round (or silent at the deadline).
    for name in running["round_data"]["participants"]:
        assert f"{name}: lost mid-round" in reason or f"{name}: no report before the deadline" in reason, (
            reason
        )
    (only,) = federation.session_rounds(session_id)
    assert only["status"] == "Failed" and only["status_reason"]
    assert only["retries"] == 1
    assert elapsed < 2 * round_timeout + REPORT_MARGIN + SLACK
    assert federation.api.get_controller_status()["state"] == "idle"
