"""The round report contract (fedplane.roundreport): wire shape, round trip and refusals."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from fedplane.roundreport import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    ReportField,
    ReportStatus,
    ReportStatusValue,
    RoundData,
    RoundDataKey,
    RoundReport,
    RoundReportError,
    RoundReportJSON,
    Timing,
    Timings,
    round_report_path,
)

CONFIG = {"round_id": "3", "session_id": "s1", "task": "training", "round_attempt": "0"}


def success() -> RoundReport:
    return RoundReport(
        combiner="combiner-1",
        status=ReportStatus.SUCCESS,
        reason="",
        model_id="b2a7c1e0-0000-4000-8000-000000000001",
        num_examples=1234,
        participants=("client-a", "client-b"),
        timings=Timings(time_combination=1.25, time_model_load=0.5, time_model_aggregation=0.125),
        data=RoundData(nr_expected_updates=2, nr_required_updates=2, timeout=180.0, nr_aggregated_models=2),
        config=CONFIG,
    )


def test_the_wire_bytes_are_those_combiners_sent_before_the_contract() -> None:
    # Exactly what combiner_node/rounds.py built by hand before: a controller of either age reads it.
    before = {
        "combiner": "combiner-1",
        "status": "Success",
        "reason": "",
        "model_id": "b2a7c1e0-0000-4000-8000-000000000001",
        "num_examples": 1234,
        "participants": ["client-a", "client-b"],
        "timings": {"time_combination": 1.25, "time_model_load": 0.5, "time_model_aggregation": 0.125},
        "data": {
            "nr_expected_updates": 2,
            "nr_required_updates": 2,
            "timeout": 180.0,
            "nr_aggregated_models": 2,
        },
        "config": CONFIG,
    }
    assert json.dumps(success().to_json()) == json.dumps(before)
    failed = RoundReport(
        combiner="combiner-1",
        status=ReportStatus.FAILED,
        reason="too few clients: 0 online, 1 required",
        model_id=None,
        num_examples=0,
        participants=(),
        timings={},
        data=RoundData(nr_expected_updates=0, nr_required_updates=0, timeout=180.0, nr_aggregated_models=0),
        config=CONFIG,
    )
    assert json.dumps(failed.to_json()) == (
        '{"combiner": "combiner-1", "status": "Failed", "reason": "too few clients: 0 online, 1 required", '
        '"model_id": null, "num_examples": 0, "participants": [], "timings": {}, '
        '"data": {"nr_expected_updates": 0, "nr_required_updates": 0, "timeout": 180.0, '
        '"nr_aggregated_models": 0}, '
        '"config": {"round_id": "3", "session_id": "s1", "task": "training", "round_attempt": "0"}}'
    )


def test_to_json_is_plain_json_types() -> None:
    doc = success().to_json()
    assert type(doc["status"]) is str and doc["status"] == "Success"
    assert type(doc["participants"]) is list
    assert all(type(doc[name]) is dict for name in ("timings", "data", "config"))
    assert all(type(key) is str for key in doc)


def test_round_trip() -> None:
    report = success()
    again = RoundReport.from_json(json.loads(json.dumps(report.to_json())))
    assert again == report
    assert again.to_json() == report.to_json()
    assert again.status is ReportStatus.SUCCESS
    assert again.round_id == "3"


def test_missing_optional_keys_take_their_defaults() -> None:
    report = RoundReport.from_json({"combiner": "c", "status": "Failed"})
    assert report.to_json() == {
        "combiner": "c",
        "status": "Failed",
        "reason": "",
        "model_id": None,
        "num_examples": 0,
        "participants": [],
        "timings": {},
        "data": {},
        "config": {},
    }
    assert report.round_id is None


@pytest.mark.parametrize("status", ["Done", "success", "SUCCESS", "", None, 1, True, ["Success"]])
def test_an_unknown_status_is_refused(status: Any) -> None:
    with pytest.raises(RoundReportError) as refused:
        RoundReport.from_json({"combiner": "c", "status": status})
    assert refused.value.field == "status"
    assert "'Success', 'Failed'" in str(refused.value)
    with pytest.raises(RoundReportError):
        RoundReport(combiner="c", status=status)


@pytest.mark.parametrize("missing", [name.value for name in REQUIRED_FIELDS])
def test_a_missing_required_key_is_refused(missing: str) -> None:
    doc = {"combiner": "c", "status": "Success"}
    del doc[missing]
    with pytest.raises(RoundReportError) as refused:
        RoundReport.from_json(doc)
    assert refused.value.field == missing and "required" in str(refused.value)


def test_an_unknown_key_is_refused() -> None:
    with pytest.raises(RoundReportError) as refused:
        RoundReport.from_json({"combiner": "c", "status": "Success", "evil": 1, "also": 2})
    assert refused.value.field == "also" and "also, evil" in str(refused.value)


@pytest.mark.parametrize("doc", [None, [], "report", 5])
def test_a_body_that_is_not_an_object_is_refused(doc: Any) -> None:
    with pytest.raises(RoundReportError, match="JSON object"):
        RoundReport.from_json(doc)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("combiner", ""),
        ("combiner", 5),
        ("reason", None),
        ("model_id", 7),
        ("num_examples", -1),
        ("num_examples", 1.5),
        ("num_examples", "3"),
        ("num_examples", True),
        ("participants", "alice"),
        ("participants", ["alice", 2]),
        ("participants", ("alice",)),  # JSON has no tuples
        ("timings", []),
        ("timings", {"time_combination": "fast"}),
        ("timings", {"time_model_load": -1.0}),
        ("timings", {"time_model_load": float("nan")}),
        ("data", {"nr_aggregated_models": True}),
        ("data", "x"),
        ("config", None),
    ],
)
def test_a_mistyped_field_is_refused(key: str, value: Any) -> None:
    with pytest.raises(RoundReportError) as refused:
        RoundReport.from_json({"combiner": "c", "status": "Success", key: value})
    assert refused.value.field.split(".")[0] == key


def test_unknown_keys_inside_timings_and_data_pass_through() -> None:
    doc = {
        "combiner": "c",
        "status": "Success",
        "timings": {"time_combination": 1, "time_upload": "n/a"},
        "data": {"nr_aggregated_models": 1, "note": [1, 2]},
    }
    assert RoundReport.from_json(doc).to_json()["timings"] == doc["timings"]
    assert RoundReport.from_json(doc).to_json()["data"] == doc["data"]


def test_the_report_is_frozen_and_its_copies_are_its_own() -> None:
    config = dict(CONFIG)
    participants = ["a"]
    report = RoundReport(combiner="c", status="Success", participants=participants, config=config)
    config["round_id"] = "99"
    participants.append("b")
    assert report.round_id == "3" and report.participants == ("a",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = ReportStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.config["round_id"] = "4"  # type: ignore[index]
    report.to_json()["config"]["round_id"] = "5"
    assert report.round_id == "3"


def test_names_agree_everywhere() -> None:
    names = [name.value for name in ReportField]
    assert [f.name for f in dataclasses.fields(RoundReport)] == names
    assert list(RoundReportJSON.__annotations__) == names
    assert list(success().to_json()) == names
    assert set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS) == set(ReportField)
    assert not set(REQUIRED_FIELDS) & set(OPTIONAL_FIELDS)
    assert set(typing.get_args(ReportStatusValue)) == {status.value for status in ReportStatus}
    assert list(Timings.__annotations__) == [key.value for key in Timing]
    assert list(RoundData.__annotations__) == [key.value for key in RoundDataKey]


def test_the_route() -> None:
    assert round_report_path("12") == "/api/v1/rounds/12/reports"
