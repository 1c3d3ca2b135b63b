"""Fixtures for end-to-end tests: one federation per module, torn down with its storage."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Federation, prepare_backend

# Short training: accuracy still rises round over round, and each round stays fast.
CLIENT_ENV = {"FEDPLANE_EPOCHS": "1"}


@contextlib.contextmanager
def running_federation(
    var_dir: Path,
    *,
    combiners: list[str],
    clients: dict[str, str | None],
    client_envs: dict[str, dict[str, str]] | None = None,
    gunicorn: bool = False,
) -> Iterator[Federation]:
    """Controller, worker, the named combiners, and clients (name -> preferred combiner) up and online.

    `client_envs` adds environment variables for single clients (e.g. slower training); with
    `gunicorn` the controller is served as `make serve` serves it.
    """
    started = time.monotonic()
    backend = prepare_backend(var_dir)
    federation = Federation(backend, client_env=CLIENT_ENV)
    try:
        federation.start_controller(gunicorn=gunicorn)
        federation.start_worker()
        for name in combiners:
            federation.start_combiner(name)
        federation.upload_digits()
        for index, (name, combiner) in enumerate(clients.items()):
            federation.start_client(
                name, index, len(clients), combiner=combiner, extra_env=(client_envs or {}).get(name)
            )
        federation.wait_clients_online(len(clients))
        print(f"\nfederation up in {time.monotonic() - started:.1f} s on {backend.description}")
        yield federation
    finally:
        federation.stop()
        backend.close()


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
