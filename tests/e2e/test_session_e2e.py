"""A whole federation as separate processes trains the digits example for three rounds.

Controller (runserver), Celery worker and beat, two combiners and four clients, on the real
services when scripts/services.sh env is set, else on the embedded defaults.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from tests.e2e.conftest import running_federation
from tests.e2e.harness import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

ROUNDS = 3
CLIENTS = {
    "client-1": "combiner-a",
    "client-2": "combiner-a",
    "client-3": "combiner-b",
    "client-4": "combiner-b",
}


@pytest.fixture(scope="module")
def trained(e2e_dir: Path) -> Iterator[tuple[Federation, str, dict[str, Any], float]]:
    with running_federation(e2e_dir, combiners=["combiner-a", "combiner-b"], clients=CLIENTS) as federation:
        session_id = "e2e-digits"
        seed_id = federation.api.get_active_model()["model"]
        started = time.monotonic()
        federation.start_session(
            session_id,
            rounds=ROUNDS,
            round_timeout=60,
            # FEDn's participation policy: a combiner takes part with at least min_clients clients.
            min_clients=2,
            requested_clients=len(CLIENTS),
        )
        session = federation.wait_session_end(session_id, timeout=ROUNDS * 60 + 60)
        seconds = time.monotonic() - started
        print(f"\n{ROUNDS} rounds in {seconds:.1f} s")
        yield federation, seed_id, session, seconds


def accuracy(federation: Federation, session_id: str, model_id: str) -> tuple[float, list[str]]:
    validations = federation.api.get_validations(session_id=session_id, model_id=model_id)["result"]
    metrics = [json.loads(v["data"]) for v in validations]
    return mean(m["test_accuracy"] for m in metrics), sorted(v["sender"]["name"] for v in validations)


def test_session_finishes_with_three_rounds_in_order(trained) -> None:
    federation, _, session, _ = trained
    assert session["status"] == "Finished", federation.diagnostics()
    assert session["rounds_completed"] == ROUNDS
    rounds = federation.session_rounds(session["session_id"])
    numbers = [int(r["round_id"]) for r in rounds]
    assert len(numbers) == ROUNDS
    assert numbers == list(range(numbers[0], numbers[0] + ROUNDS))
    assert [r["status"] for r in rounds] == ["Finished"] * ROUNDS
    for item in rounds:
        # Both combiners took part and reported; every client's update went into the round.
        assert sorted(c["name"] for c in item["combiners"]) == ["combiner-a", "combiner-b"]
        assert all(c["status"] == "Success" for c in item["combiners"])
        assert sorted(item["round_data"]["participants_clients"]) == sorted(CLIENTS)


def test_each_round_model_is_stored_and_descends_from_the_previous(trained) -> None:
    federation, seed_id, session, _ = trained
    parent = seed_id
    for item in federation.session_rounds(session["session_id"]):
        model_id = item["model_id"]
        assert model_id, item
        assert federation.backend.artifact_exists(f"models/{model_id}.npz"), model_id
        model = federation.api.get_model(model_id)
        assert model["parent_model"] == parent
        assert model["session_id"] == session["session_id"]
        parent = model_id
    trail = [m["model"] for m in federation.api.get_model_trail(parent)]
    assert trail[0] == seed_id and trail[-1] == parent and len(trail) == ROUNDS + 1


def test_every_client_validates_every_round_and_accuracy_rises(trained) -> None:
    federation, _, session, _ = trained
    accuracies = []
    for item in federation.session_rounds(session["session_id"]):
        value, senders = accuracy(federation, session["session_id"], item["model_id"])
        assert senders == sorted(CLIENTS)
        accuracies.append(value)
    assert accuracies[-1] > accuracies[0], accuracies
    assert accuracies[-1] > 0.85, accuracies


def test_controller_is_idle_and_the_events_tell_the_rounds(trained) -> None:
    federation, _, session, _ = trained
    assert federation.api.get_controller_status()["state"] == "idle"
    statuses = federation.api.get_statuses(session_id=session["session_id"], sender_name="controller")
    texts = [s["status"] for s in statuses["result"]]
    for item in federation.session_rounds(session["session_id"]):
        round_id = item["round_id"]
        assert any(t.startswith(f"Round {round_id} sent to combiner-a, combiner-b") for t in texts), texts
        assert any(t.startswith(f"Round {round_id} committed model {item['model_id']}") for t in texts)
    assert any(t.startswith(f"Session {session['session_id']} finished") for t in texts), texts
