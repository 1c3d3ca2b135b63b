"""The OpenAPI schema (/api/schema/) describes what the routes really answer.

Real answers from a populated network are held to the schema of their operation and status code:
every key of an object is declared (or the object is declared open), every required key is there,
and every value has the declared type. The checker is stricter than JSON Schema on purpose: an
object schema that does not say `additionalProperties` is closed.
"""

from typing import Any

import pytest

from .factories import Network

pytestmark = pytest.mark.django_db

V1_RESOURCES = ["clients", "combiners", "models", "packages", "rounds", "sessions", "statuses", "validations"]
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@pytest.fixture
def populated(populated_once: Network, db: None) -> Network:
    return populated_once


@pytest.fixture(scope="module")
def openapi(django_db_setup: None, django_db_blocker: Any) -> dict[str, Any]:
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


class Schema:
    """One schema document and the checks of values against its parts."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            schema = self.document["components"]["schemas"][name]
        return schema

    def response(self, path: str, method: str, status: int) -> dict[str, Any]:
        operation = self.document["paths"][path][method]
        declared = operation["responses"]
        assert str(status) in declared, (
            f"{method.upper()} {path} answered {status}, not in {sorted(declared)}"
        )
        return self.resolve(declared[str(status)]["content"]["application/json"]["schema"])

    def errors(self, value: Any, schema: dict[str, Any], at: str = "$") -> list[str]:
        """Where `value` departs from `schema`; empty when it conforms."""
        schema = self.resolve(schema)
        if value is None:
            return [] if schema.get("nullable") else [f"{at}: null where the schema does not allow it"]
        for part in schema.get("allOf", []):
            found = self.errors(value, part, at)
            if found:
                return found
        if "oneOf" in schema:
            matching = [alt for alt in schema["oneOf"] if not self.errors(value, alt, at)]
            if len(matching) != 1:
                return [f"{at}: matches {len(matching)} of the schema's oneOf alternatives, not one"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{at}: {value!r} is not one of {schema['enum']}"]
        kind = schema.get("type")
        if kind is not None:
            is_bool = isinstance(value, bool)
            if not isinstance(value, JSON_TYPES[kind]) or (is_bool and kind != "boolean"):
                return [f"{at}: {type(value).__name__} {value!r} where the schema says {kind}"]
        if isinstance(value, dict):
            return self._object_errors(value, schema, at)
        if isinstance(value, list) and "items" in schema:
            return [
                error
                for index, item in enumerate(value)
                for error in self.errors(item, schema["items"], f"{at}[{index}]")
            ]
        return []

    def _object_errors(self, value: dict[str, Any], schema: dict[str, Any], at: str) -> list[str]:
        if "oneOf" in schema or "allOf" in schema:
            return []  # checked against the alternative that matched
        if "type" not in schema and "properties" not in schema:
            return []  # any JSON value
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", False)
        found = [
            f"{at}: required key {key!r} missing" for key in schema.get("required", []) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                found += self.errors(item, properties[key], f"{at}.{key}")
            elif extra is False:
                found.append(f"{at}: key {key!r} is not declared")
            elif isinstance(extra, dict) and extra:
                found += self.errors(item, extra, f"{at}.{key}")
        return found


@pytest.fixture
def schema(openapi: dict[str, Any]) -> Schema:
    return Schema(openapi)


def answer(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    return response.json()


# ---------------------------------------------------------------- /api/v1/


def item_schema(schema: Schema, resource: str) -> dict[str, Any]:
    page = schema.response(f"/api/v1/{resource}/", "get", 200)
    return schema.resolve(schema.resolve(page["properties"]["result"])["items"])


@pytest.mark.parametrize("resource", V1_RESOURCES)
def test_list_and_detail_answers_match_their_schema(
    populated: Network, schema: Schema, resource: str
) -> None:
    api = populated.api
    page = answer(api.get(f"/api/v1/{resource}/"))
    assert page["result"], f"the populated network has no {resource}"
    assert schema.errors(page, schema.response(f"/api/v1/{resource}/", "get", 200)) == []
    posted = answer(api.post(f"/api/v1/{resource}/list", {}, format="json"))
    assert schema.errors(posted, schema.response(f"/api/v1/{resource}/list/", "post", 200)) == []

    detail = answer(api.get(f"/api/v1/{resource}/{page['result'][0]['id']}"))
    assert detail == page["result"][0]
    assert schema.errors(detail, schema.response(f"/api/v1/{resource}/{{id}}/", "get", 200)) == []


@pytest.mark.parametrize("resource", V1_RESOURCES)
def test_every_key_of_an_item_is_declared_and_every_declared_key_is_answered(
    populated: Network, schema: Schema, resource: str
) -> None:
    declared = item_schema(schema, resource)
    alternatives = [schema.resolve(alt) for alt in declared.get("oneOf", [declared])]
    typed = alternatives[0]
    assert set(typed["required"]) == set(typed["properties"]), "a v1 document always has all its keys"
    for doc in answer(populated.api.get(f"/api/v1/{resource}/"))["result"]:
        assert set(doc) == set(typed["properties"])


@pytest.mark.parametrize("resource", ["statuses", "validations"])
def test_raw_documents_match_the_schema_alternative(
    populated: Network, schema: Schema, resource: str
) -> None:
    page = answer(populated.api.get(f"/api/v1/{resource}/", HTTP_X_SKIP_TYPING="true"))
    assert "sessionId" in page["result"][0]
    assert schema.errors(page, schema.response(f"/api/v1/{resource}/", "get", 200)) == []


def test_lineage_is_a_bare_list_of_model_documents(populated: Network, schema: Schema) -> None:
    child = populated.made["child"]["model"]
    lineage = answer(populated.api.get(f"/api/v1/models/{child}/ancestors", {"include_self": "true"}))
    assert [doc["model"] for doc in lineage] == [child, populated.made["seed"]["model"]]
    assert schema.errors(lineage, schema.response("/api/v1/models/{id}/ancestors/", "get", 200)) == []


def test_error_answers_match_their_schema(populated: Network, schema: Schema) -> None:
    missing = answer(populated.api.get("/api/v1/clients/no-such-client"), 404)
    assert schema.errors(missing, schema.response("/api/v1/clients/{id}/", "get", 404)) == []
    refused = answer(populated.api.get("/api/v1/clients/", HTTP_X_SORT_KEY="nope"), 400)
    assert set(refused) == {"success", "message", "errors"}
    assert schema.errors(refused, schema.response("/api/v1/clients/", "get", 400)) == []


def test_the_checker_refuses_what_departs_from_a_schema(schema: Schema) -> None:
    client = {"$ref": "#/components/schemas/Client"}
    good = {
        "id": "1",
        "name": "a",
        "combiner": None,
        "combiner_preferred": False,
        "ip": "",
        "status": "online",
        "updated_at": "2024-05-22 14:49:40.123456",
        "last_seen": None,
    }
    assert schema.errors(good, client) == []
    assert schema.errors({**good, "extra": 1}, client) == ["$: key 'extra' is not declared"]
    assert schema.errors({k: v for k, v in good.items() if k != "ip"}, client) == [
        "$: required key 'ip' missing"
    ]
    assert schema.errors({**good, "name": None}, client) == [
        "$.name: null where the schema does not allow it"
    ]
    assert schema.errors({**good, "id": 1}, client) == ["$.id: int 1 where the schema says string"]
    assert schema.errors({**good, "combiner_preferred": True}, client) != []
    assert schema.errors({**good, "status": "lost"}, client) != []


# ---------------------------------------------------------------- FEDn's flat routes

LEGACY_CALLS = [
    ("/list_clients/", "/list_clients", {}),
    ("/list_combiners/", "/list_combiners", {}),
    ("/get_combiner/", "/get_combiner", {"combiner": "combiner-1"}),
    ("/list_models/", "/list_models", {"include_active": "true"}),
    ("/get_model_trail/", "/get_model_trail", {}),
    ("/get_latest_model/", "/get_latest_model", {}),
    ("/get_initial_model/", "/get_initial_model", {}),
    ("/get_package/", "/get_package", {}),
    ("/list_compute_packages/", "/list_compute_packages", {"include_active": "true"}),
    ("/list_sessions/", "/list_sessions", {}),
    ("/get_session/", "/get_session", {"session_id": "session-a"}),
    ("/list_rounds/", "/list_rounds", {}),
    ("/get_round/", "/get_round", {"round_id": "1"}),
    ("/get_round/", "/get_round", {"round_id": "404"}),
    ("/get_events/", "/get_events", {}),
    ("/list_validations/", "/list_validations", {}),
    ("/get_controller_status/", "/get_controller_status", {}),
    ("/get_client_config/", "/get_client_config", {}),
    ("/get_plot_data/", "/get_plot_data", {}),
    ("/get_active_clients/", "/get_active_clients", {"combiner": "combiner-1"}),
]


@pytest.mark.parametrize(
    ("operation", "url", "params"), LEGACY_CALLS, ids=[f"{c[1]}{c[2]}" for c in LEGACY_CALLS]
)
def test_legacy_answers_match_their_schema(
    populated: Network, schema: Schema, operation: str, url: str, params: dict[str, str]
) -> None:
    response = populated.api.get(url, params)
    assert response.status_code == 200, response.content
    assert schema.errors(response.json(), schema.response(operation, "get", 200)) == []


def test_legacy_model_lineage_and_failures_match_their_schema(populated: Network, schema: Schema) -> None:
    api = populated.api
    child = populated.made["child"]["model"]
    ancestors = answer(api.get("/get_model_ancestors", {"model": child}))
    assert ancestors["result"][0]["model"] == populated.made["seed"]["model"]
    assert schema.errors(ancestors, schema.response("/get_model_ancestors/", "get", 200)) == []
    no_ancestors = answer(api.get("/get_model_ancestors", {"model": populated.made["seed"]["model"]}))
    assert no_ancestors["success"] is False
    assert schema.errors(no_ancestors, schema.response("/get_model_ancestors/", "get", 200)) == []
    unknown = answer(api.get("/get_model", {"model": "no-such-model"}), 404)
    assert schema.errors(unknown, schema.response("/get_model/", "get", 404)) == []


def test_legacy_writes_match_their_schema(populated: Network, schema: Schema) -> None:
    api = populated.api
    body = {
        "combiner_id": "combiner-9",
        "address": "c9.local",
        "fqdn": None,
        "port": 12089,
        "secure_grpc": False,
    }
    registered = answer(api.post("/add_combiner", body, format="json"))
    assert schema.errors(registered, schema.response("/add_combiner/", "post", 200)) == []
    assigned = answer(
        api.post("/add_client", {"client_id": "client-z", "preferred_combiner": False}, format="json")
    )
    assert schema.errors(assigned, schema.response("/add_client/", "post", 200)) == []
    refused = answer(api.post("/add_client", {"client_id": "client-z", "nope": 1}, format="json"), 400)
    assert schema.errors(refused, schema.response("/add_client/", "post", 400)) == []
    counts = answer(api.post("/list_combiners_data", {"combiners": None}, format="json"))
    assert schema.errors(counts, schema.response("/list_combiners_data/", "post", 200)) == []
    # A start FEDn's preconditions refuse (the id is taken) is a 200 with success false.
    start = answer(api.post("/start_session", {"session_id": "session-a"}, format="json"))
    assert start["success"] is False
    assert schema.errors(start, schema.response("/start_session/", "post", 200)) == []


def test_every_flat_route_is_documented_and_tagged(schema: Schema) -> None:
    from controlplane.urls import LEGACY_ROUTES

    for name in LEGACY_ROUTES:
        operations = schema.document["paths"][f"/{name}/"]
        for method, operation in operations.items():
            assert operation["tags"] == ["FEDn 0.9.5 routes"], (name, method)
            for status, declared in operation["responses"].items():
                content = declared.get("content", {})
                for media in content.values():
                    # No free-form answer: every body names its shape.
                    assert media["schema"] != {"type": "object", "additionalProperties": {}}, (name, status)


def test_refusals_of_auth_match_their_schema(populated: Network, schema: Schema, settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = "test-secret"
    for operation, url in [("/list_clients/", "/list_clients"), ("/api/v1/models/", "/api/v1/models/")]:
        refused = answer(populated.api.get(url), 401)
        assert schema.errors(refused, schema.response(operation, "get", 401)) == []


def test_a_flat_route_without_its_schema_is_refused() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.decorators import api_view

    from controlplane.urls import documented

    @api_view(["GET"])
    def undocumented(request: Any) -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="undocumented"):
        documented(undocumented)


def test_an_answer_or_failure_takes_a_success_that_also_fits_the_loose_error_shape(
    openapi: dict[str, Any],
) -> None:
    """A started session's answer ({success, message, config}) fits the Error shape too, which
    declares no closed set of keys; under "oneOf" a valid answer would be refused."""
    import jsonschema

    components = openapi["components"]["schemas"]
    answer_or_failure = {
        name: component for name, component in components.items() if name.endswith("OrFailure")
    }
    assert answer_or_failure, "no answer-or-failure component"
    assert all("anyOf" in c and "oneOf" not in c for c in answer_or_failure.values())

    started = {"success": True, "message": "Session started successfully.", "config": {"rounds": 1}}
    # The components sit where OpenAPI's `#/components/schemas/X` references look for them.
    document = {**components["SessionStartedOrFailure"], "components": {"schemas": components}}
    jsonschema.validate(started, document)
    jsonschema.validate({"success": False, "message": "No clients."}, document)
