"""Every REST route with auth on, against every kind of token: who gets in, and that a refused call
stores nothing.

The routes come from the URL resolver, so a new route is tested the day it is added: it is expected
to need the admin role unless the tables below say otherwise. Cases per route and method: no token,
malformed, wrong secret, expired, revoked, no `exp`, no `jti`, no `sub`, each wrong role, the right
role naming another identity (routes that name one), the right role naming its own, a staff user.
"""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.db.models import Model as DjangoModel
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.views import APIView

from .factories import Network, model_bytes, package_bytes, status_doc, upload, validation_doc

pytestmark = pytest.mark.django_db

SECRET = "identity-matrix-secret-of-at-least-32-bytes"
METHODS = ("get", "post", "put", "patch", "delete")
ROLES = ("admin", "client", "combiner")
# The name each role's token speaks for, and another identity of the same role.
OWN = {"admin": "operator", "client": "client-a", "combiner": "combiner-1"}
OTHER = {"client": "client-b", "combiner": "combiner-2"}

# (method, route name) -> roles allowed; anything not listed needs the admin role.
ROUTE_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("post", "legacy-add-client"): frozenset({"client"}),
    ("get", "legacy-download-package"): frozenset({"client"}),
    ("get", "legacy-get-package-checksum"): frozenset({"client"}),
    ("post", "legacy-add-combiner"): frozenset({"combiner"}),
    ("post", "combiner-clients"): frozenset({"combiner"}),
    ("post", "round-reports"): frozenset({"combiner"}),
    ("post", "status-list"): frozenset({"combiner"}),
    ("post", "validation-list"): frozenset({"combiner"}),
    ("get", "tokens-revoked"): frozenset({"combiner", "admin"}),
}
# Routes that answer without a token: the health probe and the API's own documentation.
OPEN_ROUTES = {("get", "legacy-health"), ("get", "schema"), ("get", "swagger-ui"), ("get", "redoc")}
# Routes whose request names a client or combiner: the token's `sub` must be that name.
BOUND_ROUTES = {
    ("post", "legacy-add-client"),
    ("post", "legacy-add-combiner"),
    ("post", "combiner-clients"),
    ("post", "round-reports"),
}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    has_pk: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.name)

    @property
    def roles(self) -> frozenset[str]:
        return ROUTE_ROLES.get(self.key, frozenset({"admin"}))

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.name}"


def _walk(patterns: list[URLPattern | URLResolver]) -> Iterator[URLPattern]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if not pattern.namespace:  # the admin and the FEDN_CUSTOM_URL_PREFIX copy have one
                yield from _walk(pattern.url_patterns)
        else:
            yield pattern


def rest_routes() -> list[Route]:
    """Every DRF view in the URLconf, once per HTTP method it answers."""
    routes = []
    for pattern in _walk(get_resolver().url_patterns):
        view_class = getattr(pattern.callback, "cls", None)
        if view_class is None or not issubclass(view_class, APIView):
            continue
        actions = getattr(pattern.callback, "actions", None)
        methods = sorted(actions) if actions else [m for m in METHODS if hasattr(view_class, m)]
        has_pk = "pk" in pattern.pattern.regex.groupindex
        routes.extend(Route(pattern.name, method, has_pk) for method in methods)
    return routes


ROUTES = rest_routes()


def test_the_tables_name_only_routes_that_exist() -> None:
    known = {route.key for route in ROUTES}
    assert set(ROUTE_ROLES) | OPEN_ROUTES | BOUND_ROUTES <= known
    # Enough routes were found that the walk cannot have silently missed the API.
    assert len(ROUTES) > 80


# ---------------------------------------------------------------- the network and the calls


@dataclass
class World:
    network: Network
    seed: str
    active_package: str
    old_package: str
    status_pk: int
    validation_pk: int


