"""/add_client respects each combiner's capacity (the max_clients it registered with)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.clients.models import Client
from apps.clients.services import ARRIVING_SECONDS
from apps.combiners.models import Combiner

from .factories import Network

pytestmark = pytest.mark.django_db


def register_combiner(network: Network, name: str, max_clients: int) -> None:
    body = {
        "combiner_id": name,
        "address": f"{name}.local",
        "fqdn": None,
        "port": 12080,
        "secure_grpc": False,
        "max_clients": max_clients,
    }
    response = network.api.post("/add_combiner", body, format="json")
    assert response.status_code == 200, response.content


def assign(network: Network, name: str) -> tuple[int, dict]:
    response = network.api.post(
        "/add_client", {"client_id": name, "preferred_combiner": False}, format="json"
    )
    return response.status_code, response.json()


def test_a_combiner_registers_its_capacity_and_a_new_registration_updates_it(network: Network) -> None:
    register_combiner(network, "small", 2)
    assert Combiner.objects.get(name="small").max_clients == 2
    register_combiner(network, "small", 5)
    assert Combiner.objects.get(name="small").max_clients == 5


def test_arriving_clients_take_places_so_a_burst_goes_to_the_next_combiner(network: Network) -> None:
    network.package()
    register_combiner(network, "first", 2)
    register_combiner(network, "second", 2)
    hosts = [assign(network, f"client-{index}")[1]["host"] for index in range(4)]
    # None of them is online yet; each assignment still counts against its combiner.
    assert sorted(hosts) == ["first.local", "first.local", "second.local", "second.local"]

    status, answer = assign(network, "client-5")
    assert status == 400
    assert answer["success"] is False and "full" in answer["message"]
    assert not Client.objects.filter(name="client-5").exists()


def test_a_client_that_never_arrived_frees_its_place(network: Network) -> None:
    network.package()
    register_combiner(network, "only", 1)
    assert assign(network, "gone")[0] == 200
    assert assign(network, "next")[0] == 400
    Client.objects.filter(name="gone").update(
        last_seen=timezone.now() - timedelta(seconds=ARRIVING_SECONDS + 1)
    )
    status, answer = assign(network, "next")
    assert status == 200 and answer["host"] == "only.local"


def test_online_clients_fill_a_combiner(network: Network) -> None:
    network.package()
    register_combiner(network, "one", 1)
    network.client("online-client")
    Client.objects.filter(name="online-client").update(last_seen=timezone.now() - timedelta(days=1))
    status, answer = assign(network, "another")
    assert status == 400 and "full" in answer["message"]
