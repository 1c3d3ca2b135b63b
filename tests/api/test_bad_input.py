"""Bad input on every write route: a 4xx JSON answer with a clear message, and nothing stored.

Then a sweep that sends junk to every URL in controlplane.urls: no route ever answers 500 or HTML.
"""

import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver

from .factories import Network, model_bytes, package_bytes, tar_with, upload

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("packages", "combiners", "clients", "mlmodels", "fl_sessions")


def snapshot(store: Any) -> tuple[dict[str, int], list[str]]:
    """Row counts of every project model and every file in the artifact store."""
    counts = {
        model._meta.label: model.objects.count()
        for label in PROJECT_APPS
        for model in apps.get_app_config(label).get_models()
    }
    root = Path(store.location)
    files = sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    return counts, files


def snapshot_rows() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for label in PROJECT_APPS
        for model in apps.get_app_config(label).get_models()
    }


def refused(response: Any, *expected: int) -> str:
    """Asserts a 4xx JSON error with a message; returns the message."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    if expected:
        assert response.status_code in expected, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    return body["message"]


@pytest.fixture
def ready(network: Network) -> Network:
    """A package, a seed, a combiner with one online client, a session and a round."""
    network.package()
    network.made["seed"] = network.seed()
    network.combiner("combiner-1")
    network.client("client-a")
    network.session("s1")
    network.round("s1")
    return network


# ---------------------------------------------------------------- JSON write routes

JSON_ROUTES = [
    ("post", "/add_combiner"),
    ("post", "/add_client"),
    ("post", "/start_session"),
    ("post", "/list_combiners_data"),
    ("post", "/api/v1/sessions/"),
    ("post", "/api/v1/sessions/start"),
    ("post", "/api/v1/combiners/combiner-1/clients"),
    ("post", "/api/v1/rounds/1/reports"),
    ("post", "/api/v1/statuses/"),
    ("post", "/api/v1/validations/"),
    ("post", "/api/v1/clients/list"),
    ("post", "/api/v1/sessions/count"),
]


@pytest.mark.parametrize(("method", "url"), JSON_ROUTES)
@pytest.mark.parametrize(
    "raw",
    ['{"combiner_id": "c", ', "not json at all", "\x00\xff\xfe", "[1, 2", '{"a": NaN'],
    ids=["truncated", "text", "binary", "open-list", "nan"],
)
def test_malformed_json_is_400(ready: Network, artifact_store: Any, method: str, url: str, raw: str) -> None:
    before = snapshot(artifact_store)
    response = getattr(ready.api, method)(url, raw, content_type="application/json")
    message = refused(response, 400)
    assert "JSON" in message or "json" in message or "object" in message
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(("method", "url"), JSON_ROUTES)
def test_deeply_nested_json_is_400(ready: Network, artifact_store: Any, method: str, url: str) -> None:
    before = snapshot(artifact_store)
    response = getattr(ready.api, method)(url, "[" * 100_000, content_type="application/json")
    assert "nested too deeply" in refused(response, 400)
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(("method", "url"), JSON_ROUTES)
def test_a_body_over_the_size_limit_is_413(
    ready: Network, artifact_store: Any, method: str, url: str, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    before = snapshot(artifact_store)
    body = json.dumps({"padding": "x" * 4096})
    response = getattr(ready.api, method)(url, body, content_type="application/json")
    assert "larger than 1024 bytes" in refused(response, 413)
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/start_session", '{"session_id": "\\ud800", "rounds": 1}'),
        ("/api/v1/sessions/", '{"session_id": "s\\u0000x"}'),
        ("/api/v1/clients/list", '{"name": "\\udfff"}'),
        ("/api/v1/sessions/count", '{"session_id": "\\ud800"}'),
        ("/api/v1/statuses/", '{"sender": {"name": "\\ud800", "role": "WORKER"}, "status": "x"}'),
    ],
)
def test_strings_no_database_can_store_are_400(ready: Network, url: str, body: str) -> None:
    counts = snapshot_rows()
    response = ready.api.post(url, body, content_type="application/json")
    assert "unpaired surrogates" in refused(response, 400)
    assert snapshot_rows() == counts


@pytest.mark.parametrize(("method", "url"), JSON_ROUTES)
def test_json_scalar_or_list_body_is_refused(
    ready: Network, artifact_store: Any, method: str, url: str
) -> None:
    before = snapshot(artifact_store)
    for body in ("a string", 42, None, []):
        response = getattr(ready.api, method)(url, json.dumps(body), content_type="application/json")
        refused(response, 400)
    assert snapshot(artifact_store) == before


BAD_BODIES = [
    # add_combiner
    ("post", "/add_combiner", {}, "combiner_id"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "a"}, "port"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "a", "port": "high"}, "port"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "a", "port": 70000}, "port"),
    ("post", "/add_combiner", {"combiner_id": 7, "address": "a", "port": 1}, "combiner_id"),
    ("post", "/add_combiner", {"combiner_id": "../etc", "address": "a", "port": 1}, "combiner_id"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "a", "port": 1, "fqdn": 5}, "fqdn"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "a", "port": 1, "evil": True}, "evil"),
    ("post", "/add_combiner", {"combiner_id": "c", "address": "", "port": 1}, "address"),
    # add_client
    ("post", "/add_client", {}, "client_id"),
    ("post", "/add_client", {"client_id": 5}, "client_id"),
    ("post", "/add_client", {"client_id": "a/../b"}, "client_id"),
    ("post", "/add_client", {"client_id": "x", "preferred_combiner": 5}, "preferred_combiner"),
    ("post", "/add_client", {"client_id": "x", "preferred_combiner": "nope"}, "nope"),
    ("post", "/add_client", {"client_id": "x", "evil": 1}, "evil"),
    # start_session (FEDn answered unknown keys with 500)
    ("post", "/start_session", {"session_id": "n", "evil": 1}, "evil"),
    ("post", "/start_session", {"session_id": "n", "rounds": "five"}, "rounds"),
    ("post", "/start_session", {"session_id": "n", "rounds": 0}, "rounds"),
    ("post", "/start_session", {"session_id": 12}, "session_id"),
    ("post", "/start_session", {"session_id": "n", "round_timeout": -5}, "round_timeout"),
    ("post", "/start_session", {"session_id": "n", "aggregator": "nope"}, "aggregator"),
    ("post", "/start_session", {"session_id": "n", "model_id": "no-such-model"}, "no-such-model"),
    ("post", "/start_session", {"session_id": "n", "validate": "perhaps"}, "validate"),
    ("post", "/start_session", {"session_id": "n", "aggregator_kwargs": [1]}, "aggregator_kwargs"),
    # list_combiners_data
    ("post", "/list_combiners_data", {}, "combiners"),
    ("post", "/list_combiners_data", {"combiners": 5}, "combiners"),
    ("post", "/list_combiners_data", {"combiners": [1, 2]}, "combiners"),
    ("post", "/list_combiners_data", {"combiners": None, "evil": 1}, "evil"),
    # v1 sessions
    ("post", "/api/v1/sessions/", {}, "session_config"),
    ("post", "/api/v1/sessions/", {"session_config": "fedavg"}, "session_config"),
    ("post", "/api/v1/sessions/", {"session_config": {"rounds": "x"}}, "rounds"),
    ("post", "/api/v1/sessions/", {"session_config": {}, "evil": 1}, "evil"),
    ("post", "/api/v1/sessions/", {"session_id": "", "session_config": {}}, "session_id"),
    ("post", "/api/v1/sessions/", {"session_id": "x" * 200, "session_config": {}}, "session_id"),
    ("post", "/api/v1/sessions/start", {}, "session_id"),
    ("post", "/api/v1/sessions/start", {"session_id": "s1", "rounds": "2"}, "rounds"),
    ("post", "/api/v1/sessions/start", {"session_id": "s1", "rounds": 1.5}, "rounds"),
    ("post", "/api/v1/sessions/start", {"session_id": "s1", "evil": 1}, "evil"),
    ("post", "/api/v1/sessions/start", {"session_id": ["s1"]}, "session_id"),
    # combiner reports
    ("post", "/api/v1/combiners/combiner-1/clients", {}, "clients"),
    ("post", "/api/v1/combiners/combiner-1/clients", {"clients": "all"}, "clients"),
    ("post", "/api/v1/combiners/combiner-1/clients", {"clients": [{"name": "x"}]}, "status"),
    ("post", "/api/v1/combiners/combiner-1/clients", {"clients": [{"name": "x", "status": "up"}]}, "status"),
    (
        "post",
        "/api/v1/combiners/combiner-1/clients",
        {"clients": [{"name": "x", "status": "online", "last_seen": "yesterday"}]},
        "last_seen",
    ),
    ("post", "/api/v1/combiners/combiner-1/clients", {"clients": [], "evil": 1}, "evil"),
    ("post", "/api/v1/rounds/1/reports", {}, "combiner"),
    ("post", "/api/v1/rounds/1/reports", {"combiner": "c", "status": "Done"}, "status"),
    (
        "post",
        "/api/v1/rounds/1/reports",
        {"combiner": "c", "status": "Success", "num_examples": -1},
        "num_examples",
    ),
    (
        "post",
        "/api/v1/rounds/1/reports",
        {"combiner": "c", "status": "Success", "participants": "a"},
        "participants",
    ),
    ("post", "/api/v1/rounds/1/reports", {"combiner": "c", "status": "Success", "evil": 1}, "evil"),
    ("post", "/api/v1/statuses/", {"type": "NOPE"}, "type"),
    ("post", "/api/v1/statuses/", {"logLevel": "LOUD"}, "logLevel"),
    ("post", "/api/v1/statuses/", {"timestamp": "noon"}, "timestamp"),
    ("post", "/api/v1/statuses/", {"sender": "me"}, "sender"),
    ("post", "/api/v1/statuses/", {"status": 5}, "status"),
    ("post", "/api/v1/statuses/", [{"status": "ok"}, "second"], "object"),
    ("post", "/api/v1/statuses/", {"status": "ok", "evil": 1}, "evil"),
    ("post", "/api/v1/validations/", {"receiver": {"name": 5}}, "receiver.name"),
    ("post", "/api/v1/validations/", {"modelId": 5}, "modelId"),
    ("post", "/api/v1/validations/", {"sender": {"role": "KING"}}, "sender.role"),
    ("post", "/api/v1/validations/", {"modelId": "m", "evil": 1}, "evil"),
]


@pytest.mark.parametrize(
    ("method", "url", "body", "mentions"),
    BAD_BODIES,
    ids=[f"{url}-{'-'.join(map(str, body)) or 'empty'}"[:70] for _, url, body, _ in BAD_BODIES],
)
def test_wrong_types_missing_and_unknown_keys(
    ready: Network, artifact_store: Any, method: str, url: str, body: Any, mentions: str
) -> None:
    before = snapshot(artifact_store)
    message = refused(getattr(ready.api, method)(url, body, format="json"))
    assert mentions in message, message
    assert snapshot(artifact_store) == before


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("put", "/set_active_package", 400),
        ("put", "/set_active_package?id=no-such-package", 400),
        ("put", "/set_current_model", 400),
        ("put", "/set_current_model?id=no-such-model", 400),
        ("post", "/api/v1/combiners/no-such-combiner/clients", 404),
        ("post", "/api/v1/rounds/999/reports", 404),
        ("post", "/api/v1/sessions/no-such-session/stop", 404),
        ("post", "/api/v1/sessions/start", 404),
    ],
)
def test_unknown_ids(ready: Network, artifact_store: Any, method: str, url: str, status: int) -> None:
    before = snapshot(artifact_store)
    body = {"clients": [], "combiner": "c", "status": "Success", "session_id": "no-such", "rounds": 1}
    if "clients" in url:
        body = {"clients": []}
    elif "reports" in url:
        body = {"combiner": "c", "status": "Success"}
    elif "start" in url:
        body = {"session_id": "no-such", "rounds": 1}
    elif "stop" in url or "set_" in url:
        body = {}
    refused(getattr(ready.api, method)(url, body, format="json"), status)
    assert snapshot(artifact_store) == before


# ---------------------------------------------------------------- uploads


def pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{"0": np.array([{"payload": "object"}, None], dtype=object)}, allow_pickle=True)
    return buffer.getvalue()


def symlink_member() -> bytes:
    member = tarfile.TarInfo("link.py")
    member.type = tarfile.SYMTYPE
    member.linkname = "/etc/passwd"
    return tar_with(member)


def hardlink_member() -> bytes:
    member = tarfile.TarInfo("hard.py")
    member.type = tarfile.LNKTYPE
    member.linkname = "/etc/passwd"
    return tar_with(member)


BAD_MODELS = {
    "pickled-object-array": pickled_npz(),
    "wrong-keys": (lambda: (lambda b: (np.savez(b, weights=np.ones(3)), b.getvalue())[1])(io.BytesIO()))(),
    "gap-in-keys": (
        lambda: (lambda b: (np.savez(b, **{"0": np.ones(2), "2": np.ones(2)}), b.getvalue())[1])(io.BytesIO())
    )(),
    "garbage": b"\x89this is not a zip archive" * 10,
    "empty": b"",
    "plain-npy": (lambda: (lambda b: (np.save(b, np.ones(3)), b.getvalue())[1])(io.BytesIO()))(),
    "truncated-npz": model_bytes()[:60],
    "string-layer": (
        lambda: (lambda b: (np.savez(b, **{"0": np.array(["a", "b"])}), b.getvalue())[1])(io.BytesIO())
    )(),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_seed_models_are_refused_and_not_stored(network: Network, artifact_store: Any, case: str) -> None:
    network.package()
    before = snapshot(artifact_store)
    response = network.api.post(
        "/set_initial_model", {"file": upload("seed.npz", BAD_MODELS[case])}, format="multipart"
    )
    message = refused(response, 400)
    assert "pickle" not in case or "pickle" in message or "object" in message or "dtype" in message
    assert snapshot(artifact_store) == before


def test_seed_without_file_is_400(network: Network) -> None:
    assert refused(network.api.post("/set_initial_model", {}, format="multipart"), 400) == "Missing file."
    assert refused(network.api.post("/set_initial_model", {"file": "text"}, format="multipart"), 400)


def _zip_with(buffer: io.BytesIO, name: str) -> None:
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fedn.yaml", b"entry_points:\n  train:\n    command: python train.py\n")
        archive.writestr(name, b"x")


BAD_PACKAGES = {
    "dot-dot-path": (tar_with(tarfile.TarInfo("../escape.py"), b"x"), "package.tgz"),
    "nested-dot-dot": (tar_with(tarfile.TarInfo("code/../../escape.py"), b"x"), "package.tgz"),
    "absolute-path": (tar_with(tarfile.TarInfo("/tmp/escape.py"), b"x"), "package.tgz"),
    "symlink": (symlink_member(), "package.tgz"),
    "hardlink": (hardlink_member(), "package.tgz"),
    "no-fedn-yaml": (package_bytes(fedn_yaml=False), "package.tgz"),
    "fedn-yaml-without-entry-points": (
        package_bytes({"fedn.yaml": b"name: x\n"}, fedn_yaml=False),
        "package.tgz",
    ),
    "empty-file": (b"", "package.tgz"),
    "garbage-bytes": (b"\x1f\x8bnot really gzip" * 20, "package.tgz"),
    "wrong-extension": (package_bytes(), "package.exe"),
    "no-extension": (package_bytes(), "package"),
    "zip-named-tgz": (package_bytes(kind="zip"), "package.tgz"),
    "zip-slip": (
        (lambda: (lambda b: (_zip_with(b, "../evil.py"), b.getvalue())[1])(io.BytesIO()))(),
        "package.zip",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PACKAGES))
def test_bad_packages_are_refused_and_not_stored(network: Network, artifact_store: Any, case: str) -> None:
    data, file_name = BAD_PACKAGES[case]
    before = snapshot(artifact_store)
    response = network.api.post(
        "/set_package", {"file": upload(file_name, data), "helper": "numpyhelper"}, format="multipart"
    )
    refused(response, 400)
    assert snapshot(artifact_store) == before
    assert network.api.get("/get_package").status_code == 404


def test_package_form_fields(network: Network, artifact_store: Any) -> None:
    before = snapshot(artifact_store)
    no_helper = network.api.post(
        "/set_package", {"file": upload("p.tgz", package_bytes())}, format="multipart"
    )
    assert refused(no_helper, 400) == "Missing helper type."
    no_file = network.api.post("/set_package", {"helper": "numpyhelper"}, format="multipart")
    assert refused(no_file, 400) == "Missing file."
    as_json = network.api.post("/set_package", {"helper": "numpyhelper", "file": "x"}, format="json")
    refused(as_json, 400, 415)
    long_helper = network.api.post(
        "/set_package", {"file": upload("p.tgz", package_bytes()), "helper": "h" * 100}, format="multipart"
    )
    assert "helper" in refused(long_helper, 400)
    assert snapshot(artifact_store) == before


def test_a_good_upload_after_bad_ones_still_works(network: Network, artifact_store: Any) -> None:
    for data, file_name in BAD_PACKAGES.values():
        network.api.post("/set_package", {"file": upload(file_name, data), "helper": "h"}, format="multipart")
    network.package()
    counts, files = snapshot(artifact_store)
    assert counts["packages.ComputePackage"] == 1
    assert len(files) == 1


# ---------------------------------------------------------------- the sweep over every URL

# Pages that are not API routes: HTML by design (admin, docs, login), text (/health) or a redirect.
NOT_API = re.compile(r"^/(admin/|api/schema|api/docs|api/redoc|api-auth/|health|$)")
# Routes that answer a file when the id is real.
DOWNLOADS = re.compile(r"^/(download_package|api/v1/models/[^/]+/download)")
GROUP = re.compile(r"\(\?P<(\w+)>[^()]*\)")


def url_patterns(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every URL pattern of the project as one regex string."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        regex = entry.pattern.regex.pattern.lstrip("^")
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry.url_patterns, prefix + regex.removesuffix("$"))
        elif isinstance(entry, URLPattern):
            yield prefix + regex


def sample_paths(regex: str, values: list[str]) -> list[str]:
    """Concrete paths for a pattern, its groups filled with each value, with and without the slash."""
    paths = set()
    for value in values:
        path = GROUP.sub(value, regex).removesuffix("$").removesuffix("\\Z")
        path = path.replace("\\.", ".").replace("\\-", "-")
        for variant in (path.replace("/?", "/"), path.replace("/?", "")):
            paths.add("/" + variant)
    return sorted(paths)


def test_sweep_lists_every_api_route() -> None:
    paths = {path for regex in url_patterns() for path in sample_paths(regex, ["1"])}
    for expected in (
        "/add_client",
        "/api/v1/models/1/ancestors/",
        "/api/v1/statuses/count",
        "/get_plot_data/",
    ):
        assert expected in paths
    assert len([p for p in paths if not NOT_API.match(p)]) > 60


JUNK_QUERY = {
    "limit": "-1",
    "skip": "x",
    "offset": "NaN",
    "model": "\x00",
    "id": "../../etc",
    "status": "' OR 1=1",
}
JUNK_HEADERS = {
    "HTTP_X_LIMIT": "lots",
    "HTTP_X_SKIP": "-5",
    "HTTP_X_SORT_KEY": "__class__",
    "HTTP_X_SORT_ORDER": "sideways",
    "HTTP_X_REVERSE": "maybe",
}
JUNK_BODIES: list[tuple[Any, str]] = [
    ('{"broken": ', "application/json"),
    ("[1, {}, null]", "application/json"),
    (json.dumps({"a": {"b": [1, 2]}, "limit": -1, "session_id": None}), "application/json"),
    ("\x00\x01\x02binary", "application/octet-stream"),
    ("a=1&b=%ZZ&file=x", "application/x-www-form-urlencoded"),
    ("--boundary\r\nbroken multipart", "multipart/form-data; boundary=boundary"),
]


def test_junk_to_every_url_never_500_and_always_json(populated: Network) -> None:
    api = populated.api
    failures = []
    paths = sorted(
        {p for regex in url_patterns() for p in sample_paths(regex, ["1", "junk", "%2e%2e", "1" * 30])}
    )
    api_paths = [p for p in paths if not NOT_API.match(p)]
    for path in api_paths:
        attempts = [("get", None, None, {}), ("get", None, None, JUNK_HEADERS)]
        attempts += [(method, body, ctype, {}) for method in ("post", "put") for body, ctype in JUNK_BODIES]
        for method, body, content_type, headers in attempts:
            call = getattr(api, method)
            if method == "get":
                response = call(path, JUNK_QUERY, **headers)
            else:
                response = call(path + "?limit=x&id=junk", body, content_type=content_type, **headers)
            content = response.get("Content-Type", "")
            is_file = DOWNLOADS.match(path) and response.status_code == 200
            if path.startswith("/delete_model_trail") and response.status_code == 501:
                continue  # FEDn's documented answer on this route
            if response.status_code >= 500 or (not is_file and not content.startswith("application/json")):
                failures.append(
                    f"{method.upper()} {path} [{content_type}] -> {response.status_code} {content}"
                )
    assert not failures, "\n".join(failures[:40])
    assert len(api_paths) > 100


HUGE = "9" * 20  # past the databases' 64-bit integers
PAGING_INPUTS = [
    ("/api/v1/models/", {"limit": HUGE}, {}),
    ("/api/v1/models/", {"offset": "9223372036854775808"}, {}),
    ("/api/v1/models/", {"skip": HUGE}, {}),
    ("/api/v1/models/", {"limit": "²"}, {}),
    ("/api/v1/models/", {"offset": "١٢"}, {}),
    ("/api/v1/models/", {}, {"HTTP_X_SKIP": HUGE}),
    ("/api/v1/models/", {}, {"HTTP_X_LIMIT": HUGE}),
    ("/list_models", {"limit": HUGE, "skip": "0"}, {}),
    ("/list_models", {"limit": "1", "skip": "²"}, {}),
    ("/list_clients", {"limit": "1", "skip": HUGE}, {}),
]


@pytest.mark.parametrize(("url", "params", "headers"), PAGING_INPUTS)
def test_paging_numbers_past_the_database_or_not_ascii_are_400(
    populated: Network, url: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = populated.api.get(url, params, **headers)
    refused(response, 400)


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"offset": "9223372036854775807"}, {}), ({}, {"HTTP_X_SKIP": "9223372036854775807"})],
)
def test_the_largest_skip_is_an_empty_page(
    populated: Network, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = populated.api.get("/api/v1/models/", params, **headers)
    assert response.status_code == 200, response.content
    assert response.json()["result"] == [] and response.json()["count"] > 0
