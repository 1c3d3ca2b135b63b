"""An asynchronous buffered session (FedBuff) as separate processes: controller, worker, one
combiner and three clients train the digits example; one client is killed mid-session and started
again, and the session still makes every version, each committed as a round and a model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import running_federation
from tests.e2e.harness import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

VERSIONS = 14
CLIENTS = {"client-1": "combiner", "client-2": "combiner", "client-3": "combiner"}


def committed(federation: Federation, session_id: str) -> list[dict[str, Any]]:
    return [r for r in federation.session_rounds(session_id) if r["status"] == "Finished"]


@pytest.fixture(scope="module")
def ran(e2e_dir: Path) -> Iterator[tuple[Federation, str, dict[str, Any], float]]:
    with running_federation(e2e_dir, combiners=["combiner"], clients=CLIENTS) as federation:
        session_id = "e2e-async"
        seed_id = federation.api.get_active_model()["model"]
        started = time.monotonic()
        federation.start_session(
            session_id,
            rounds=VERSIONS,
            round_timeout=60,
            min_clients=1,
            validate=False,
            mode="async",
            fedbuff={"buffer_size": 2, "max_staleness": 4, "server_learning_rate": 1.0},
        )
        federation.wait_for("two versions", lambda: len(committed(federation, session_id)) >= 2, 120)
        federation.kill("client-3")
        killed_at = len(committed(federation, session_id))
        federation.wait_for(
            "a version without client-3", lambda: len(committed(federation, session_id)) > killed_at + 1, 120
        )
        federation.restart("client-3")
        session = federation.wait_session_end(session_id, timeout=240)
        seconds = time.monotonic() - started
        print(f"\n{VERSIONS} versions in {seconds:.1f} s")
        yield federation, seed_id, session, seconds


def test_the_session_makes_every_version_with_no_model_lost(ran) -> None:
    federation, seed_id, session, _ = ran
    assert session["status"] == "Finished", f"{session}\n{federation.diagnostics()}"
    assert session["rounds_completed"] == VERSIONS
    rounds = federation.session_rounds(session["session_id"])
    assert [r["status"] for r in rounds] == ["Finished"] * VERSIONS
    numbers = [int(r["round_id"]) for r in rounds]
    assert numbers == list(range(numbers[0], numbers[0] + VERSIONS))
    assert [r["round_data"]["version"] for r in rounds] == list(range(1, VERSIONS + 1))
    parent = seed_id
    for item in rounds:
        model_id = item["model_id"]
        assert federation.backend.artifact_exists(f"models/{model_id}.npz"), model_id
        assert federation.api.get_model(model_id)["parent_model"] == parent
        # K = 2 updates per version, each at most max_staleness versions behind.
        assert len(item["combiners"][0]["participants"]) == 2
        assert all(0 <= s <= 4 for s in item["round_data"]["staleness"])
        parent = model_id
    assert federation.api.get_active_model()["model"] == parent


def test_every_client_contributed(ran) -> None:
    federation, _, session, _ = ran
    contributors = {
        name
        for r in federation.session_rounds(session["session_id"])
        for name in r["round_data"]["participants_clients"]
    }
    assert contributors == set(CLIENTS)
