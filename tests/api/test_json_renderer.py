"""The API's JSON renderer writes what DRF's JSONRenderer writes: byte for byte for everything but
floats, and the same values for those."""

import datetime as dt
import decimal
import json
import uuid

from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.renderers import JSONRenderer

from controlplane.api.renderers import FastJSONRenderer

FAST, DRF = FastJSONRenderer(), JSONRenderer()

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
scalars_without_floats = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | text
documents_without_floats = st.recursive(
    scalars_without_floats,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)
documents = st.recursive(
    scalars_without_floats | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(documents_without_floats)
def test_the_same_bytes_as_drf(document: object) -> None:
    assert FAST.render(document) == DRF.render(document)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_the_same_values_as_drf(document: object) -> None:
    # Wrapped, since a bare None renders as an empty body.
    assert json.loads(FAST.render({"d": document})) == json.loads(DRF.render({"d": document}))


def test_values_json_does_not_have_are_spelled_as_drf_spells_them() -> None:
    document = {
        "committed_at": dt.datetime(2026, 12, 2, 13, 5, 1, 250, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 12, 2, 13, 5, 1),
        "day": dt.date(2026, 12, 2),
        "at": dt.time(13, 5),
        "took": dt.timedelta(seconds=1.5),
        "ratio": decimal.Decimal("0.25"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "label": gettext_lazy("Finished"),
        "blob": b"bytes",
        "tuple": (1, "two"),
        1: "an integer key",
    }
    assert FAST.render(document) == DRF.render(document)


def test_separators_are_escaped_as_drf_escapes_them() -> None:
    document = {"line": "a\u2028b\u2029c", "é": "ü"}
    assert FAST.render(document) == DRF.render(document)
    assert b"\\u2028" in FAST.render(document)


def test_what_orjson_refuses_is_written_by_drf() -> None:
    huge = {"big": 2**70, "list": [2**65]}
    assert FAST.render(huge) == DRF.render(huge)


def test_an_indented_answer_keeps_drf_layout() -> None:
    document = {"count": 1, "result": [{"a": 1}]}
    assert FAST.render(document, "application/json; indent=4") == DRF.render(
        document, "application/json; indent=4"
    )
    assert FAST.render(None) == b""
