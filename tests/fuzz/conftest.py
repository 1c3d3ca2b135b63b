"""The fuzz run's server (one per pytest session); the root conftest.py prints the closing summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.server import FuzzServer, running_server
from tests.fuzz.tally import WORKER_OUTPUT_KEY, exported


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    var_dir: Path = tmp_path_factory.mktemp("fuzz")
    with running_server(var_dir) as server:
        yield server


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this worker's counts to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_OUTPUT_KEY] = exported()
