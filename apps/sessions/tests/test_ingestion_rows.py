"""Statuses and validations a combiner forwards are stored exactly as sent, however their text reads."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.sessions.ingestion import statuses_record, validations_record
from apps.sessions.models import Status, Validation

pytestmark = pytest.mark.django_db

AWKWARD = [
    '{"a": "b \\"quoted\\"", "c": "back\\\\slash"}',
    "tab\there, newline\nthere, carriage\rreturn",
    "\\N",
    "NULL",
    "",
    "ünïcødé ✓ 模型",
    "{1,2,3}",
    ",;|",
]


def test_statuses_of_any_text_are_stored_as_sent() -> None:
    docs = [
        {
            "sender": {"name": f"client-{i}", "role": "WORKER"},
            "status": text,
            "logLevel": "AUDIT",
            "data": text,
            "correlationId": f"c{i}",
            "timestamp": "2024-05-22T12:49:40.123456Z",
            "type": "MODEL_UPDATE",
            "extra": text,
            "sessionId": "s",
        }
        for i, text in enumerate(AWKWARD)
    ]
    assert statuses_record(docs=docs) == len(AWKWARD)
    stored = {row.correlation_id: row for row in Status.objects.all()}
    assert len(stored) == len(AWKWARD)
    for i, text in enumerate(AWKWARD):
        row = stored[f"c{i}"]
        assert (row.status, row.data, row.extra) == (text, text, text)
        assert (row.sender_name, row.sender_role, row.log_level, row.type) == (
            f"client-{i}",
            "WORKER",
            "AUDIT",
            "MODEL_UPDATE",
        )
        assert row.timestamp == dt.datetime(2024, 5, 22, 12, 49, 40, 123456, tzinfo=dt.UTC)
    assert len({row.pk for row in stored.values()}) == len(AWKWARD)


def test_validations_of_any_text_are_stored_as_sent_and_defaults_fill_the_rest() -> None:
    docs = [
        {"modelId": "m", "data": text, "meta": text, "correlationId": f"c{i}"}
        for i, text in enumerate(AWKWARD)
    ]
    assert validations_record(docs=docs) == len(AWKWARD)
    stored = {row.correlation_id: row for row in Validation.objects.filter(model_id="m")}
    for i, text in enumerate(AWKWARD):
        row = stored[f"c{i}"]
        assert (row.data, row.meta, row.sender_name, row.receiver_role) == (text, text, "", "COMBINER")
        assert row.timestamp is not None
