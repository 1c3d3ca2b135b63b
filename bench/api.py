"""The API at scale: status lists on PostgreSQL under gunicorn, against a plain Django view in the same server.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/api.py             # 100,000 statuses, 4 blocks of 3 s per endpoint
    .venv/bin/python bench/api.py --quick     # the same data, shorter blocks

A fresh database (dropped afterwards) on the PostgreSQL that DATABASE_URL names is migrated and
filled with statuses by COPY, then vacuumed and analyzed as autovacuum would after such a load:
about 100 clients and their combiners as senders, FEDn's status types in the proportions a
session makes them, timestamps spread over 30 days. The controller
runs as deployed (gunicorn with controlplane/gunicorn_conf.py, 2 workers), with auth on: every
request carries an admin token, as FEDn's clients send one. The settings module
bench.api_settings adds one route, /bench/plain, a plain Django JSON view: the baseline.

Load: threads with keep-alive connections (http.client), a few at once. Each endpoint is
measured in blocks that alternate with blocks of the plain view, so both see the same load on
a shared machine; the ratio is taken from those adjacent blocks. Latencies are per request,
measured by the load generator.

Targets (issue 14): each endpoint at least 0.25x the plain view's rate, p95 under 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GUNICORN = str(Path(PY).with_name("gunicorn"))
RESULT_PREFIX = "BENCH-RESULT "
STATUS_TABLE = "fl_sessions_status"
SENDERS = 100
# Per client and round a FEDn session logs a training request, its start, the update, a
# validation request and the validation; the rest are combiner and controller logs.
TYPE_WEIGHTS = {
    "LOG": 35,
    "MODEL_UPDATE_REQUEST": 15,
    "MODEL_UPDATE": 15,
    "MODEL_VALIDATION_REQUEST": 15,
    "MODEL_VALIDATION": 15,
    "INFERENCE": 5,
}
RATE_RATIO_TARGET = 0.25
P95_TARGET_MS = 20.0
# Variables of the caller that must not reach the controller: it gets its own database and no
# broker or object store (nothing here enqueues or stores).
SCRUBBED_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "S3_BUCKET",
    "DJANGO_SETTINGS_MODULE",
    "FEDN_AUTH_TOKEN",
    "FEDN_JWT_SECRET_KEY",
)


@dataclass(frozen=True)
class Endpoint:
    label: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Sample:
    """Requests of one endpoint over some blocks: how many, in how long, and each one's latency."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def emit(**result: object) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# ---------------------------------------------------------------- database


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of its own on the server, dropped (with any connection left) on the way out."""
    import psycopg

    name = f"fp_bench_{os.getpid()}"
    admin_url = _with_path(server_url, "/postgres")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_path(server_url, f"/{name}")
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill_statuses(database_url: str, count: int, seed: int = 0) -> float:
    """`count` statuses by COPY, then VACUUM ANALYZE; returns the seconds it took."""
    import psycopg

    rng = random.Random(seed)
    clients = [f"client-{n:03d}" for n in range(SENDERS)]
    combiners = ["combiner-a", "combiner-b"]
    sessions = [f"session-{n:02d}" for n in range(40)]
    types, weights = zip(*TYPE_WEIGHTS.items(), strict=True)
    end = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    span = dt.timedelta(days=30).total_seconds()
    columns = "sender_name, sender_role, status, log_level, data, correlation_id, timestamp, type, extra, session_id"
    started = time.monotonic()
    with (
        psycopg.connect(database_url) as connection,
        connection.cursor() as cursor,
        cursor.copy(f"COPY {STATUS_TABLE} ({columns}) FROM STDIN") as copy,
    ):
        for _ in range(count):
            kind = rng.choices(types, weights)[0]
            from_combiner = kind == "LOG" and rng.random() < 0.3
            sender = rng.choice(combiners) if from_combiner else rng.choice(clients)
            model_id = uuid.UUID(int=rng.getrandbits(128)).hex
            data = ""
            if kind in ("MODEL_UPDATE", "MODEL_VALIDATION"):
                data = json.dumps({"model_id": model_id, "meta": {"processing_time": rng.random()}})
            copy.write_row(
                (
                    sender,
                    "COMBINER" if from_combiner else "WORKER",
                    f"{kind.replace('_', ' ').capitalize()} for model {model_id}",
                    "AUDIT" if kind in ("MODEL_UPDATE", "MODEL_VALIDATION") else "INFO",
                    data,
                    str(uuid.UUID(int=rng.getrandbits(128))),
                    end - dt.timedelta(seconds=rng.random() * span),
                    kind,
                    "",
                    rng.choice(sessions),
                )
            )
    # What autovacuum does to a table after a bulk load, at once rather than whenever it comes
    # round: statistics for the planner, and the visibility map, so counts and key-only reads are
    # answered from the indexes without visiting every row.
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"VACUUM ANALYZE {STATUS_TABLE}")
        # A server with synchronous_commit off (the test services) flushes the load's commit a
        # moment later, and until then VACUUM marks no page all-visible: vacuum again until it has.
        deadline = time.monotonic() + 30
        while not all_visible(connection, STATUS_TABLE) and time.monotonic() < deadline:
            time.sleep(0.3)
            connection.execute(f"VACUUM {STATUS_TABLE}")
    return time.monotonic() - started


def all_visible(connection: psycopg.Connection[Any], table: str) -> bool:
    """Whether VACUUM has marked every page of the table all-visible."""
    row = connection.execute(
        "SELECT relallvisible >= relpages FROM pg_class WHERE oid = %s::regclass", (table,)
    ).fetchone()
    return bool(row and row[0])


# ---------------------------------------------------------------- the server


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def controller_env(database_url: str, var_dir: Path) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "bench.api_settings",
        "DATABASE_URL": database_url,
        "FEDPLANE_VAR_DIR": str(var_dir),
        # The demo's secret key and ALLOWED_HOSTS are accepted on loopback (controlplane/checks.py).
        "FEDPLANE_DEMO": "1",
        "FEDN_JWT_SECRET_KEY": secrets.token_hex(32),
        "WEB_CONCURRENCY": "2",
        "FEDPLANE_LOG_LEVEL": "WARNING",
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


@contextlib.contextmanager
def gunicorn(env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    """The controller as deployed, in a process group of its own, stopped on the way out."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                GUNICORN,
                "-c",
                "controlplane/gunicorn_conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/bench/plain")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# ---------------------------------------------------------------- load


