"""The combiner admin: registered combiners; no adding by hand (their client load: apps/clients)."""

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from apps.combiners.models import Combiner

pytestmark = pytest.mark.django_db


@pytest.fixture
def combiners() -> tuple[Combiner, Combiner]:
    north = Combiner.objects.create(name="north", address="north.local", port=12080, max_clients=10)
    south = Combiner.objects.create(
        name="south", address="south.local", port=12081, secure_grpc=True, key="PRIVATE-KEY-TEXT"
    )
    return north, south


def changelist() -> str:
    return reverse("admin:combiners_combiner_changelist")


def test_changelist_shows_endpoints(admin_client: HttpClient, combiners: tuple[Combiner, Combiner]) -> None:
    response = admin_client.get(changelist())
    assert response.status_code == 200
    body = response.content.decode()
    assert "north.local:12080" in body and "south.local:12081" in body


def test_change_page_shows_the_combiner_but_never_its_private_key(
    admin_client: HttpClient, combiners: tuple[Combiner, Combiner]
) -> None:
    _, south = combiners
    response = admin_client.get(reverse("admin:combiners_combiner_change", args=[south.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "south.local" in body
    assert "PRIVATE-KEY-TEXT" not in body


def test_only_capacity_is_editable(admin_client: HttpClient, combiners: tuple[Combiner, Combiner]) -> None:
    north, _ = combiners
    response = admin_client.post(
        reverse("admin:combiners_combiner_change", args=[north.pk]),
        {"max_clients": 42, "address": "elsewhere", "port": 1},
    )
    assert response.status_code == 302
    north.refresh_from_db()
    assert (north.max_clients, north.address, north.port) == (42, "north.local", 12080)


def test_search_and_filter(admin_client: HttpClient, combiners: tuple[Combiner, Combiner]) -> None:
    body = admin_client.get(changelist(), {"q": "south"}).content.decode()
    assert "south.local" in body and "north.local" not in body
    body = admin_client.get(changelist(), {"secure_grpc__exact": "1"}).content.decode()
    assert "south.local" in body and "north.local" not in body


def test_combiners_are_not_added_by_hand(admin_client: HttpClient) -> None:
    assert admin_client.get(reverse("admin:combiners_combiner_add")).status_code == 403