@pytest.fixture
def world(network: Network, settings: Any) -> World:
    """A network built with auth off (two of each identity), then auth turned on."""
    from apps.sessions.models import Status, Validation

    old = network.package(name="old", file_name="old.tgz")
    active = network.package(name="digits")
    seed = network.seed()["model"]
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="combiner-2.local", port=12081)
    network.client("client-a", combiner="combiner-1")
    network.client("client-b", combiner="combiner-2")
    network.session("s1", model_id=seed)
    network.round("s1")
    network.statuses(status_doc())
    network.validations(validation_doc())
    settings.FEDN_JWT_SECRET_KEY = SECRET
    settings.FEDN_AUTH_WHITELIST_URL_PREFIX = ""
    return World(
        network=network,
        seed=seed,
        active_package=active["id"],
        old_package=old["id"],
        status_pk=Status.objects.get().pk,
        validation_pk=Validation.objects.get().pk,
    )


def detail_pk(world: World, route: Route, name: str) -> str:
    if route.name == "combiner-clients":
        return name
    pks = {
        "client": "client-a",
        "combiner": "combiner-1",
        "model": world.seed,
        "package": world.active_package,
        "round": "1",
        "session": "s1",
        "status": world.status_pk,
        "validation": world.validation_pk,
    }
    entity = route.name.split("-")[0]
    assert entity in pks, f"{route}: say which object the matrix addresses on this new resource"
    return str(pks[entity])


def query(world: World, route: Route) -> str:
    return {
        "legacy-get-active-clients": "?combiner=combiner-1",
        "legacy-get-combiner": "?combiner=combiner-1",
        "legacy-get-model": f"?model={world.seed}",
        "legacy-get-model-ancestors": f"?model={world.seed}",
        "legacy-get-model-descendants": f"?model={world.seed}",
        "legacy-set-current-model": f"?id={world.seed}",
        "legacy-set-active-package": f"?id={world.old_package}",
        "legacy-get-session": "?session_id=s1",
        "legacy-get-round": "?round_id=1",
    }.get(route.name, "")


def body(world: World, route: Route, name: str) -> tuple[Any, str]:
    """A body that would store something, so a refusal that stores nothing is telling."""
    config = {
        "aggregator": "fedavg",
        "round_timeout": 30,
        "buffer_size": -1,
        "delete_models_storage": True,
        "clients_required": 1,
        "validate": True,
        "helper_type": "numpyhelper",
    }
    combiner = {
        "combiner_id": name,
        "address": "moved.local",
        "port": 12999,
        "fqdn": None,
        "secure_grpc": False,
    }
    start = {"session_id": "s-matrix", "min_clients": 1}
    json_bodies: dict[tuple[str, str], Any] = {
        ("post", "legacy-add-client"): {"client_id": name, "preferred_combiner": "combiner-2"},
        ("post", "legacy-add-combiner"): combiner,
        ("post", "combiner-clients"): {"clients": [{"name": "client-new", "status": "online"}]},
        ("post", "round-reports"): {"combiner": name, "status": "Success", "num_examples": 10},
        ("post", "status-list"): [status_doc(correlationId="matrix")],
        ("post", "validation-list"): [validation_doc(correlationId="matrix")],
        ("post", "legacy-start-session"): start,
        ("get", "legacy-start-session"): start,
        ("post", "session-list"): {"session_id": "s-new", "session_config": config},
        ("post", "session-start"): {"session_id": "s1", "rounds": 1},
        ("post", "legacy-list-combiners-data"): {"combiners": None},
    }
    if route.key == ("post", "legacy-set-package"):
        return {"file": upload("new.tgz", package_bytes()), "helper": "numpyhelper"}, "multipart"
    if route.key == ("post", "legacy-set-initial-model"):
        return {"file": upload("seed.npz", model_bytes())}, "multipart"
    return json_bodies.get(route.key), "json"


