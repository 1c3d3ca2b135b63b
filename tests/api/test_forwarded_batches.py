"""Batches a combiner forwards under an Idempotency-Key: a resend of a stored batch (its answer was
lost, e.g. the controller restarted after storing it) stores nothing, on statuses and validations."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from apps.sessions.ingestion import forwarded_batch_record, statuses_record
from apps.sessions.models import ForwardedBatch, Status, Validation
from apps.sessions.records import BATCH_RECEIPTS_KEPT, forwarded_batches_prune

from .concurrency import POSTGRESQL_ONLY, send_twice_at_once
from .factories import Network, make_token, status_doc, validation_doc

STATUSES = "/api/v1/statuses/"
VALIDATIONS = "/api/v1/validations/"


def post(network: Network, path: str, docs: Any, key: str | None, token: str | None = None) -> Any:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return network.api.post(path, docs, format="json", **headers)


def created(response: Any) -> int:
    assert response.status_code == 201, response.content
    return response.json()["created"]


def test_a_status_batch_sent_again_under_its_key_stores_nothing(network: Network) -> None:
    batch = [status_doc(status=f"s{n}") for n in range(3)]
    assert created(post(network, STATUSES, batch, "k1")) == 3
    assert created(post(network, STATUSES, batch, "k1")) == 0
    assert sorted(Status.objects.values_list("status", flat=True)) == ["s0", "s1", "s2"]
    # Another key is another batch, even with the same documents.
    assert created(post(network, STATUSES, batch[:1], "k2")) == 1
    assert Status.objects.count() == 4


def test_a_validation_batch_sent_again_under_its_key_stores_nothing(network: Network) -> None:
    batch = [validation_doc(correlationId="", sender={"name": f"c{n}", "role": "WORKER"}) for n in range(2)]
    assert created(post(network, VALIDATIONS, batch, "v-1")) == 2
    assert created(post(network, VALIDATIONS, batch, "v-1")) == 0
    assert Validation.objects.count() == 2


def test_without_a_key_every_send_is_stored(network: Network) -> None:
    assert created(post(network, STATUSES, status_doc(), None)) == 1
    assert created(post(network, STATUSES, status_doc(), None)) == 1
    assert Status.objects.count() == 2
    assert not ForwardedBatch.objects.exists()


@pytest.mark.parametrize("key", ["", "k" * 65, "with space", "ü", "a/b", "x;y"])
def test_a_malformed_key_is_400_and_stores_nothing(network: Network, key: str) -> None:
    response = post(network, STATUSES, [status_doc()], key)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "Idempotency-Key" in response.json()["message"]
    assert not Status.objects.exists() and not ForwardedBatch.objects.exists()


def test_a_refused_batch_leaves_no_receipt_so_its_corrected_resend_is_stored(network: Network) -> None:
    refused = post(network, STATUSES, [status_doc(), status_doc(logLevel="LOUD")], "k1")
    assert refused.status_code == 400, refused.content
    assert not Status.objects.exists() and not ForwardedBatch.objects.exists()
    assert created(post(network, STATUSES, [status_doc(), status_doc()], "k1")) == 2


def test_keys_are_per_combiner(network: Network, settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = "test-secret"
    north = make_token("combiner", sub="north")
    south = make_token("combiner", sub="south")
    assert created(post(network, STATUSES, [status_doc(status="n")], "same", north)) == 1
    # The same key from another combiner is that combiner's own batch: a combiner cannot suppress
    # another's reports by guessing its keys.
    assert created(post(network, STATUSES, [status_doc(status="s")], "same", south)) == 1
    assert created(post(network, STATUSES, [status_doc(status="n")], "same", north)) == 0
    assert sorted(ForwardedBatch.objects.values_list("sender", "key")) == [
        ("north", "same"),
        ("south", "same"),
    ]


def test_receipts_older_than_a_day_are_pruned(db: None) -> None:
    now = timezone.now()
    for key in ("old", "new"):
        forwarded_batch_record(sender="north", key=key, docs=[status_doc()], record=statuses_record)
    ForwardedBatch.objects.filter(key="old").update(
        received_at=now - BATCH_RECEIPTS_KEPT - dt.timedelta(seconds=1)
    )
    assert forwarded_batches_prune(now=now) == 1
    assert list(ForwardedBatch.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
@POSTGRESQL_ONLY
def test_a_resend_arriving_while_the_first_send_is_being_written_stores_nothing() -> None:
    docs = [status_doc(status="a"), status_doc(status="b")]
    results = send_twice_at_once(
        lambda: forwarded_batch_record(sender="north", key="k", docs=docs, record=statuses_record)
    )
    assert results == {"first": 2, "resend": 0}
    assert sorted(Status.objects.values_list("status", flat=True)) == ["a", "b"]