def load(port: int, endpoint: Endpoint, token: str, seconds: float, concurrency: int) -> Sample:
    """`concurrency` keep-alive connections sending `endpoint` back to back for `seconds`."""
    headers = {"Authorization": f"Bearer {token}", **dict(endpoint.headers)}
    sample = Sample()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def one_connection() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies: list[float] = []
        errors = 0
        while time.monotonic() < stop_at:
            sent = time.perf_counter()
            try:
                connection.request("GET", endpoint.path, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if response.status != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - sent)
        connection.close()
        with lock:
            sample.latencies.extend(latencies)
            sample.errors += errors

    threads = [threading.Thread(target=one_connection) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sample.seconds = time.monotonic() - started
    return sample


def check_answers(port: int, token: str, endpoints: list[Endpoint]) -> None:
    """Each endpoint answers 200 with what it should, before anything is timed."""
    for endpoint in endpoints:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request(
            "GET", endpoint.path, headers={"Authorization": f"Bearer {token}", **dict(endpoint.headers)}
        )
        response = connection.getresponse()
        body = response.read()
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"{endpoint.label}: HTTP {response.status}: {body[:300]!r}")
        answer = json.loads(body)
        if isinstance(answer, dict) and "result" in answer:
            print(f"  {endpoint.label}: count {answer['count']}, {len(answer['result'])} on the page")
        else:
            print(f"  {endpoint.label}: {str(answer)[:80]}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter blocks (2 x 2 s per endpoint)")
    parser.add_argument("--statuses", type=int, default=100_000)
    parser.add_argument("--blocks", type=int, default=None, help="alternating blocks per endpoint (4)")
    parser.add_argument("--block-seconds", type=float, default=None, help="seconds per block (3)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections at once (4)")
    args = parser.parse_args()
    blocks = args.blocks or (2 if args.quick else 4)
    block_seconds = args.block_seconds or (2.0 if args.quick else 3.0)

    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        emit(
            name="API on PostgreSQL",
            target={"at_least": 0},
            note='needs DATABASE_URL: eval "$(scripts/services.sh env)"',
        )
        return 1
    # The runner stops a figure with SIGTERM: unwind, so the server stops and the database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var_dir = Path(tempfile.mkdtemp(prefix="fedplane-bench-api-"))
    try:
        with fresh_database(server_url) as database_url:
            env = controller_env(database_url, var_dir)
            manage(env, "migrate", "-v0")
            seconds = fill_statuses(database_url, args.statuses)
            print(f"{args.statuses:,} statuses written in {seconds:.1f} s")
            token = manage(env, "fedplane_token", "--role", "admin", "--subject", "bench", "--days", "1")
            return measure(env, token, var_dir, blocks, block_seconds, args.concurrency)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def measure(
    env: dict[str, str], token: str, var_dir: Path, blocks: int, block_seconds: float, concurrency: int
) -> int:
    plain = Endpoint("plain view", "/bench/plain")
    endpoints = [
        Endpoint("statuses ?limit=100", "/api/v1/statuses/?limit=100"),
        Endpoint(
            "statuses by sender and type",
            "/api/v1/statuses/?sender.name=client-042&type=MODEL_UPDATE&limit=100",
        ),
        Endpoint("statuses count", "/api/v1/statuses/count"),
        Endpoint("statuses X-Skip: 90000", "/api/v1/statuses/", (("X-Skip", "90000"), ("X-Limit", "100"))),
    ]
    port = free_port()
    with gunicorn(env, port, var_dir / "gunicorn.log"):
        check_answers(port, token, [plain, *endpoints])
        # Warm both workers: imports, connections and caches of the first requests are not measured.
        for endpoint in [plain, *endpoints]:
            load(port, endpoint, token, 0.5, concurrency)
        print(
            f"\n{blocks} blocks of {block_seconds:g} s per endpoint, alternating with the plain view; "
            f"{concurrency} connections; auth on (admin token)"
        )
        print(
            f"{'endpoint':<30} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7}   {'plain req/s':>11} {'p95 ms':>7}  ratio"
        )
        for endpoint in endpoints:
            measured, baseline = Sample(), Sample()
            for _ in range(blocks):
                for into, which in ((baseline, plain), (measured, endpoint)):
                    block = load(port, which, token, block_seconds, concurrency)
                    into.seconds += block.seconds
                    into.latencies += block.latencies
                    into.errors += block.errors
            report(endpoint, measured, baseline)
    return 0


