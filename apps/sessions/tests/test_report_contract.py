"""The controller's end of the round report contract (fedplane.roundreport)."""

from typing import Any

import pytest
from django.urls import resolve

from apps.sessions.api.serializers import RoundReportSerializer
from fedplane.roundreport import (
    ReportField,
    ReportStatus,
    RoundData,
    RoundReport,
    Timings,
    round_report_path,
)


def combiner_report(status: ReportStatus = ReportStatus.SUCCESS) -> RoundReport:
    return RoundReport(
        combiner="combiner-1",
        status=status,
        model_id="b2a7c1e0-0000-4000-8000-000000000001" if status == ReportStatus.SUCCESS else None,
        num_examples=30,
        participants=("alice", "bob"),
        timings=Timings(time_combination=0.5, time_model_load=0.25, time_model_aggregation=0.125),
        data=RoundData(nr_expected_updates=2, nr_required_updates=2, timeout=180.0, nr_aggregated_models=2),
        config={"round_id": "7", "session_id": "s1", "round_attempt": "0"},
    )


def test_the_serializer_takes_names_and_statuses_from_the_contract() -> None:
    fields = RoundReportSerializer().fields
    assert list(fields) == [name.value for name in ReportField]
    assert list(fields[ReportField.STATUS].choices) == [status.value for status in ReportStatus]
    assert [name for name, field in fields.items() if field.required] == ["combiner", "status"]


@pytest.mark.parametrize("status", list(ReportStatus))
def test_what_a_combiner_sends_is_what_is_stored(status: ReportStatus) -> None:
    report = combiner_report(status)
    payload = RoundReportSerializer(data=report.to_json())
    assert payload.is_valid(), payload.errors
    assert payload.validated_data == report.to_json()
    assert list(payload.validated_data) == list(report.to_json())


def test_old_loose_forms_are_still_taken_and_stored_in_the_contract_form() -> None:
    payload = RoundReportSerializer(data={"combiner": " c ", "status": "Failed", "num_examples": 3.0})
    assert payload.is_valid(), payload.errors
    assert payload.validated_data == RoundReport(combiner="c", status="Failed", num_examples=3).to_json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"combiner": "c", "status": "Done"}, "status"),
        ({"status": "Success"}, "combiner"),
        ({"combiner": "c", "status": "Success", "evil": 1}, "evil"),
        (
            {"combiner": "c", "status": "Success", "timings": {"time_combination": "fast"}},
            "timings.time_combination",
        ),
        (
            {"combiner": "c", "status": "Success", "data": {"nr_aggregated_models": -1}},
            "data.nr_aggregated_models",
        ),
    ],
)
def test_the_contract_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    payload = RoundReportSerializer(data=body)
    assert not payload.is_valid()
    assert field in payload.errors, payload.errors


def test_the_contract_route_is_the_controller_route() -> None:
    match = resolve(round_report_path("7"))
    assert match.kwargs == {"pk": "7"}
    assert getattr(match.func, "actions", {}).get("post") == "reports"
