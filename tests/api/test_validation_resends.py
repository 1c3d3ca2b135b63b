"""A combiner resends a batch of validations whose answer it lost (the controller restarted after
storing it): each client's answer to a validation request is stored once, however often it arrives."""

from __future__ import annotations

from typing import Any

import pytest

from apps.sessions.ingestion import validations_record
from apps.sessions.models import Validation

from .concurrency import POSTGRESQL_ONLY, send_twice_at_once
from .factories import Network, validation_doc


def post(network: Network, docs: list[dict[str, Any]]) -> int:
    response = network.api.post("/api/v1/validations/", docs, format="json")
    assert response.status_code == 201, response.content
    return response.json()["created"]


def stored_keys() -> list[tuple[str, str, str]]:
    return sorted(Validation.objects.values_list("sender_name", "model_id", "correlation_id"))


def answer(client: str, request: str, **overrides: Any) -> dict[str, Any]:
    return validation_doc(sender={"name": client, "role": "WORKER"}, correlationId=request, **overrides)


def test_a_resent_batch_stores_only_what_arrived_since(network: Network) -> None:
    first = [answer("client-a", "req-1"), answer("client-b", "req-2")]
    assert post(network, first) == 2
    # The resend carries the lost batch and what was queued meanwhile.
    assert post(network, [*first, answer("client-c", "req-3")]) == 1
    assert post(network, first) == 0
    assert stored_keys() == [
        ("client-a", "model-a", "req-1"),
        ("client-b", "model-a", "req-2"),
        ("client-c", "model-a", "req-3"),
    ]


def test_one_batch_holding_an_answer_twice_stores_it_once(network: Network) -> None:
    assert post(network, [answer("client-a", "req-1"), answer("client-a", "req-1")]) == 1
    assert Validation.objects.count() == 1


def test_answers_differing_in_client_model_or_request_are_all_kept(network: Network) -> None:
    docs = [
        answer("client-a", "req-1"),
        answer("client-b", "req-1"),
        answer("client-a", "req-2"),
        answer("client-a", "req-1", modelId="model-b"),
    ]
    assert post(network, docs) == 4
    assert Validation.objects.count() == 4


def test_validations_without_a_request_id_are_never_taken_for_resends(network: Network) -> None:
    # A sender that gives no correlation id cannot be told apart from its resends: nothing is dropped.
    assert post(network, [answer("client-a", ""), answer("client-a", "")]) == 2
    assert post(network, [answer("client-a", "")]) == 1
    assert Validation.objects.count() == 3


@pytest.mark.django_db(transaction=True)
@POSTGRESQL_ONLY
def test_a_resend_arriving_while_the_first_send_is_being_written_stores_nothing() -> None:
    docs = [answer("client-a", "req-1"), answer("client-b", "req-2")]
    results = send_twice_at_once(lambda: validations_record(docs=docs))
    assert results == {"first": 2, "resend": 0}
    assert stored_keys() == [("client-a", "model-a", "req-1"), ("client-b", "model-a", "req-2")]
