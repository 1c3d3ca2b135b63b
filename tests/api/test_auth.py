"""FEDn's JWT auth (spec §3): a Bearer HS256 token whose `role` must be exactly the route's role."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from .factories import Network, make_token, status_doc, streamed_bytes, validation_doc

pytestmark = pytest.mark.django_db

SECRET = "test-secret"

CLIENT_ROUTES = [("get", "/download_package"), ("get", "/get_package_checksum"), ("post", "/add_client")]
COMBINER_ROUTES = [
    ("post", "/add_combiner"),
    ("post", "/api/v1/combiners/combiner-1/clients"),
    ("post", "/api/v1/rounds/1/reports"),
    ("post", "/api/v1/statuses/"),
    ("post", "/api/v1/validations/"),
]
ADMIN_ROUTES = [
    ("get", "/list_clients"),
    ("get", "/get_controller_status"),
    ("get", "/api/v1/clients/"),
    ("get", "/api/v1/statuses/"),
    ("post", "/api/v1/sessions/list"),
    ("get", "/api/v1/models/count"),
    ("get", "/api/v1/packages/active"),
    ("get", "/get_latest_model"),
    ("post", "/start_session"),
]
BODIES = {
    "/add_client": {"client_id": "client-z", "preferred_combiner": False},
    "/add_combiner": {
        "combiner_id": "combiner-9",
        "address": "c9.local",
        "port": 12089,
        "secure_grpc": False,
    },
    "/api/v1/combiners/combiner-1/clients": {"clients": [{"name": "client-a", "status": "online"}]},
    "/api/v1/rounds/1/reports": {"combiner": "combiner-1", "status": "Success"},
    "/api/v1/statuses/": status_doc(),
    "/api/v1/validations/": validation_doc(),
    "/start_session": {"session_id": "s-auth"},
}
# The name a client or combiner token must speak for on each route that names one.
SUBJECTS = {
    "/add_client": "client-z",
    "/add_combiner": "combiner-9",
    "/api/v1/combiners/combiner-1/clients": "combiner-1",
    "/api/v1/rounds/1/reports": "combiner-1",
}


@pytest.fixture
def secured(network: Network, settings: Any) -> Network:
    """A network built with auth off, then auth turned on."""
    network.package()
    network.seed()
    network.combiner("combiner-1")
    network.client("client-a")
    network.session("s1")
    network.round("s1")
    settings.FEDN_JWT_SECRET_KEY = SECRET
    return network


def call(network: Network, method: str, url: str, token: str | None = None, scheme: str = "Bearer") -> Any:
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token is not None else {}
    body = BODIES.get(url.split("?")[0])
    if method == "get":
        return network.api.get(url, **headers)
    return getattr(network.api, method)(url, body, format="json", **headers)


def assert_401(response: Any, message: str) -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["message"] == message


@pytest.mark.parametrize(("method", "url"), CLIENT_ROUTES + COMBINER_ROUTES + ADMIN_ROUTES)
def test_missing_token(secured: Network, method: str, url: str) -> None:
    assert_401(call(secured, method, url), "Missing token")


@pytest.mark.parametrize(("method", "url"), [("get", "/list_clients"), ("post", "/add_client")])
def test_wrong_scheme_expired_and_forged_tokens(secured: Network, method: str, url: str) -> None:
    role = "client" if url == "/add_client" else "admin"
    assert_401(
        call(secured, method, url, make_token(role), scheme="Token"), "Invalid token scheme, expected Bearer"
    )
    assert_401(call(secured, method, url, "", scheme="Bearer"), "Invalid token")
    assert_401(call(secured, method, url, make_token(role, expires_in=-60)), "Token expired")
    assert_401(call(secured, method, url, make_token(role, secret="someone-else")), "Invalid token")
    assert_401(call(secured, method, url, "not.a.jwt"), "Invalid token")


def test_each_route_takes_exactly_its_role(secured: Network) -> None:
    routes = {"client": CLIENT_ROUTES, "combiner": COMBINER_ROUTES, "admin": ADMIN_ROUTES}
    for role, own_routes in routes.items():
        for method, url in own_routes:
            response = call(secured, method, url, make_token(role, sub=SUBJECTS.get(url, role)))
            assert response.status_code < 400, (role, url, response.status_code, response.content)
            # No hierarchy: every other role (admin included) is refused.
            for other in set(routes) - {role}:
                assert_401(call(secured, method, url, make_token(other)), "Invalid token")


def test_client_can_fetch_its_package(secured: Network) -> None:
    token = make_token("client")
    response = call(secured, "get", "/download_package", token)
    assert response.status_code == 200
    assert streamed_bytes(response) == next(iter(secured.uploaded_packages.values()))


def test_custom_claim(secured: Network, settings: Any) -> None:
    settings.FEDN_JWT_CUSTOM_CLAIM_KEY = "project"
    settings.FEDN_JWT_CUSTOM_CLAIM_VALUE = "p1"
    assert_401(call(secured, "get", "/list_clients", make_token("admin")), "Invalid token")
    assert call(secured, "get", "/list_clients", make_token("admin", project="p1")).status_code == 200


def test_whitelisted_prefix_needs_no_token(secured: Network, settings: Any) -> None:
    settings.FEDN_AUTH_WHITELIST_URL_PREFIX = "/get_controller"
    assert call(secured, "get", "/get_controller_status").status_code == 200
    assert_401(call(secured, "get", "/list_clients"), "Missing token")


def test_open_routes(secured: Network) -> None:
    assert secured.api.get("/health").status_code == 200


def test_model_files_need_an_admin_token(secured: Network) -> None:
    # Open in FEDn 0.9.5; here the weights need the admin role like every other /api/v1 route.
    admin = {"HTTP_AUTHORIZATION": f"Bearer {make_token('admin')}"}
    model = secured.api.get("/get_latest_model", **admin).json()["model_id"]
    for route in ("download", "parameters"):
        url = f"/api/v1/models/{model}/{route}"
        assert_401(secured.api.get(url), "Missing token")
        assert_401(secured.api.get(url, HTTP_AUTHORIZATION=f"Bearer {make_token('client')}"), "Invalid token")
        assert secured.api.get(url, **admin).status_code == 200


def test_staff_session_may_use_every_route(secured: Network) -> None:
    staff = get_user_model().objects.create_user("operator", password="pw", is_staff=True)
    secured.api.force_login(staff)
    for method, url in CLIENT_ROUTES + COMBINER_ROUTES + ADMIN_ROUTES:
        response = call(secured, method, url)
        assert response.status_code < 400, (url, response.status_code, response.content)


def test_non_staff_session_is_refused(secured: Network) -> None:
    user = get_user_model().objects.create_user("someone", password="pw")
    secured.api.force_login(user)
    response = call(secured, "get", "/list_clients")
    assert response.status_code in (401, 403)
    assert response.json()["message"]


def test_auth_off_without_secret(network: Network) -> None:
    # FEDn without FEDN_JWT_SECRET_KEY: every route is open, tokens are ignored.
    assert network.api.get("/list_clients").status_code == 200
    assert network.api.get("/list_clients", HTTP_AUTHORIZATION="Bearer garbage").status_code == 200
