"""Fixtures for the chaos test: the services env, the seed, and a federation with beat on its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.conftest import CLIENT_ENV
from tests.e2e.harness import Federation, prepare_backend

# Redis databases for chaos runs, one per run, so that neither a concurrent e2e run (database 5)
# nor another chaos run flushes or consumes its tasks.
CHAOS_REDIS_DBS = range(10, 16)


@pytest.fixture
def services_env() -> None:
    """Skip unless PostgreSQL, Redis and S3 are given (eval "$(scripts/services.sh env)")."""
    missing = [
        name
        for name, ok in (
            ("DATABASE_URL=postgres://...", os.environ.get("DATABASE_URL", "").startswith("postgres")),
            ("CELERY_BROKER_URL=redis://...", os.environ.get("CELERY_BROKER_URL", "").startswith("redis://")),
            ("S3_BUCKET", bool(os.environ.get("S3_BUCKET"))),
        )
        if not ok
    ]
    if missing:
        pytest.skip(
            "the chaos test runs on PostgreSQL + Redis + S3 only; not set: "
            + ", ".join(missing)
            + ' (eval "$(scripts/services.sh env)", or make test-chaos)'
        )


@pytest.fixture
def chaos_seed() -> int:
    """FEDPLANE_CHAOS_SEED, or a fresh one; printed so a failing run can be replayed."""
    given = os.environ.get("FEDPLANE_CHAOS_SEED", "").strip()
    seed = int(given) if given else random.SystemRandom().randrange(1, 10**9)
    print(f"\nchaos seed {seed} (replay it with FEDPLANE_CHAOS_SEED={seed})")
    return seed


@contextlib.contextmanager
def chaos_federation(var_dir: Path, *, combiners: list[str], clients: dict[str, str]) -> Iterator[Federation]:
    """Controller, worker, beat (its own process), combiners and clients up, the digits example set."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        redis_db = stack.enter_context(redis_db_lease())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(harness, "E2E_REDIS_DB", redis_db)
            backend = prepare_backend(var_dir)
        stack.callback(backend.close)
        federation = Federation(backend, client_env=CLIENT_ENV)
        stack.callback(federation.stop)
        federation.start_controller()
        # Beat is a process of its own ("beat"), so the schedule can kill it apart from the worker.
        federation.start_worker(beat=False)
        federation.start_beat()
        for name in combiners:
            federation.start_combiner(name)
        federation.upload_digits()
        for index, (name, combiner) in enumerate(clients.items()):
            federation.start_client(name, index, len(clients), combiner=combiner)
        federation.wait_clients_online(len(clients))
        print(f"federation up in {time.monotonic() - started:.1f} s on {backend.description}")
        yield federation


@contextlib.contextmanager
def redis_db_lease() -> Iterator[int]:
    """A Redis database no other chaos run on this machine holds (an flock per database)."""
    folder = harness.ROOT / "var" / "run"
    folder.mkdir(parents=True, exist_ok=True)
    for db in CHAOS_REDIS_DBS:
        with (folder / f"chaos-redis-{db}.lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            yield db
            return
    raise RuntimeError(f"every chaos Redis database ({CHAOS_REDIS_DBS}) is held by another run")
