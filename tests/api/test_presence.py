"""Presence snapshots on POST /api/v1/combiners/<name>/clients: the database agrees with the last one.

docs/combiner-controller.md, "Client presence".
"""

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from apps.clients.models import Client
from apps.clients.presence import combiners_expire_silent
from apps.clients.services import clients_count_online
from apps.combiners.models import Combiner
from apps.combiners.services import combiner_silence

from .factories import Network, make_token

pytestmark = pytest.mark.django_db

# Combiner clock readings in the tests: later than any /add_client of the test (which stamps now).
T0 = timezone.now().replace(microsecond=0) + timedelta(hours=1)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def snapshot(network: Network, combiner: str, *online: str, seen: float = 0, token: str = "") -> Any:
    body = {
        "clients": [{"name": name, "status": "online", "last_seen": at(seen)} for name in online],
        "complete": True,
    }
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return network.api.post(f"/api/v1/combiners/{combiner}/clients", body, format="json", **headers)


def state() -> dict[str, tuple[str, str | None]]:
    return {
        client.name: (client.status, client.combiner.name if client.combiner else None)
        for client in Client.objects.select_related("combiner")
    }


def last_seen(name: str) -> Any:
    return Client.objects.get(name=name).last_seen


def active(network: Network, combiner: str) -> list[str]:
    answer = network.api.get("/get_active_clients", {"combiner": combiner}).json()
    return [client["name"] for client in answer["result"]]


def listed(network: Network) -> dict[str, str]:
    return {client["id"]: client["status"] for client in network.api.get("/list_clients").json()["result"]}


@pytest.fixture
def two(network: Network) -> Network:
    """combiner-1 with a, b and c online; combiner-2 with x online."""
    network.package()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="c2.local")
    for name in ("a", "b", "c"):
        network.api.post(
            "/add_client", {"client_id": name, "preferred_combiner": "combiner-1"}, format="json"
        )
    network.api.post("/add_client", {"client_id": "x", "preferred_combiner": "combiner-2"}, format="json")
    assert snapshot(network, "combiner-1", "a", "b", "c", seen=1).json() == {"updated": 3, "offline": 0}
    assert snapshot(network, "combiner-2", "x", seen=1).status_code == 200
    return network


def test_a_snapshot_makes_the_database_agree(two: Network) -> None:
    answer = snapshot(two, "combiner-1", "a", "d", seen=10)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"updated": 2, "offline": 2}
    assert state() == {
        "a": ("online", "combiner-1"),
        "b": ("offline", "combiner-1"),
        "c": ("offline", "combiner-1"),
        "d": ("online", "combiner-1"),  # a client the combiner has but the database did not
        "x": ("online", "combiner-2"),  # another combiner's clients are untouched
    }
    assert last_seen("a") == T0 + timedelta(seconds=10)
    assert active(two, "combiner-1") == ["a", "d"]
    assert listed(two) == {"a": "online", "b": "offline", "c": "offline", "d": "online", "x": "online"}
    assert clients_count_online() == 3


def test_the_same_snapshot_twice_changes_nothing_more(two: Network) -> None:
    snapshot(two, "combiner-1", "a", seen=10)
    before = state()
    assert snapshot(two, "combiner-1", "a", seen=10).json() == {"updated": 1, "offline": 0}
    assert state() == before


def test_last_seen_moves_while_online_and_never_back(two: Network) -> None:
    for seen in (5, 8, 13):
        snapshot(two, "combiner-1", "a", "b", "c", seen=seen)
        assert last_seen("a") == T0 + timedelta(seconds=seen)
    snapshot(two, "combiner-1", "a", "b", "c", seen=9)  # a late retry of an older snapshot
    assert last_seen("a") == T0 + timedelta(seconds=13)
    assert state()["a"] == ("online", "combiner-1")


