"""The CLI prints every timestamp one way, whatever format the controller answered in."""

import io

import pytest

from fedplane.cli.output import format_cell, format_timestamp, print_document


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T04:52:08.123456+00:00",
        "2026-12-01T04:52:08Z",
        "2026-12-01T06:52:08+02:00",
        "2026-12-01 04:52:08",
        "Tue, 01 Dec 2026 04:52:08 GMT",
    ],
)
def test_every_timestamp_format_prints_to_the_second_in_utc(text: str) -> None:
    assert format_timestamp(text) == "2026-12-01 04:52:08 UTC"
    assert format_cell(text) == "2026-12-01 04:52:08 UTC"


@pytest.mark.parametrize("text", ["alice", "2026-13-45T00:00:00", "12", "Finished", ""])
def test_other_strings_are_printed_as_they_are(text: str) -> None:
    assert format_timestamp(text) is None
    assert format_cell(text) == text


def test_a_document_prints_its_timestamps_the_same_way() -> None:
    out = io.StringIO()
    print_document({"committed_at": "Tue, 01 Dec 2026 04:52:08 GMT", "name": "seed"}, out)
    assert out.getvalue().splitlines() == ["committed_at  2026-12-01 04:52:08 UTC", "name          seed"]
