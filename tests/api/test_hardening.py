"""Text no column can store, outside JSON bodies: the query string, the path, headers and form fields.

PostgreSQL refuses NUL in text and UTF-8 cannot encode an unpaired surrogate; either used to reach
the database as a 500 (e.g. `?name=%00` on PostgreSQL). controlplane/api/hardening.py and the form
parsers of controlplane/api/parsers.py refuse them with a 400 JSON answer before any view runs.
"""

from typing import Any
from urllib.parse import urlencode

import pytest

from .factories import Network, model_bytes, package_bytes, upload
from .test_bad_input import refused, snapshot

pytestmark = pytest.mark.django_db

UNSTORABLE_MESSAGE = "NUL characters and unpaired surrogates"


@pytest.fixture
def ready(network: Network) -> Network:
    network.package()
    network.made["seed"] = network.seed()
    network.combiner("combiner-1")
    network.client("client-a")
    network.session("s1")
    return network


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/api/v1/clients/", {"name": "a\x00b"}),
        ("/api/v1/sessions/", {"session_id": "\x00"}),
        ("/api/v1/models/", {"model": "\x00"}),
        ("/list_clients", {"name": "\x00"}),
        ("/api/v1/models/", {"limit": "1\x00"}),
        ("/api/v1/clients/", {"na\x00me": "x"}),
    ],
)
def test_nul_in_the_query_string_is_400(ready: Network, url: str, params: dict[str, str]) -> None:
    assert "query string" in refused(ready.api.get(url, params), 400)


@pytest.mark.parametrize("url", ["/api/v1/models/%00/", "/api/v1/sessions/s%001/", "/get_session/%00"])
def test_nul_in_the_path_is_400(ready: Network, url: str) -> None:
    assert "the path" in refused(ready.api.get(url), 400)


@pytest.mark.parametrize(
    "header", ["HTTP_X_SORT_KEY", "HTTP_X_SORT_ORDER", "HTTP_X_LIMIT", "HTTP_AUTHORIZATION"]
)
def test_nul_in_a_header_is_400(ready: Network, header: str) -> None:
    message = refused(ready.api.get("/api/v1/clients/", **{header: "name\x00"}), 400)
    assert UNSTORABLE_MESSAGE in message and "header" in message


def test_a_post_with_nul_in_the_query_string_stores_nothing(ready: Network, artifact_store: Any) -> None:
    before = snapshot(artifact_store)
    response = ready.api.post("/api/v1/sessions/?x=%00", {"session_id": "s2"}, format="json")
    refused(response, 400)
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("/set_package", {"helper": "numpyhelper", "name": "p\x00"}),
        ("/set_package", {"helper": "numpy\x00helper"}),
        ("/set_package", {"helper": "numpyhelper", "description": "\x00"}),
        ("/set_initial_model", {"name": "seed\x00"}),
    ],
)
def test_nul_in_a_multipart_field_is_400_and_nothing_is_stored(
    ready: Network, artifact_store: Any, url: str, fields: dict[str, str]
) -> None:
    data = package_bytes() if url == "/set_package" else model_bytes()
    before = snapshot(artifact_store)
    response = ready.api.post(url, {**fields, "file": upload("upload.bin", data)}, format="multipart")
    assert "form fields" in refused(response, 400)
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/add_client", "client_id=a%00b&name=a%00b"),
        ("/start_session", "session_id=s%00&rounds=1"),
        ("/api/v1/clients/list", "name=%00"),
        ("/api/v1/sessions/count", "session_id=%00"),
        ("/set_active_package", "id=%00"),
    ],
)
def test_nul_in_a_urlencoded_form_is_400_and_nothing_is_stored(
    ready: Network, artifact_store: Any, url: str, body: str
) -> None:
    before = snapshot(artifact_store)
    response = ready.api.post(url, body, content_type="application/x-www-form-urlencoded")
    assert "form fields" in refused(response, 400)
    assert snapshot(artifact_store) == before


def test_ordinary_form_and_query_text_still_works(ready: Network) -> None:
    assert ready.api.get("/api/v1/clients/", {"name": "client-a"}).json()["count"] == 1
    response = ready.api.post(
        "/set_package", {"helper": "numpyhelper", "name": "p2", "file": upload("p.tgz", package_bytes())}
    )
    assert response.status_code == 200, response.content


# ---------------------------------------------------------------- integer filters

NOT_AN_INTEGER = ["99999999999999999999", "-99999999999999999999", "²", "٣", "1_000", "12080.0", "0x10"]


@pytest.mark.parametrize("value", NOT_AN_INTEGER)
def test_an_integer_filter_takes_ascii_digits_within_the_database_range(ready: Network, value: str) -> None:
    assert "port" in refused(ready.api.get("/api/v1/combiners/", {"port": value}), 400)


@pytest.mark.parametrize("value", NOT_AN_INTEGER)
def test_an_any_of_integer_filter_refuses_any_value_past_the_range(ready: Network, value: str) -> None:
    # Posted as any-of, an out-of-range value used to reach the database: a 500.
    response = ready.api.post("/api/v1/combiners/list", {"port": f"12080,{value}"}, format="json")
    assert "port" in refused(response, 400)


def test_integer_filters_still_match(ready: Network) -> None:
    assert ready.api.get("/api/v1/combiners/", {"port": "12080"}).json()["count"] == 1
    assert ready.api.get("/api/v1/combiners/", {"port": "1"}).json()["count"] == 0
    posted = ready.api.post("/api/v1/combiners/list", {"port": "1,12080"}, format="json")
    assert posted.json()["count"] == 1


# ---------------------------------------------------------------- date filters


@pytest.mark.parametrize(
    "value",
    [
        "2024-13-45",
        "2024-02-30",
        "0000-01-01",
        "2024-05-22T25:00",
        "2024-02-30 10:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/sessions/", "/api/v1/models/", "/api/v1/clients/"])
def test_a_well_formed_date_that_does_not_exist_is_400(ready: Network, url: str, value: str) -> None:
    # parse_date and parse_datetime raise on these, which used to be a 500.
    field = "updated_at" if url == "/api/v1/clients/" else "committed_at"
    assert "not a date or timestamp" in refused(ready.api.get(url, {field: value}), 400)


def test_a_posted_date_filter_that_does_not_exist_is_400(ready: Network, artifact_store: Any) -> None:
    before = snapshot(artifact_store)
    response = ready.api.post("/api/v1/sessions/list", {"committed_at": "2024-13-45"}, format="json")
    assert "not a date or timestamp" in refused(response, 400)
    assert snapshot(artifact_store) == before


# ---------------------------------------------------------------- JSON inside a form field


@pytest.mark.parametrize(
    "config",
    ['{"aggregator": "fedavg\\u0000"}', '{"\\ud800": 1}', "[" * 100_000],
    ids=["nul", "surrogate", "nested"],
)
@pytest.mark.parametrize("content", ["multipart", "urlencoded"])
def test_json_text_in_a_form_field_has_the_json_parsers_bounds(
    ready: Network, artifact_store: Any, config: str, content: str
) -> None:
    # session_config posted as a form field is JSON text the serializer decodes: NUL in it
    # reached PostgreSQL's jsonb as a 500, deep nesting was a RecursionError.
    before = snapshot(artifact_store)
    fields = {"session_id": "s-form", "session_config": config}
    if content == "multipart":
        response = ready.api.post("/api/v1/sessions/", fields, format="multipart")
    else:
        body = urlencode(fields)
        response = ready.api.post("/api/v1/sessions/", body, content_type="application/x-www-form-urlencoded")
    assert "session_config" in refused(response, 400)
    assert snapshot(artifact_store) == before