def report(endpoint: Endpoint, measured: Sample, baseline: Sample) -> None:
    ratio = measured.rate / baseline.rate if baseline.rate else float("nan")
    print(
        f"{endpoint.label:<30} {measured.rate:>8.0f} {measured.percentile_ms(0.5):>7.1f} "
        f"{measured.percentile_ms(0.95):>7.1f}   {baseline.rate:>11.0f} {baseline.percentile_ms(0.95):>7.1f}  "
        f"{ratio:.2f}" + (f"  ({measured.errors} errors)" if measured.errors else "")
    )
    note = f"p50 {measured.percentile_ms(0.5):.1f} ms"
    if measured.errors or baseline.errors:
        note += f"; {measured.errors} errors, {baseline.errors} on the plain view"
    emit(
        name=f"{endpoint.label}: rate",
        value=round(measured.rate, 1),
        unit="req/s",
        baseline=round(baseline.rate, 1),
        baseline_name="plain view",
        target={"ratio_at_least": RATE_RATIO_TARGET},
        note=note,
    )
    emit(
        name=f"{endpoint.label}: p95",
        value=round(measured.percentile_ms(0.95), 2),
        unit="ms",
        baseline=round(baseline.percentile_ms(0.95), 2),
        baseline_name="plain view",
        target={"at_most": P95_TARGET_MS},
    )


if __name__ == "__main__":
    sys.exit(main())
