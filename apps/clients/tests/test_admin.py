"""The client admin: a read-only registry with status badges and links to combiners; each
combiner's client load on the combiner page."""

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner

pytestmark = pytest.mark.django_db


@pytest.fixture
def clients() -> list[Client]:
    north = Combiner.objects.create(name="north", address="north.local", port=12080)
    south = Combiner.objects.create(name="south", address="south.local", port=12081)
    now = timezone.now()
    return [
        Client.objects.create(
            name="alice", combiner=north, status=ClientStatus.ONLINE, ip="10.0.0.1", last_seen=now
        ),
        Client.objects.create(
            name="bob", combiner=south, status=ClientStatus.OFFLINE, ip="10.0.0.2", last_seen=now
        ),
        Client.objects.create(name="carol", combiner=None, status=ClientStatus.AVAILABLE),
    ]


def changelist() -> str:
    return reverse("admin:clients_client_changelist")


def test_changelist_shows_status_badges_and_combiner_links(
    admin_client: HttpClient, clients: list[Client]
) -> None:
    alice = clients[0]
    response = admin_client.get(changelist())
    assert response.status_code == 200
    body = response.content.decode()
    assert '<span class="fp-badge fp-ok">online</span>' in body
    assert '<span class="fp-badge fp-muted">offline</span>' in body
    combiner_url = reverse("admin:combiners_combiner_change", args=[alice.combiner_id])
    assert f'<a href="{combiner_url}">north</a>' in body


def test_list_needs_one_query_for_the_combiners(
    admin_client: HttpClient, clients: list[Client], django_assert_max_num_queries: object
) -> None:
    Client.objects.bulk_create(
        Client(name=f"extra{index}", combiner=clients[0].combiner, status=ClientStatus.ONLINE)
        for index in range(30)
    )
    with django_assert_max_num_queries(12):  # type: ignore[operator]
        assert admin_client.get(changelist()).status_code == 200


def test_change_page_is_view_only(admin_client: HttpClient, clients: list[Client]) -> None:
    alice = clients[0]
    url = reverse("admin:clients_client_change", args=[alice.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "10.0.0.1" in response.content.decode()
    assert admin_client.post(url, {"name": "mallory"}).status_code == 403
    alice.refresh_from_db()
    assert alice.name == "alice"


def test_search_and_filters(admin_client: HttpClient, clients: list[Client]) -> None:
    body = admin_client.get(changelist(), {"q": "10.0.0.2"}).content.decode()
    assert ">bob<" in body and ">alice<" not in body
    body = admin_client.get(changelist(), {"status__exact": "online"}).content.decode()
    assert ">alice<" in body and ">bob<" not in body and ">carol<" not in body
    south = clients[1].combiner
    assert south is not None
    body = admin_client.get(changelist(), {"combiner__id__exact": str(south.pk)}).content.decode()
    assert ">bob<" in body and ">alice<" not in body


def test_clients_are_not_added_by_hand(admin_client: HttpClient) -> None:
    assert admin_client.get(reverse("admin:clients_client_add")).status_code == 403


def test_combiner_changelist_shows_online_and_assigned_clients(
    admin_client: HttpClient, clients: list[Client]
) -> None:
    north = clients[0].combiner
    assert north is not None
    Client.objects.create(name="dave", combiner=north, status=ClientStatus.ONLINE)
    Client.objects.create(name="erin", combiner=north, status=ClientStatus.OFFLINE)
    response = admin_client.get(reverse("admin:combiners_combiner_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "north.local:12080" in body
    assert f'<a href="{changelist()}?combiner__id__exact={north.pk}">2 / 3</a>' in body
    page = admin_client.get(reverse("admin:combiners_combiner_change", args=[north.pk])).content.decode()
    assert "clients online / assigned" in page.lower() and ">2 / 3<" in page