def test_an_offline_entry_records_the_last_sign_of_life(two: Network) -> None:
    body = {
        "clients": [
            {"name": "a", "status": "online", "last_seen": at(20)},
            {"name": "b", "status": "offline", "last_seen": at(12)},
            {"name": "x", "status": "offline", "last_seen": at(30)},  # combiner-2's client
        ],
        "complete": True,
    }
    answer = two.api.post("/api/v1/combiners/combiner-1/clients", body, format="json").json()
    assert answer == {"updated": 2, "offline": 1}  # a and b applied, c left out
    assert state()["b"] == ("offline", "combiner-1") and last_seen("b") == T0 + timedelta(seconds=12)
    assert state()["x"] == ("online", "combiner-2")


def test_a_restarted_combiner_reports_an_empty_set(two: Network) -> None:
    assert snapshot(two, "combiner-1").json() == {"updated": 0, "offline": 3}
    assert active(two, "combiner-1") == [] and active(two, "combiner-2") == ["x"]
    assert snapshot(two, "combiner-1", "b", seen=40).json() == {"updated": 1, "offline": 0}
    assert active(two, "combiner-1") == ["b"]


def test_a_client_moves_only_to_the_combiner_that_saw_it_last(two: Network) -> None:
    # combiner-2 lists a with an older sign of life than combiner-1 has: it is a stale view.
    snapshot(two, "combiner-1", "a", "b", "c", seen=20)
    snapshot(two, "combiner-2", "x", "a", seen=15)
    assert state()["a"] == ("online", "combiner-1")
    # Seen later on combiner-2: it moved there, and combiner-1's next snapshot no longer has it.
    snapshot(two, "combiner-2", "x", "a", seen=25)
    assert state()["a"] == ("online", "combiner-2")
    snapshot(two, "combiner-1", "b", "c", seen=26)
    assert state()["a"] == ("online", "combiner-2")


def test_add_client_keeps_a_client_its_combiner_still_has_online(two: Network) -> None:
    # Killed and restarted within its combiner's online window: registered again before it reconnects.
    answer = two.api.post(
        "/add_client", {"client_id": "a", "preferred_combiner": "combiner-1"}, format="json"
    )
    assert answer.status_code == 200
    assert state()["a"] == ("online", "combiner-1")
    assert active(two, "combiner-1") == ["a", "b", "c"]
    # Registered onto another combiner, it is available there until that one reports it.
    two.api.post("/add_client", {"client_id": "b", "preferred_combiner": "combiner-2"}, format="json")
    assert state()["b"] == ("available", "combiner-2")
    # combiner-1 still lists b (its window has not lapsed) but saw it before the registration.
    snapshot(two, "combiner-1", "a", "b", "c", seen=-7200)
    assert state()["b"] == ("available", "combiner-2")
    two.api.post(
        "/api/v1/combiners/combiner-2/clients",
        {"clients": [{"name": "x", "status": "online"}, {"name": "b", "status": "online"}], "complete": True},
        format="json",
    )
    assert state()["b"] == ("online", "combiner-2")
    assert active(two, "combiner-2") == ["b", "x"]


def test_an_offline_entry_leaves_a_registered_again_client_available(two: Network) -> None:
    snapshot(two, "combiner-1", seen=2)  # a, b, c offline
    two.api.post("/add_client", {"client_id": "a", "preferred_combiner": "combiner-1"}, format="json")
    assert state()["a"] == ("available", "combiner-1")
    body = {"clients": [{"name": "a", "status": "offline", "last_seen": at(3)}], "complete": True}
    two.api.post("/api/v1/combiners/combiner-1/clients", body, format="json")
    assert state()["a"] == ("available", "combiner-1")


