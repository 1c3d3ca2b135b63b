"""Where an API request's time goes: the bench's list endpoints profiled in-process.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/api_profile.py                       # every endpoint, 300 requests each
    .venv/bin/python bench/api_profile.py filter --sort tottime --lines 40

The database is bench/api.py's (a fresh one on DATABASE_URL's server, 100,000 statuses by COPY,
dropped afterwards), the settings its bench.api_settings with auth on and an admin token on every
request. Requests go through Django's test client in this process, so the figures are the
application's CPU alone: no gunicorn, no load generator. After a warm-up the loaded objects are
frozen out of the garbage collector's sight, as the gunicorn workers do (controlplane/gunicorn_conf.py).
Per endpoint it prints the mean CPU time per request unprofiled, then a cProfile listing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import api as bench_api

ENDPOINTS = {
    "limit": ("/api/v1/statuses/?limit=100", {}),
    "filter": ("/api/v1/statuses/?sender.name=client-042&type=MODEL_UPDATE&limit=100", {}),
    "count": ("/api/v1/statuses/count", {}),
    "skip": ("/api/v1/statuses/", {"HTTP_X_SKIP": "90000", "HTTP_X_LIMIT": "100"}),
    "plain": ("/bench/plain", {}),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "endpoints", nargs="*", metavar="ENDPOINT", help=f"any of {', '.join(ENDPOINTS)} (all)"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--statuses", type=int, default=100_000)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (cumulative)")
    parser.add_argument("--lines", type=int, default=45, help="profile lines per endpoint (45)")
    args = parser.parse_args()
    unknown = sorted(set(args.endpoints) - set(ENDPOINTS))
    if unknown:
        parser.error(f"unknown endpoint {', '.join(unknown)}; choose from {', '.join(ENDPOINTS)}")
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        print('needs DATABASE_URL: eval "$(scripts/services.sh env)"', file=sys.stderr)
        return 1
    var_dir = Path(tempfile.mkdtemp(prefix="fedplane-api-profile-"))
    try:
        with bench_api.fresh_database(server_url) as database_url:
            env = bench_api.controller_env(database_url, var_dir)
            bench_api.manage(env, "migrate", "-v0")
            bench_api.fill_statuses(database_url, args.statuses)
            token = bench_api.manage(
                env, "fedplane_token", "--role", "admin", "--subject", "bench", "--days", "1"
            )
            for name in bench_api.SCRUBBED_ENV:
                os.environ.pop(name, None)
            os.environ.update(env)
            profile(token, args.endpoints or list(ENDPOINTS), args.requests, args.sort, args.lines)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0


def profile(token: str, endpoints: list[str], requests: int, sort: str, lines: int) -> None:
    import django

    django.setup()
    from django.db import connections
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    try:
        for name in endpoints:
            path, headers = ENDPOINTS[name]
            for _ in range(30):
                answer = client.get(path, **headers)
                assert answer.status_code == 200, answer.content[:300]
        gc.collect()
        gc.freeze()
        for name in endpoints:
            path, headers = ENDPOINTS[name]
            started = time.process_time()
            for _ in range(requests):
                client.get(path, **headers)
            cpu_ms = (time.process_time() - started) / requests * 1000
            print(f"\n== {name} ({path}): {cpu_ms:.3f} ms of CPU per request, unprofiled", flush=True)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests):
                client.get(path, **headers)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats(sort).print_stats(lines)
    finally:
        connections.close_all()


if __name__ == "__main__":
    sys.exit(main())
