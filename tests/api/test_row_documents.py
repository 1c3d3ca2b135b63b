"""List pages built from rows (controlplane/api/rows.py) answer exactly what the serializers answer."""

import datetime as dt
import json
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework import serializers

from apps.sessions.api.serializers import (
    StatusRawSerializer,
    StatusSerializer,
    ValidationRawSerializer,
    ValidationSerializer,
)
from apps.sessions.models import Session, Status, Validation
from controlplane.api import pagination
from controlplane.api.rows import row_reader
from controlplane.api.serializers import HttpDateField, PlainDateTimeField, Rfc3339Field

pytestmark = pytest.mark.django_db

ODD_TEXT = [
    "",
    " padded ",
    'quotes " and \\ backslash',
    "naïve ünïcode, 中文, emoji 🚀",
    "line\nbreak\ttab",
    '{"model_id": "abc", "meta": {"n": 1.5}}',
    "x" * 5_000,
]
ODD_TIMES = [
    dt.datetime(2024, 5, 22, 12, 49, 40, 123456, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 22, 12, 49, 40, tzinfo=dt.UTC),  # no microseconds
    dt.datetime(2024, 5, 22, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # next day in UTC
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(1900, 2, 28, 0, 0, 0, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
]


@pytest.fixture
def odd_rows() -> None:
    for index, text in enumerate(ODD_TEXT):
        for request, moment in enumerate(ODD_TIMES):
            Status.objects.create(
                sender_name=text[:128],
                sender_role="COMBINER" if index % 2 else "WORKER",
                status=text,
                log_level="AUDIT",
                data=text,
                correlation_id=text[:128],
                timestamp=moment,
                type="MODEL_UPDATE",
                extra=text,
                session_id=text[:128],
            )
            Validation.objects.create(
                sender_name=text[:128],
                receiver_name=text[::-1][:128],
                model_id=text[:64],
                data=text,
                # One answer per validation request: a request's id is stored once per client and model.
                correlation_id=f"{text[:120]}#{request}",
                timestamp=moment,
                meta=text,
                session_id=text[:128],
            )


def serialized(serializer_class: type[serializers.Serializer], model: Any) -> list[dict[str, Any]]:
    return [dict(serializer_class(instance).data) for instance in model.objects.all()]


def from_rows(serializer_class: type[serializers.Serializer], model: Any) -> list[dict[str, Any]]:
    reader = row_reader(serializer_class, model)
    assert reader is not None, f"{serializer_class.__name__} has no row reader"
    return reader.documents(list(model.objects.values_list(*reader.columns)))


@pytest.mark.parametrize(
    ("serializer_class", "model"),
    [
        (StatusSerializer, Status),
        (StatusRawSerializer, Status),
        (ValidationSerializer, Validation),
        (ValidationRawSerializer, Validation),
    ],
)
def test_rows_give_the_serializers_documents_key_for_key(
    odd_rows: None, serializer_class: type[serializers.Serializer], model: Any
) -> None:
    expected = serialized(serializer_class, model)
    assert len(expected) == len(ODD_TEXT) * len(ODD_TIMES)
    # The JSON text too: the same keys in the same order, the same value types.
    assert json.dumps(from_rows(serializer_class, model)) == json.dumps(expected)


class SessionTimes(serializers.Serializer):
    """Nullable columns under every timestamp rendering, and integers, beside a nested document."""

    id = serializers.CharField(source="pk", read_only=True)
    model_id = serializers.CharField(read_only=True, allow_null=True)
    started_at = HttpDateField(allow_null=True)
    finished_at = Rfc3339Field(allow_null=True)
    step_deadline = PlainDateTimeField(allow_null=True)
    buffer_size = serializers.IntegerField(read_only=True)
    config = serializers.ReadOnlyField(source="aggregator_kwargs")
    times = serializers.Serializer(source="*", read_only=True)


def test_a_null_column_is_null_as_the_serializer_has_it() -> None:
    moment = dt.datetime(2024, 5, 22, 12, 49, 40, 5, tzinfo=dt.UTC)
    Session.objects.create(session_id="empty", buffer_size=-1)
    Session.objects.create(
        session_id="full",
        model_id="m1",
        started_at=moment,
        finished_at=moment,
        step_deadline=moment,
        aggregator_kwargs={"lr": 0.1, "nested": [1, None]},
    )
    documents = from_rows(SessionTimes, Session)
    assert json.dumps(documents) == json.dumps(serialized(SessionTimes, Session))
    by_model = {document["model_id"]: document for document in documents}
    assert [by_model[None][key] for key in ("started_at", "finished_at", "step_deadline", "config")] == [
        None
    ] * 4
    assert by_model["m1"]["finished_at"] == "2024-05-22T12:49:40.000005Z"


class WithMethod(serializers.Serializer):
    id = serializers.CharField(source="pk", read_only=True)
    shout = serializers.SerializerMethodField()

    def get_shout(self, instance: Status) -> str:
        return instance.status.upper()


class WithOwnRendering(serializers.Serializer):
    id = serializers.CharField(source="pk", read_only=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {"wrapped": super().to_representation(instance)}


class WithPath(serializers.Serializer):
    round = serializers.CharField(source="current_round.round_id", read_only=True)


class WithRelation(serializers.Serializer):
    round = serializers.CharField(source="current_round", read_only=True)


class WithProperty(serializers.Serializer):
    text = serializers.CharField(source="__str__", read_only=True)


class WithChoice(serializers.Serializer):
    status = serializers.ChoiceField(choices=["a"], read_only=True)


@pytest.mark.parametrize(
    ("serializer_class", "model"),
    [
        (WithMethod, Status),
        (WithOwnRendering, Status),
        (WithPath, Session),
        (WithRelation, Session),
        (WithProperty, Status),
        (WithChoice, Status),
    ],
)
def test_a_serializer_rows_cannot_render_the_same_keeps_drfs_path(
    serializer_class: type[serializers.Serializer], model: Any
) -> None:
    assert row_reader(serializer_class, model) is None


def test_the_list_route_answers_the_serializers_documents(
    api: Any, odd_rows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagination, "DEFERRED_JOIN_SKIP", 2)
    cache.clear()
    ordered = Status.objects.order_by("-timestamp", "-id")
    typed = api.get("/api/v1/statuses/", HTTP_X_LIMIT="1000").json()
    assert typed == {"count": ordered.count(), "result": [StatusSerializer(row).data for row in ordered]}
    raw = api.get("/api/v1/statuses/", HTTP_X_LIMIT="1000", HTTP_X_SKIP_TYPING="true").json()
    assert raw["result"] == [StatusRawSerializer(row).data for row in ordered]
    # A deep page (read by deferred join) too.
    deep = api.get("/api/v1/statuses/", HTTP_X_SKIP="3", HTTP_X_LIMIT="5", HTTP_X_SORT_ORDER="asc").json()
    ascending = list(Status.objects.order_by("timestamp", "id")[3:8])
    assert deep["result"] == [StatusSerializer(row).data for row in ascending]
    # A value without commas: in a posted filter, commas mean any-of.
    posted = api.post(
        "/api/v1/validations/list", {"sender.name": ODD_TEXT[4]}, format="json", HTTP_X_SKIP_TYPING="true"
    ).json()
    chosen = Validation.objects.filter(sender_name=ODD_TEXT[4]).order_by("-timestamp", "-id")
    assert posted["result"] == [ValidationRawSerializer(row).data for row in chosen]
    assert len(posted["result"]) == len(ODD_TIMES)
    cache.clear()  # where its deep pages start: another test's rows would start elsewhere


def test_a_filter_value_is_matched_as_sent_spaces_included(api: Any, odd_rows: None) -> None:
    """FEDn passes a filter value to MongoDB as it is: ` padded ` matches only ` padded `."""
    padded = ODD_TEXT[1]
    assert padded != padded.strip()
    Status.objects.create(sender_name=padded.strip(), timestamp=ODD_TIMES[0], type="LOG")
    for name in ("sender_name", "sender.name"):
        listed = api.get("/api/v1/statuses/", {name: padded}).json()
        assert [row["sender"]["name"] for row in listed["result"]] == [padded] * len(ODD_TIMES)
        assert api.get("/api/v1/statuses/count", {name: padded}).json() == len(ODD_TIMES)
        posted = api.post("/api/v1/statuses/list", {name: padded}, format="json").json()
        assert posted == listed
        assert api.get("/api/v1/statuses/", {name: " padded"}).json() == {"count": 0, "result": []}
    stripped = api.get("/api/v1/statuses/", {"sender.name": padded.strip()}).json()
    assert [row["sender"]["name"] for row in stripped["result"]] == [padded.strip()]
