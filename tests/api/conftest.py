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


@pytest.fixture
def populated(network: Network) -> Iterator[Network]:
    """A small network with one of everything: package, seed, two combiners, three clients,
    a session with a round and a report, a child model, statuses and validations."""
    network.package()
    seed = network.seed()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="combiner-2.local", port=12081)
    network.client("client-a", combiner="combiner-1")
    network.client("client-b", combiner="combiner-1", status="offline")
    network.client("client-c", combiner="combiner-2")
    network.session("session-a", model_id=seed["model"])
    round_doc = network.round("session-a")
    assert network.report(round_doc["round_id"], "combiner-1").status_code == 201
    network.child_model(seed["model"], "session-a")
    network.statuses(
        status_doc(),
        status_doc(
            sender={"name": "client-b", "role": "WORKER"}, type="LOG", logLevel="DEBUG", sessionId="session-b"
        ),
    )
    network.validations(
        validation_doc(modelId=seed["model"]),
        validation_doc(
            sender={"name": "client-c", "role": "WORKER"}, modelId="model-b", sessionId="session-b"
        ),
    )
    yield network
