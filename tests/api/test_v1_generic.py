"""One generic suite for every /api/v1/<entity>/ resource (spec §1.3), declared per entity.

Each `Entity` names its route, how to resolve one object by its natural key, its sort keys and
the spec's documented filters with every spelling FEDn's clients use; the tests below run the
same checks on all eight.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.apps import apps
from django.utils import timezone

from .factories import Network

pytestmark = pytest.mark.django_db

# A list call may not cost more queries than this, however many rows it returns.
MAX_LIST_QUERIES = 6
TODAY = timezone.now().date().isoformat()

Value = str | Callable[[Network], str]


@dataclass(frozen=True)
class FilterCase:
    """A documented filter: every spelling, a value, and the natural keys that value selects."""

    names: tuple[str, ...]
    value: Value
    expected: set[str]
    # A second value whose union with the first is posted as "a,b" (FEDn's any-of).
    other_value: Value | None = None
    other_expected: set[str] = field(default_factory=set)
    miss: str = "no-such-value"

    def resolve(self, network: Network, value: Value | None = None) -> str:
        value = self.value if value is None else value
        return value(network) if callable(value) else value


@dataclass(frozen=True)
class Entity:
    route: str
    model: str  # app_label.ModelName
    # The doc field that identifies an object in these tests, and whether GET /<e>/<value> takes it.
    key_field: str
    key_resolves: bool
    sort_keys: tuple[str, ...]
    # A sort key with distinct values in `populated`, and how to read it from a doc.
    sort_probe: tuple[str, Callable[[dict], Any]]
    filters: tuple[FilterCase, ...]

    @property
    def url(self) -> str:
        return f"/api/v1/{self.route}/"

    def keys(self, docs: list[dict]) -> list[str]:
        return [str(doc[self.key_field]) for doc in docs]

    def __str__(self) -> str:
        return self.route


def seed_uuid(network: Network) -> str:
    return network.made["seed"]["model"]


def child_uuid(network: Network) -> str:
    return network.made["child"]["model"]


ENTITIES = [
    Entity(
        route="clients",
        model="clients.Client",
        key_field="name",
        key_resolves=True,
        sort_keys=("last_seen", "updated_at", "name", "status", "combiner", "ip"),
        sort_probe=("name", lambda doc: doc["name"]),
        filters=(
            FilterCase(("name",), "client-a", {"client-a"}, "client-c", {"client-a", "client-c"}),
            FilterCase(
                ("combiner",),
                "combiner-1",
                {"client-a", "client-b"},
                "combiner-2",
                {"client-a", "client-b", "client-c"},
            ),
            FilterCase(
                ("combiner_preferred", "combinerPreferred"),
                "combiner-2",
                {"client-c"},
                "combiner-1",
                {"client-a", "client-b", "client-c"},
            ),
            FilterCase(("ip",), "127.0.0.1", {"client-a", "client-b", "client-c"}),
            FilterCase(("status",), "offline", {"client-b"}, "online", {"client-a", "client-b", "client-c"}),
            FilterCase(
                ("updated_at", "updatedAt"), TODAY, {"client-a", "client-b", "client-c"}, miss="1999-01-01"
            ),
        ),
    ),
    Entity(
        route="combiners",
        model="combiners.Combiner",
        key_field="name",
        key_resolves=True,
        sort_keys=("updated_at", "name", "address", "ip", "port"),
        sort_probe=("name", lambda doc: doc["name"]),
        filters=(
            FilterCase(("name",), "combiner-2", {"combiner-2"}, "combiner-1", {"combiner-1", "combiner-2"}),
            FilterCase(
                ("address",),
                "combiner-2.local",
                {"combiner-2"},
                "combiner-1.local",
                {"combiner-1", "combiner-2"},
            ),
            FilterCase(("ip",), "127.0.0.1", {"combiner-1", "combiner-2"}),
        ),
    ),
    Entity(
        route="models",
        model="mlmodels.Model",
        key_field="model",
        key_resolves=True,
        sort_keys=("committed_at", "model", "session_id"),
        sort_probe=("model", lambda doc: doc["model"]),
        filters=(
            FilterCase(("model", "model_id"), seed_uuid, {"seed"}, child_uuid, {"seed", "child"}),
            FilterCase(("parent_model", "parentModel"), seed_uuid, {"child"}),
            FilterCase(("session_id", "sessionId"), "session-a", {"child"}),
        ),
    ),
    Entity(
        route="packages",
        model="packages.ComputePackage",
        key_field="name",
        key_resolves=False,  # packages resolve by their uuid (the doc's "id"), checked separately
        sort_keys=("committed_at", "name", "file_name", "helper", "id"),
        sort_probe=("name", lambda doc: doc["name"]),
        filters=(
            FilterCase(("name",), "digits", {"digits"}, "old", {"digits", "old"}),
            FilterCase(("description",), "first upload", {"old"}),
            FilterCase(("file_name", "fileName"), "old.tgz", {"old"}, "digits.tgz", {"old", "digits"}),
            FilterCase(
                ("storage_file_name", "storageFileName"),
                lambda net: net.made["package"]["storage_file_name"],
                {"digits"},
            ),
        ),
    ),
    Entity(
        route="rounds",
        model="fl_sessions.Round",
        key_field="round_id",
        key_resolves=True,
        sort_keys=("round_id", "status", "created_at"),
        sort_probe=("round_id", lambda doc: int(doc["round_id"])),
        filters=(
            FilterCase(("round_id", "roundId"), "2", {"2"}, "1", {"1", "2"}),
            FilterCase(("status",), "Pending", {"1", "2"}),
            FilterCase(("session_id", "sessionId"), "session-b", {"2"}),
        ),
    ),
    Entity(
        route="sessions",
        model="fl_sessions.Session",
        key_field="session_id",
        key_resolves=True,
        sort_keys=("session_id", "committed_at", "status"),
        sort_probe=("session_id", lambda doc: doc["session_id"]),
        filters=(
            FilterCase(
                ("session_id", "sessionId"),
                "session-b",
                {"session-b"},
                "session-a",
                {"session-a", "session-b"},
            ),
            FilterCase(("status",), "Created", {"session-a", "session-b"}),
        ),
    ),
    Entity(
        route="statuses",
        model="fl_sessions.Status",
        key_field="correlation_id",
        key_resolves=False,
        sort_keys=("timestamp", "type", "sender.name", "log_level"),
        sort_probe=("timestamp", lambda doc: doc["timestamp"]),
        filters=(
            FilterCase(("type",), "LOG", {"corr-2"}, "MODEL_UPDATE", {"corr-1", "corr-2"}),
            FilterCase(
                ("sender.name", "sender_name"), "client-b", {"corr-2"}, "client-a", {"corr-1", "corr-2"}
            ),
            FilterCase(("sender.role", "sender_role"), "WORKER", {"corr-1"}),
            FilterCase(
                ("session_id", "sessionId"), "session-a", {"corr-1"}, "session-b", {"corr-1", "corr-2"}
            ),
            FilterCase(("log_level", "logLevel"), "DEBUG", {"corr-2"}),
            FilterCase(("correlation_id", "correlationId"), "corr-1", {"corr-1"}),
        ),
    ),
    Entity(
        route="validations",
        model="fl_sessions.Validation",
        key_field="correlation_id",
        key_resolves=False,
        sort_keys=("timestamp", "model_id", "sender.name"),
        sort_probe=("timestamp", lambda doc: doc["timestamp"]),
        filters=(
            FilterCase(
                ("sender.name", "sender_name"), "client-c", {"corr-2"}, "client-a", {"corr-1", "corr-2"}
            ),
            FilterCase(("sender.role", "sender_role"), "OTHER", {"corr-2"}),
            FilterCase(("receiver.name", "receiver_name"), "combiner-1", {"corr-1"}),
            FilterCase(("receiver.role", "receiver_role"), "REDUCER", {"corr-2"}),
            FilterCase(("session_id", "sessionId"), "session-b", {"corr-2"}),
            FilterCase(("model_id", "modelId"), "model-b", {"corr-2"}, seed_uuid, {"corr-1", "corr-2"}),
            FilterCase(("correlation_id", "correlationId"), "corr-2", {"corr-2"}),
        ),
    ),
]

# The filter names spec §1.3 documents per entity, and the spellings 0.9.5's APIClient sends.
DOCUMENTED_FILTERS = {
    "clients": {"name", "combiner", "combiner_preferred", "ip", "status", "updated_at"},
    "combiners": {"name", "address", "ip"},
    "models": {"model", "parent_model", "session_id"},
    "packages": {"name", "description", "file_name", "storage_file_name"},
    "rounds": {"status", "round_id"},
    "sessions": {"status", "session_id"},
    "statuses": {"type", "sender.name", "sender.role", "session_id", "log_level", "correlation_id"}
    | {"sessionId", "logLevel", "correlationId"},
    "validations": {
        "sender.name",
        "sender.role",
        "receiver.name",
        "receiver.role",
        "session_id",
        "model_id",
        "correlation_id",
    }
    | {"sessionId", "modelId", "correlationId"},
}

# The populated network's keys per entity, as `Entity.keys` reads them.
ALL_KEYS = {
    "clients": {"client-a", "client-b", "client-c"},
    "combiners": {"combiner-1", "combiner-2"},
    "models": {"seed", "child"},
    "packages": {"digits", "old"},
    "rounds": {"1", "2"},
    "sessions": {"session-a", "session-b"},
    "statuses": {"corr-1", "corr-2"},
    "validations": {"corr-1", "corr-2"},
}

BY_ENTITY = pytest.mark.parametrize("entity", ENTITIES, ids=str)


def keys_of(entity: Entity, network: Network, docs: list[dict]) -> set[str]:
    """Natural keys of docs; models are named by their role in `populated` (seed, child)."""
    names = {seed_uuid(network): "seed", child_uuid(network): "child"} if entity.route == "models" else {}
    return {names.get(key, key) for key in entity.keys(docs)}


def json_of(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()


@pytest.fixture
def populated(populated_once: Network, db: None) -> Network:
    """The shared network (built once for this module); each test runs in its own savepoint."""
    return populated_once


def test_every_filterset_covers_the_documented_filters() -> None:
    from controlplane.urls import router

    viewsets = {prefix: viewset for prefix, viewset, _ in router.registry}
    assert set(viewsets) == set(DOCUMENTED_FILTERS)
    for route, documented in DOCUMENTED_FILTERS.items():
        declared = set(viewsets[route].filterset_class.base_filters)
        missing = documented - declared
        assert not missing, f"{route}: FilterSet lacks documented filters {sorted(missing)}"
    # Every spelling the generic cases use is declared too.
    for entity in ENTITIES:
        declared = set(viewsets[entity.route].filterset_class.base_filters)
        for case in entity.filters:
            assert set(case.names) <= declared, (entity.route, case.names)


@BY_ENTITY
def test_list_shape_with_and_without_slash(populated: Network, entity: Entity) -> None:
    api = populated.api
    answer = json_of(api.get(entity.url))
    assert set(answer) == {"count", "result"}
    assert answer["count"] == len(ALL_KEYS[entity.route]) == len(answer["result"])
    assert keys_of(entity, populated, answer["result"]) == ALL_KEYS[entity.route]
    assert all("id" in doc for doc in answer["result"])
    assert json_of(api.get(entity.url.rstrip("/"))) == answer
    assert json_of(api.post(f"{entity.url}list", {}, format="json")) == answer
    assert json_of(api.post(f"{entity.url}list/", {}, format="json")) == answer


@BY_ENTITY
def test_count_is_a_bare_integer(populated: Network, entity: Entity) -> None:
    api = populated.api
    total = len(ALL_KEYS[entity.route])
    assert json_of(api.get(f"{entity.url}count")) == total
    assert json_of(api.post(f"{entity.url}count", {}, format="json")) == total
    case = entity.filters[0]
    body = {case.names[0]: case.resolve(populated)}
    assert json_of(api.post(f"{entity.url}count", body, format="json")) == len(case.expected)
    assert json_of(api.get(f"{entity.url}count", body)) == len(case.expected)


@BY_ENTITY
def test_get_by_primary_key_and_natural_key(populated: Network, entity: Entity) -> None:
    api = populated.api
    model = apps.get_model(entity.model)
    pk = model.objects.order_by("pk").first().pk
    by_pk = json_of(api.get(f"{entity.url}{pk}"))
    assert by_pk == json_of(api.get(f"{entity.url}{pk}/"))
    listed = {doc["id"]: doc for doc in api.get(entity.url).json()["result"]}
    assert by_pk["id"] in listed
    assert by_pk == listed[by_pk["id"]]
    if entity.key_resolves:
        assert json_of(api.get(f"{entity.url}{by_pk[entity.key_field]}")) == by_pk


def test_packages_resolve_by_uuid_and_storage_file_name(populated: Network) -> None:
    package = populated.made["package"]
    assert json_of(populated.api.get(f"/api/v1/packages/{package['id']}")) == package
    assert json_of(populated.api.get(f"/api/v1/packages/{package['storage_file_name']}")) == package


@BY_ENTITY
@pytest.mark.parametrize("unknown", ["999999", "no-such-thing", "5f0c1e8e-0000-4000-8000-000000000000"])
def test_unknown_id_is_404_json(populated: Network, entity: Entity, unknown: str) -> None:
    answer = json_of(populated.api.get(f"{entity.url}{unknown}"), 404)
    assert unknown in answer["message"]


@BY_ENTITY
def test_documented_filters_under_every_spelling(populated: Network, entity: Entity) -> None:
    api = populated.api
    for case in entity.filters:
        value = case.resolve(populated)
        for name in case.names:
            got = json_of(api.get(entity.url, {name: value}))
            assert keys_of(entity, populated, got["result"]) == case.expected, (name, value)
            assert got["count"] == len(case.expected)
            posted = json_of(api.post(f"{entity.url}list", {name: value}, format="json"))
            assert posted == got, name
            form = json_of(api.post(f"{entity.url}list", {name: value}))
            assert form == got, name
        miss = json_of(api.get(entity.url, {case.names[0]: case.miss}))
        assert miss == {"count": 0, "result": []}


@BY_ENTITY
def test_comma_in_a_posted_filter_means_any_of(populated: Network, entity: Entity) -> None:
    api = populated.api
    cases = [case for case in entity.filters if case.other_value is not None]
    assert cases, f"{entity.route}: declare at least one any-of case"
    for case in cases:
        both = f"{case.resolve(populated)},{case.resolve(populated, case.other_value)}"
        for name in case.names:
            got = json_of(api.post(f"{entity.url}list", {name: both}, format="json"))
            assert keys_of(entity, populated, got["result"]) == case.other_expected, name
            assert json_of(api.post(f"{entity.url}count", {name: both}, format="json")) == len(
                case.other_expected
            )


@BY_ENTITY
@pytest.mark.parametrize("value", [1, True, None, ["a"], {"a": "b"}])
def test_non_string_posted_filter_is_400(populated: Network, entity: Entity, value: Any) -> None:
    name = entity.filters[0].names[0]
    for route in ("list", "count"):
        answer = json_of(populated.api.post(f"{entity.url}{route}", {name: value}, format="json"), 400)
        assert name in answer["message"]


@BY_ENTITY
def test_posted_filter_body_must_be_an_object(populated: Network, entity: Entity) -> None:
    answer = json_of(populated.api.post(f"{entity.url}list", ["name"], format="json"), 400)
    assert "object" in answer["message"]


@BY_ENTITY
def test_unknown_filter_name_is_ignored_like_fedn_or_refused(populated: Network, entity: Entity) -> None:
    # FEDn passes unknown keys to MongoDB, where they match nothing; either way, no 500.
    response = populated.api.get(entity.url, {"no_such_field": "x"})
    assert response.status_code in (200, 400)
    assert response["Content-Type"].startswith("application/json")


@BY_ENTITY
def test_paging_headers_and_query(populated: Network, entity: Entity) -> None:
    api = populated.api
    full = api.get(entity.url).json()["result"]
    page = json_of(api.get(entity.url, HTTP_X_LIMIT="1", HTTP_X_SKIP="1"))
    assert page["count"] == len(full)
    assert page["result"] == full[1:2]
    assert json_of(api.get(entity.url, {"limit": "1", "offset": "1"}))["result"] == full[1:2]
    assert json_of(api.get(entity.url, HTTP_X_LIMIT="1"))["result"] == full[:1]
    posted = json_of(api.post(f"{entity.url}list", {}, format="json", HTTP_X_LIMIT="1", HTTP_X_SKIP="1"))
    assert posted["result"] == full[1:2]
    # FEDn reads a header that is not a positive integer as 0: no limit, no skip.
    assert json_of(api.get(entity.url, HTTP_X_LIMIT="-1", HTTP_X_SKIP="abc"))["result"] == full
    assert json_of(api.get(entity.url, HTTP_X_SKIP="99"))["result"] == []
    assert json_of(api.get(entity.url, {"limit": "x"}), 400)["success"] is False


@BY_ENTITY
def test_sort_headers(populated: Network, entity: Entity) -> None:
    api = populated.api
    key, read = entity.sort_probe
    ascending = json_of(api.get(entity.url, HTTP_X_SORT_KEY=key, HTTP_X_SORT_ORDER="asc"))["result"]
    values = [read(doc) for doc in ascending]
    assert values == sorted(values) and len(set(values)) == len(values) > 1
    # Anything but "asc", or no order at all, is descending (FEDn).
    for order in ({"HTTP_X_SORT_ORDER": "desc"}, {"HTTP_X_SORT_ORDER": "whatever"}, {}):
        descending = json_of(api.get(entity.url, HTTP_X_SORT_KEY=key, **order))["result"]
        assert [read(doc) for doc in descending] == sorted(values, reverse=True)
    for sort_key in entity.sort_keys:
        for order in ("asc", "desc"):
            answer = json_of(api.get(entity.url, HTTP_X_SORT_KEY=sort_key, HTTP_X_SORT_ORDER=order))
            assert answer["count"] == len(ALL_KEYS[entity.route]), sort_key


@BY_ENTITY
def test_unknown_sort_key_is_400(populated: Network, entity: Entity) -> None:
    answer = json_of(populated.api.get(entity.url, HTTP_X_SORT_KEY="no_such_key"), 400)
    assert "no_such_key" in answer["message"]
    json_of(populated.api.post(f"{entity.url}list", {}, format="json", HTTP_X_SORT_KEY="no_such_key"), 400)


@BY_ENTITY
def test_list_query_count_has_a_ceiling(
    populated: Network, entity: Entity, django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(MAX_LIST_QUERIES):
        json_of(populated.api.get(entity.url))
    with django_assert_max_num_queries(MAX_LIST_QUERIES):
        json_of(populated.api.post(f"{entity.url}list", {}, format="json"))
    with django_assert_max_num_queries(MAX_LIST_QUERIES):
        json_of(populated.api.get(f"{entity.url}count"))
