"""Conformance tests reuse the API suite's fixtures: a DRF client, artifact storage, the network factory."""

from tests.api.conftest import _auth_off, api, artifact_store, network, populated  # noqa: F401