def test_a_silent_combiner_has_its_clients_go_offline(two: Network) -> None:
    silent_since = timezone.now() - combiner_silence() - timedelta(seconds=1)
    Combiner.objects.filter(name="combiner-1").update(last_report_at=silent_since)
    # The start check stops counting them at once, before any write.
    assert clients_count_online() == 1
    assert active(two, "combiner-1") == []
    assert combiners_expire_silent() == 3
    assert state() == {
        "a": ("offline", "combiner-1"),
        "b": ("offline", "combiner-1"),
        "c": ("offline", "combiner-1"),
        "x": ("online", "combiner-2"),
    }
    assert combiners_expire_silent() == 0
    # Back: its next snapshot puts its clients online again.
    snapshot(two, "combiner-1", "a", seen=50)
    assert state()["a"] == ("online", "combiner-1")
    assert clients_count_online() == 2


def test_another_combiners_snapshot_retires_a_silent_one(two: Network) -> None:
    silent_since = timezone.now() - combiner_silence() - timedelta(seconds=1)
    Combiner.objects.filter(name="combiner-2").update(last_report_at=silent_since)
    snapshot(two, "combiner-1", "a", "b", "c", seen=5)
    assert state()["x"] == ("offline", "combiner-2")
    assert listed(two)["x"] == "offline"


def test_transitions_of_older_combiners_still_apply_and_have_no_silence_deadline(two: Network) -> None:
    url = "/api/v1/combiners/combiner-2/clients"
    batch = {"clients": [{"name": "y", "status": "online", "last_seen": at(3)}]}
    assert two.api.post(url, batch, format="json").json() == {"updated": 1}
    assert state()["y"] == ("online", "combiner-2") and state()["x"] == ("online", "combiner-2")
    assert Combiner.objects.get(name="combiner-2").last_report_at is None
    assert combiners_expire_silent(now=timezone.now() + timedelta(days=1)) == 3  # combiner-1's only
    assert state()["y"] == ("online", "combiner-2")


BAD_BODIES = [
    (
        {"clients": [{"name": "a", "status": "online"}, {"name": "a", "status": "online"}], "complete": True},
        "twice",
    ),
    ({"clients": [{"name": "a", "status": "asleep"}], "complete": True}, "status"),
    (
        {"clients": [{"name": "a", "status": "online", "last_seen": "yesterday"}], "complete": True},
        "last_seen",
    ),
    ({"clients": [{"name": "", "status": "online"}], "complete": True}, "name"),
    ({"clients": "all", "complete": True}, "clients"),
    ({"complete": True}, "clients"),
    ({"clients": [], "complete": "maybe"}, "complete"),
    ({"clients": [], "complete": True, "online": ["a"]}, "online"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_a_bad_body_is_400_json_and_changes_nothing(two: Network, body: dict, message: str) -> None:
    before = state()
    stamps = {client.name: client.last_seen for client in Client.objects.all()}
    reported = Combiner.objects.get(name="combiner-1").last_report_at
    response = two.api.post("/api/v1/combiners/combiner-1/clients", body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert message in response.json()["message"]
    assert state() == before
    assert {client.name: client.last_seen for client in Client.objects.all()} == stamps
    assert Combiner.objects.get(name="combiner-1").last_report_at == reported


def test_a_combiner_token_reports_only_its_own_combiner(two: Network, settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = "test-secret"
    before = state()
    other = make_token("combiner", sub="combiner-2")
    response = snapshot(two, "combiner-1", token=other)
    assert response.status_code == 403, response.content
    assert response["Content-Type"].startswith("application/json")
    assert state() == before
    own = make_token("combiner", sub="combiner-1")
    assert snapshot(two, "combiner-1", "a", token=own).json()["offline"] == 2


def test_the_beat_task_retires_a_silent_combiner(two: Network) -> None:
    from apps.clients.tasks import expire_silent_combiners

    silent_since = timezone.now() - combiner_silence() - timedelta(seconds=1)
    Combiner.objects.filter(name="combiner-2").update(last_report_at=silent_since)
    assert expire_silent_combiners() == 1
    assert state()["x"] == ("offline", "combiner-2")
    assert expire_silent_combiners() == 0
    assert "combiners-expire-silent" in settings.CELERY_BEAT_SCHEDULE
