"""API fixtures: a DRF test client, per-test artifact storage and the network factory."""

from collections.abc import Iterator
from typing import Any

import pytest

from .factories import Network, status_doc, validation_doc

# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _auth_off(settings: Any) -> None:
    """Auth is off unless a test turns it on (as FEDn without FEDN_JWT_SECRET_KEY)."""
    settings.FEDN_JWT_SECRET_KEY = ""


@pytest.fixture(autouse=True)
def artifact_store(request: pytest.FixtureRequest) -> Any:
    """Every API test stores artifacts in its own place: S3 when it asks for it, else tmp files."""
    if "s3_storage" in request.fixturenames:
        return request.getfixturevalue("s3_storage")
    return request.getfixturevalue("fs_storage")


@pytest.fixture
def api(db: None) -> Any:
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def network(api: Any) -> Network:
    return Network(api)


def build_populated(network: Network) -> Network:
    """A small network with at least two of everything, so filters and sorting can discriminate.

    Packages "old" then "digits" (active); a seed and its child in session-a; combiner-1 with
    client-a (online) and client-b (offline), combiner-2 with client-c (online); sessions
    session-a and session-b; rounds 1 (reported by combiner-1) and 2; two statuses and two
    validations that differ in every filtered field. `network.made` names what was made.
    """
    network.made["old_package"] = network.package(name="old", description="first upload", file_name="old.tgz")
    network.made["package"] = network.package(name="digits", description="digits mlp", file_name="digits.tgz")
    seed = network.made["seed"] = network.seed()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="combiner-2.local", port=12081)
    network.client("client-a", combiner="combiner-1")
    network.client("client-b", combiner="combiner-1", status="offline")
    network.client("client-c", combiner="combiner-2")
    network.session("session-a", model_id=seed["model"])
    network.session("session-b", aggregator="fedopt")
    first_round = network.round("session-a")
    assert network.report(first_round["round_id"], "combiner-1").status_code == 201
    network.round("session-b")
    network.made["child"] = network.child_model(seed["model"], "session-a")
    network.statuses(
        status_doc(),
        status_doc(
            sender={"name": "client-b", "role": "COMBINER"},
            type="LOG",
            logLevel="DEBUG",
            sessionId="session-b",
            correlationId="corr-2",
            timestamp="2024-05-23T08:00:00Z",
        ),
    )
    network.validations(
        validation_doc(modelId=seed["model"]),
        validation_doc(
            sender={"name": "client-c", "role": "OTHER"},
            receiver={"name": "combiner-2", "role": "REDUCER"},
            modelId="model-b",
            sessionId="session-b",
            correlationId="corr-2",
            timestamp="2024-05-23T08:00:00Z",
        ),
    )
    return network


@pytest.fixture
def populated(network: Network) -> Network:
    return build_populated(network)


@pytest.fixture(scope="module")
def populated_once(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    """`populated`, built once per module inside a transaction that is rolled back at its end.

    Each test still runs in its own savepoint (pytest-django's `db`), so it may change rows
    freely; read-only suites use this to avoid rebuilding the network for every test.
    """
    from django.conf import settings
    from django.db import transaction
    from django.test import override_settings
    from rest_framework.test import APIClient

    media = tmp_path_factory.mktemp("populated-media")
    storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}}
    with (
        django_db_blocker.unblock(),
        override_settings(FEDN_JWT_SECRET_KEY="", STORAGES={**settings.STORAGES, "default": storage}),
    ):
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_populated(Network(APIClient()))
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
