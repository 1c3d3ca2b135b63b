"""Presence snapshots: the combiner restates its whole online set, periodically and on change."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from combiner_node.clients import OFFLINE_REPORT_SECONDS, ClientRegistry, snapshot_body
from combiner_node.reporter import ControllerReporter
from combiner_node.tests.conftest import FakeController, TestClient, wait_for

PATH = "/api/v1/combiners/combiner-1/clients"


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dial() -> Iterator[Callable[[int, str], TestClient]]:
    """Test clients of one node (make_client would start a second node reporting as combiner-1)."""
    made: list[TestClient] = []

    def make(port: int, name: str) -> TestClient:
        made.append(TestClient(port, name))
        return made[-1]

    yield make
    for client in made:
        client.close()


def snapshots(controller: FakeController) -> list[dict[str, Any]]:
    return [body for body in controller.bodies(PATH) if body.get("complete") is True]


def entries(body: dict[str, Any], status: str) -> dict[str, datetime]:
    return {
        entry["name"]: datetime.fromisoformat(entry["last_seen"])
        for entry in body["clients"]
        if entry["status"] == status
    }


def test_snapshot_lists_online_clients_and_recent_departures_with_last_seen() -> None:
    clock = ManualClock()
    registry = ClientRegistry(online_window=10, clock=clock)
    registry.touch("b")
    registry.touch("a")
    first = {entry.name: entry for entry in registry.snapshot()}
    assert [(entry.name, entry.status) for entry in registry.snapshot()] == [("a", "online"), ("b", "online")]

    clock.now += 5
    time.sleep(0.01)  # last_seen is wall-clock time: let it move
    registry.touch("a")
    clock.now += 6
    second = {entry.name: entry for entry in registry.snapshot()}
    assert (second["a"].status, second["b"].status) == ("online", "offline")
    assert second["a"].last_seen > first["a"].last_seen
    assert second["b"].last_seen == first["b"].last_seen  # its last sign of life

    # Long gone clients are left out; the controller already has them offline.
    clock.now += OFFLINE_REPORT_SECONDS
    assert [(entry.name, entry.status) for entry in registry.snapshot()] == [("a", "offline")]
    clock.now += 11
    assert registry.snapshot() == []
    body = snapshot_body(registry.all_offline())
    assert body == {"clients": [], "complete": True}


def test_a_client_back_within_the_window_never_leaves_the_snapshot() -> None:
    clock = ManualClock()
    registry = ClientRegistry(online_window=10, clock=clock)
    registry.touch("a")
    registry.transitions()
    clock.now += 2  # killed and restarted: silence shorter than the window
    registry.touch("a")
    assert registry.transitions() == []  # no transition to report ...
    assert [(entry.name, entry.status) for entry in registry.snapshot()] == [
        ("a", "online")
    ]  # ... but a fact


def test_snapshots_are_sent_periodically_with_last_seen_moving(make_node, controller, dial) -> None:
    node = make_node(presence_interval=0.3, online_window=5.0)
    client = dial(node.port, "streamer")
    client.open_stream()  # a client holding its task stream is seen at every snapshot

    def moving() -> bool:
        seen = [entries(body, "online").get("streamer") for body in snapshots(controller)]
        stamps = [stamp for stamp in seen if stamp is not None]
        return len(set(stamps)) >= 3 and len(seen) >= 4

    wait_for(moving, timeout=10)
    stamps = [
        entries(body, "online")["streamer"] for body in snapshots(controller) if entries(body, "online")
    ]
    assert stamps == sorted(stamps)  # last_seen only moves forward
    # Without any change, several snapshots went out: the period, not events, drives them.
    assert all(
        entries(body, "online") == {"streamer": entries(body, "online")["streamer"]}
        for body in snapshots(controller)
    )


def test_a_change_is_reported_at_once_without_waiting_for_the_period(make_node, controller, dial):
    node = make_node(presence_interval=600.0, online_window=1.0)
    time.sleep(0.7)
    assert snapshots(controller) == []  # no change, period not over: nothing sent
    client = dial(node.port, "newcomer")
    client.heartbeat()
    body = wait_for(lambda: next((b for b in snapshots(controller) if entries(b, "online")), None), timeout=5)
    assert set(entries(body, "online")) == {"newcomer"}
    # Silence past the online window is a change too: a snapshot without it online follows.
    gone = wait_for(
        lambda: next((b for b in snapshots(controller) if "newcomer" in entries(b, "offline")), None),
        timeout=5,
    )
    assert entries(gone, "online") == {}
    assert len(snapshots(controller)) == 2


def test_stop_reports_an_empty_online_set(make_node, controller, dial) -> None:
    node = make_node(presence_interval=0.2, online_window=5.0)
    client = dial(node.port, "leaver")
    client.open_stream()
    wait_for(lambda: any("leaver" in entries(body, "online") for body in snapshots(controller)))
    node.stop(grace=1.0)
    last = snapshots(controller)[-1]
    assert entries(last, "online") == {}
    assert set(entries(last, "offline")) == {"leaver"}


def test_a_queued_snapshot_is_replaced_in_place_by_a_newer_one(controller: FakeController) -> None:
    reporter = ControllerReporter(controller.url)
    reporter.post(PATH, {"clients": [], "complete": True, "n": 1}, replace=True)
    reporter.post("/api/v1/rounds/1/reports", {"status": "Success"})
    reporter.post(PATH, {"clients": [], "complete": True, "n": 2}, replace=True)
    assert reporter.pending() == 2  # one snapshot, one round report
    reporter.start()
    assert reporter.flush(timeout=5)
    reporter.close()
    # Snapshots and round reports go out on lanes of their own, so only their sets are fixed.
    paths = sorted(path for path, _, _ in controller.requests)
    assert paths == sorted([PATH, "/api/v1/rounds/1/reports"])
    assert controller.bodies(PATH) == [{"clients": [], "complete": True, "n": 2}]


def test_snapshots_do_not_pile_up_during_an_outage(controller: FakeController) -> None:
    controller.script(PATH, *[(503, {})] * 5)
    reporter = ControllerReporter(controller.url, initial_backoff=0.02, max_backoff=0.05)
    reporter.start()
    for n in range(50):
        reporter.post(PATH, {"clients": [], "complete": True, "n": n}, replace=True)
        assert reporter.pending() <= 2  # at most the one being sent and the newest
        time.sleep(0.01)
    assert reporter.flush(timeout=10)
    reporter.close()
    delivered = [body["n"] for body in controller.bodies(PATH)]
    assert delivered[-1] == 49
    assert delivered == sorted(delivered)  # never an older snapshot after a newer one