def call(world: World, route: Route, token: str | None, name: str, *, scheme: str = "Bearer") -> Any:
    kwargs = {"pk": detail_pk(world, route, name)} if route.has_pk else {}
    url = reverse(route.name, kwargs=kwargs) + query(world, route)
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token is not None else {}
    data, fmt = body(world, route, name)
    send = getattr(world.network.api, route.method)
    if route.method == "get":
        return send(url, **headers)
    return send(url, data, format=fmt, **headers)


# ---------------------------------------------------------------- tokens


def token(role: str, *, secret: str = SECRET, drop: tuple[str, ...] = (), **claims: Any) -> str:
    payload = {"role": role, "sub": OWN[role], "jti": uuid.uuid4().hex, "exp": int(time.time()) + 300}
    payload.update(claims)
    for claim in drop:
        payload.pop(claim)
    return jwt.encode(payload, secret, "HS256")


def revoked_token(role: str, subject: str) -> str:
    from apps.identity.services import token_issue, token_revoke

    minted = token_issue(role=role, subject=subject, days=1, issued_by="matrix")
    token_revoke(jti=minted.jti, by="matrix", reason="leaked")
    return minted.token


TRACKED_MODELS = [
    ("clients", "Client"),
    ("combiners", "Combiner"),
    ("packages", "ComputePackage"),
    ("mlmodels", "Model"),
    ("fl_sessions", "Session"),
    ("fl_sessions", "Round"),
    ("fl_sessions", "CombinerReport"),
    ("fl_sessions", "Status"),
    ("fl_sessions", "Validation"),
    ("identity", "IssuedToken"),
]


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table a route could write, so a refusal must leave all of them alone."""
    from django.apps import apps

    tables = {}
    for label, name in TRACKED_MODELS:
        model: type[DjangoModel] = apps.get_model(label, name)
        tables[name] = list(model.objects.order_by("pk").values())
    return tables


def assert_refused(
    world: World, route: Route, token_: str | None, name: str, status: int, message: str, **kw: Any
) -> None:
    before = snapshot()
    response = call(world, route, token_, name, **kw)
    assert response.status_code == status, (str(route), response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), str(route)
    answer = response.json()
    assert message in answer["message"], (str(route), answer)
    assert "certificate" not in answer and "key" not in answer
    assert snapshot() == before, f"{route}: a refused call changed stored rows"


def assert_admitted(world: World, route: Route, token_: str | None, name: str) -> Any:
    response = call(world, route, token_, name)
    assert response.status_code not in (401, 403), (str(route), response.status_code, response.content[:300])
    return response


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_route(world: World, route: Route) -> None:
    if route.key in OPEN_ROUTES:
        assert_admitted(world, route, None, "")
        return
    role = sorted(route.roles)[0]
    own, other = OWN[role], OTHER.get(role)

    assert_refused(world, route, None, own, 401, "Missing token")
    assert_refused(
        world, route, token(role), own, 401, "Invalid token scheme, expected Bearer", scheme="Token"
    )
    assert_refused(world, route, "not.a.jwt", own, 401, "Invalid token")
    assert_refused(
        world, route, token(role, secret="another-secret-of-at-least-32-bytes"), own, 401, "Invalid token"
    )
    assert_refused(world, route, token(role, exp=int(time.time()) - 60), own, 401, "Token expired")
    assert_refused(world, route, revoked_token(role, own), own, 401, "Token revoked")
    assert_refused(world, route, token(role, drop=("exp",)), own, 401, "Token has no 'exp' claim")
    assert_refused(world, route, token(role, drop=("jti",)), own, 401, "Token has no 'jti' claim")
    for wrong in sorted(set(ROLES) - route.roles):
        assert_refused(world, route, token(wrong), own, 401, "Invalid token")
        if wrong != "admin":
            assert_refused(world, route, token(wrong, drop=("sub",)), own, 401, "Token has no subject")

    for allowed in sorted(route.roles):
        if allowed == "admin":
            # An admin token speaks for no one in particular: it needs no `sub`.
            assert_admitted(world, route, token("admin", drop=("sub",)), own)
        else:
            assert_refused(world, route, token(allowed, drop=("sub",)), own, 401, "Token has no subject")

    if route.key in BOUND_ROUTES:
        assert other is not None
        assert_refused(world, route, token(role), other, 403, f"This token speaks for {own}, not {other}")
        response = assert_admitted(world, route, token(role), own)
        assert response.status_code < 300, (str(route), response.content[:300])
    else:
        for allowed in sorted(route.roles):
            assert_admitted(world, route, token(allowed), own)

    staff = get_user_model().objects.create_user("operator", password="pw", is_staff=True)
    world.network.api.force_login(staff)
    assert_admitted(world, route, None, own)


# ---------------------------------------------------------------- identity, route by route


def bearer(role: str, **claims: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token(role, **claims)}"}


def test_add_client_without_a_name_registers_the_tokens_client(world: World) -> None:
    from apps.clients.models import Client

    response = world.network.api.post(
        "/add_client", {"preferred_combiner": "combiner-2"}, format="json", **bearer("client", sub="client-c")
    )
    assert response.status_code == 200, response.content
    assert Client.objects.get(name="client-c").combiner.name == "combiner-2"


def test_add_client_checks_both_name_fields(world: World) -> None:
    from apps.clients.models import Client

    before = list(Client.objects.order_by("pk").values())
    response = world.network.api.post(
        "/add_client", {"client_id": "client-a", "name": "client-b"}, format="json", **bearer("client")
    )
    assert response.status_code == 403
    assert response.json()["message"] == "This token speaks for client-a, not client-b"
    assert list(Client.objects.order_by("pk").values()) == before


def test_combiner_secrets_go_only_to_that_combiner(world: World) -> None:
    from apps.combiners.models import Combiner

    Combiner.objects.filter(name="combiner-2").update(certificate="CERT-2", key="KEY-2")
    announce = {"combiner_id": "combiner-2", "address": "evil.local", "port": 1, "secure_grpc": True}
    refused = world.network.api.post("/add_combiner", announce, format="json", **bearer("combiner"))
    assert refused.status_code == 403
    assert "CERT-2" not in refused.content.decode() and "KEY-2" not in refused.content.decode()
    combiner = Combiner.objects.get(name="combiner-2")
    assert (combiner.address, combiner.port, combiner.secure_grpc) == ("combiner-2.local", 12081, False)

    moved = {**announce, "address": "c2.example"}
    own = world.network.api.post(
        "/add_combiner", moved, format="json", **bearer("combiner", sub="combiner-2")
    )
    assert own.status_code == 200, own.content
    assert (own.json()["certificate"], own.json()["key"]) == ("CERT-2", "KEY-2")
    assert Combiner.objects.get(name="combiner-2").address == "c2.example"


def test_combiner_reports_its_clients_by_primary_key_too(world: World) -> None:
    from apps.combiners.models import Combiner

    own_pk = Combiner.objects.get(name="combiner-1").pk
    other_pk = Combiner.objects.get(name="combiner-2").pk
    report = {"clients": [{"name": "client-a", "status": "offline"}]}
    ok = world.network.api.post(
        f"/api/v1/combiners/{own_pk}/clients", report, format="json", **bearer("combiner")
    )
    assert ok.status_code == 200, ok.content
    refused = world.network.api.post(
        f"/api/v1/combiners/{other_pk}/clients", report, format="json", **bearer("combiner")
    )
    assert refused.status_code == 403
    assert refused.json()["message"] == "This token speaks for combiner-1, not combiner-2"


def test_auth_off_binds_nothing(network: Network) -> None:
    # Without FEDN_JWT_SECRET_KEY every caller may name anyone, as in FEDn.
    network.package()
    network.combiner("combiner-1")
    network.combiner("combiner-2")
    network.client("client-a")
    assert network.api.post("/add_client", {"client_id": "client-b"}, format="json").status_code == 200
