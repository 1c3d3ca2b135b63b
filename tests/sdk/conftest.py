import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedplane import APIClient

from .network import Network, build_network

# The live server listens on the loopback address only.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")


@pytest.fixture
def network(live_server: Any, fs_storage: Any, tmp_path: Path, transactional_db: None) -> Network:
    return build_network(live_server.url, tmp_path)


@pytest.fixture
def api(network: Network, monkeypatch: pytest.MonkeyPatch) -> Iterator[APIClient]:
    monkeypatch.delenv("FEDN_AUTH_TOKEN", raising=False)
    with APIClient(network.host, network.port, timeout=30) as client:
        yield client


@pytest.fixture
def sessions_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions started here are only recorded: no orchestration picks them up."""
    from apps.sessions import steps

    monkeypatch.setattr(steps.session_advance, "delay", lambda *args, **kwargs: None)
