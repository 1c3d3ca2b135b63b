"""Round overhead: session time per round minus the clients' own task time, with N no-op clients.

    eval "$(scripts/services.sh env)"
    .venv/bin/python bench/round_overhead.py             # N = 10, 50, 100
    .venv/bin/python bench/round_overhead.py --quick     # N = 10, 50
    .venv/bin/python bench/round_overhead.py --clients 10 --rounds 3

The federation is the end-to-end tests' (tests/e2e/harness.py): the controller served as deployed
(gunicorn), a Celery worker on Redis with beat, one combiner, on a fresh PostgreSQL database,
Redis database and S3 bucket; the clients are real `python -m fedplane.client start` processes,
heartbeat every second. Auth is
on, as in a deployment: every process holds a token of its own (`--no-auth` runs them tokenless).
Their compute package does nothing: train copies the model (10,000 floats) to its output, validate
writes fixed metrics. Clients are added as N grows; one federation serves every N.

At each N, two 5-round sessions with validation run:
- event-driven (the default): a stored combiner report or the last expected validation runs the
  waiting session step at once;
- the baseline, polling: the controller and worker restarted with FEDPLANE_WAKE_STEPS=0, so a
  step only looks again after orchestration.POLL_SECONDS.

Per session: (finished_at - started_at) / rounds, minus the clients' task time per round: the
mean over rounds of the slowest client's `processing_time` (download, train, upload), which the
client sends in its MODEL_UPDATE status, and of the slowest validation's `processing_time`
(download, validate), which fedplane's client sends in the ModelValidation's meta (FEDn 0.9.5's
client leaves it empty: with it, validation would count as overhead). Both columns are printed,
so the figure with validation counted as overhead is the overhead plus the validate column.

Target (issue 14): under 0.3 s per round at 100 clients; 10 and 50 are printed as the curve.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedplane.api_client import APIClient  # noqa: E402
from tests.e2e.harness import Federation, FederationError, prepare_backend  # noqa: E402

RESULT_PREFIX = "BENCH-RESULT "
TARGET_CLIENTS = 100
TARGET_SECONDS = 0.3
# A round whose updates do not all come is closed after this long: it shows, but costs less time.
ROUND_TIMEOUT = 60
MODEL_FLOATS = 10_000
# What one client process holds (measured: 60-80 MB), and what the controller, worker, beat and
# combiner need besides; an N that does not fit in the available memory is skipped, and said so.
CLIENT_MB = 90
STACK_MB = 1500
FEDN_YAML = """\
entry_points:
  train:
    command: sh train.sh
  validate:
    command: sh validate.sh
"""
TRAIN_SH = """\
cp "$1" "$2"
printf '{"num_examples": 1}' > "$2-metadata"
"""
VALIDATE_SH = """\
printf '{"accuracy": 1.0, "loss": 0.0}' > "$2"
"""


@dataclass
class SessionTiming:
    rounds: int
    per_round: float
    client_task: float
    round_durations: list[float]
    validation_task: float = 0.0
    # Median seconds of each stretch of a round (see PHASES), where the round's time goes.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        return self.per_round - self.client_task - self.validation_task


def emit(**result: object) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def mint_tokens(federation: Federation, holders: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Tokens for {key: (role, subject)}, minted and recorded as `manage.py fedplane_token` does,
    all in one process (one `fedplane_token` call per client would take minutes at 100)."""
    code = (
        "import json\n"
        "from apps.identity.services import token_issue\n"
        f"holders = json.loads({json.dumps(json.dumps(holders))})\n"
        "print(json.dumps({key: token_issue(role=role, subject=subject, days=1, issued_by='bench').token "
        "for key, (role, subject) in holders.items()}))\n"
    )
    done = federation.manage("shell", "-c", code)
    if done.returncode != 0:
        raise FederationError(f"minting tokens failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_mb() -> int:
    for raw in Path("/proc/meminfo").read_text().splitlines():
        if raw.startswith("MemAvailable:"):
            return int(raw.split()[1]) // 1024
    return 0


def build_noop_package(work: Path) -> tuple[Path, Path]:
    """The no-op compute package (folder `client`, as FEDn packs it) and a seed of MODEL_FLOATS floats."""
    import numpy as np

    from fedplane import numpyhelper

    folder = work / "noop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fedn.yaml").write_text(FEDN_YAML)
    (folder / "train.sh").write_text(TRAIN_SH)
    (folder / "validate.sh").write_text(VALIDATE_SH)
    package = work / "noop.tgz"
    with tarfile.open(package, "w:gz") as archive:
        archive.add(folder, arcname="client")
    seed = work / "seed.npz"
    numpyhelper.save([np.zeros(MODEL_FLOATS, np.float32)], seed)
    return package, seed


def set_wake(federation: Federation, enabled: bool) -> None:
    """Restart the controller and the worker with FEDPLANE_WAKE_STEPS on or off (clients stay connected)."""
    value = "1" if enabled else "0"
    if federation.processes["controller"].env.get("FEDPLANE_WAKE_STEPS", "1") == value:
        return
    for name in ("worker", "controller"):
        process = federation.processes[name]
        federation.signal(name, signal.SIGTERM)
        try:
            process.popen.wait(timeout=20)
        except Exception:
            federation.kill(name)
        process.env = {**process.env, "FEDPLANE_WAKE_STEPS": value}
    federation.restart("controller")
    federation.wait_for(
        "the controller", lambda: federation.api.get_controller_status()["state"], 90, watch=("controller",)
    )
    federation.restart("worker")


def session_timing(database_url: str, session_id: str) -> SessionTiming:
    """The session's and rounds' times as the controller stored them, and the clients' task times."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as connection:
        session_pk, started, finished = connection.execute(
            "SELECT id, started_at, finished_at FROM fl_sessions_session WHERE session_id = %s", (session_id,)
        ).fetchone()
        rounds = connection.execute(
            "SELECT round_id, started_at, finished_at FROM fl_sessions_round WHERE session_id = %s "
            "ORDER BY number",
            (session_pk,),
        ).fetchall()
        reported = dict(
            connection.execute(
                "SELECT r.round_id, max(c.received_at) FROM fl_sessions_combinerreport c "
                "JOIN fl_sessions_round r ON r.id = c.round_id WHERE r.session_id = %s GROUP BY r.round_id",
                (session_pk,),
            ).fetchall()
        )
        updates = connection.execute(
            "SELECT data, timestamp FROM fl_sessions_status WHERE session_id = %s AND type = 'MODEL_UPDATE'",
            (session_id,),
        ).fetchall()
        validations = connection.execute(
            "SELECT model_id, meta FROM fl_sessions_validation WHERE session_id = %s", (session_id,)
        ).fetchall()
    slowest: dict[str, float] = defaultdict(float)
    last_update: dict[str, dt.datetime] = {}
    for data, timestamp in updates:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            meta = json.loads(json.loads(data)["meta"])
            round_id = str(json.loads(meta.get("config") or "{}").get("round_id", ""))
            slowest[round_id] = max(slowest[round_id], float(meta["processing_time"]))
            last_update[round_id] = max(last_update.get(round_id, timestamp), timestamp)
    slowest_validation: dict[str, float] = defaultdict(float)
    for model_id, meta_text in validations:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            seconds = float(json.loads(meta_text)["processing_time"])
            slowest_validation[model_id] = max(slowest_validation[model_id], seconds)
    durations = [
        (end - start).total_seconds() for _, start, end in rounds if start is not None and end is not None
    ]
    count = len(rounds)
    return SessionTiming(
        rounds=count,
        per_round=(finished - started).total_seconds() / max(count, 1),
        client_task=mean(slowest.values()) if slowest else 0.0,
        round_durations=durations,
        validation_task=mean(slowest_validation.values()) if slowest_validation else 0.0,
        phases=round_phases(rounds, last_update, reported),
    )


# A round's stretches, in order: Start sent -> the last client's update (every client validates the
# previous model, then trains) -> the combiner's report stored -> the model committed -> the next
# round's Start sent.
PHASES = ("start to last update", "last update to report", "report to commit", "commit to next start")


def round_phases(
    rounds: list[tuple[str, dt.datetime | None, dt.datetime | None]],
    last_update: dict[str, dt.datetime],
    reported: dict[str, dt.datetime],
) -> dict[str, float]:
    stretches: dict[str, list[float]] = {name: [] for name in PHASES}
    for (round_id, started, finished), following in zip(rounds, [*rounds[1:], None], strict=True):
        update, report = last_update.get(str(round_id)), reported.get(round_id)
        if None in (started, finished, update, report):
            continue
        points = [started, update, report, finished]
        if following is not None and following[1] is not None:
            points.append(following[1])
        for name, (a, b) in zip(PHASES, itertools.pairwise(points), strict=False):
            stretches[name].append((b - a).total_seconds())
    return {name: median(values) for name, values in stretches.items() if values}


def client_name(index: int) -> str:
    return f"noop-{index:03d}"


def run_session(
    federation: Federation, database_url: str, session_id: str, clients: int, rounds: int
) -> SessionTiming:
    federation.start_session(
        session_id,
        rounds=rounds,
        round_timeout=ROUND_TIMEOUT,
        min_clients=clients,
        requested_clients=clients,
        validate=True,
    )
    session = federation.wait_session_end(session_id, timeout=rounds * (ROUND_TIMEOUT + 60) + 60)
    if session["status"] != "Finished":
        raise RuntimeError(f"session {session_id} ended {session['status']}: {session.get('status_reason')}")
    return session_timing(database_url, session_id)


def measure(
    federation: Federation, database_url: str, counts: list[int], rounds: int, tokens: dict[str, str]
) -> None:
    started_clients = 0
    wake_first = True
    print(
        f"{'N':>4} {'variant':<14} {'s/round':>8} {'clients s':>9} {'validate s':>10} {'overhead s':>10}"
        "   round durations (s)"
    )
    for clients in counts:
        needed = (clients - started_clients) * CLIENT_MB
        if needed > available_mb() - STACK_MB:
            emit(
                name=f"{clients} no-op clients: overhead per round",
                unit="s",
                note=f"skipped: {available_mb()} MB available, about {needed + STACK_MB} MB needed",
            )
            continue
        try:
            begun = time.monotonic()
            for index in range(started_clients, clients):
                name = client_name(index)
                federation.start_client(name, index, max(counts), token=tokens.get(name))
            started_clients = clients
            federation.wait_clients_online(clients, timeout=60 + 3 * clients)
            print(f"{clients} clients online in {time.monotonic() - begun:.0f} s", flush=True)
            # Alternate which variant runs first, so the restarts between them are one per N.
            timings: dict[bool, SessionTiming] = {}
            for wake in (True, False) if wake_first else (False, True):
                set_wake(federation, wake)
                variant = "event-driven" if wake else "polling"
                timing = run_session(
                    federation, database_url, f"overhead-{clients}-{variant}", clients, rounds
                )
                timings[wake] = timing
                print(
                    f"{clients:>4} {variant:<14} {timing.per_round:>8.2f} {timing.client_task:>9.2f} "
                    f"{timing.validation_task:>10.2f} {timing.overhead:>10.2f}   "
                    f"{' '.join(f'{d:.2f}' for d in timing.round_durations)}",
                    flush=True,
                )
                print(
                    f"{'':>20} median s: "
                    + ", ".join(f"{name} {seconds:.3f}" for name, seconds in timing.phases.items()),
                    flush=True,
                )
            wake_first = not wake_first
            emit(
                name=f"{clients} no-op clients: overhead per round",
                value=round(timings[True].overhead, 3),
                unit="s",
                baseline=round(timings[False].overhead, 3),
                baseline_name="polling steps",
                target={"at_most": TARGET_SECONDS} if clients == TARGET_CLIENTS else {},
                note=(
                    f"{timings[True].per_round:.2f} s/round, clients' task {timings[True].client_task:.2f} s"
                    f" + validation {timings[True].validation_task:.2f} s"
                ),
            )
        except (FederationError, RuntimeError) as exc:
            # The curve stops here; the table says at which N and why (the logs are in --keep's folder).
            print(f"{clients} clients: {exc}", flush=True)
            emit(
                name=f"{clients} no-op clients: overhead per round",
                unit="s",
                target={"at_most": TARGET_SECONDS} if clients == TARGET_CLIENTS else {"at_most": 0},
                note=f"failed: {str(exc).splitlines()[0][:160]}",
            )
            return


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 10 and 50 only")
    parser.add_argument("--clients", default=None, help="comma-separated N (default 10,50,100)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--no-auth", action="store_true", help="tokenless controller, combiner and clients")
    args = parser.parse_args()
    counts = sorted(int(n) for n in (args.clients or ("10,50" if args.quick else "10,50,100")).split(","))

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        emit(name="round overhead", note='needs the services: eval "$(scripts/services.sh env)"')
        return 1
    # The runner stops a figure with SIGTERM: unwind, so every process stops and the storage goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="fedplane-bench-rounds-"))
    backend = prepare_backend(work / "var")
    federation = Federation(
        backend, env={} if args.no_auth else {"FEDN_JWT_SECRET_KEY": secrets.token_hex(32)}
    )
    try:
        tokens: dict[str, str] = {}
        if not args.no_auth:
            if federation.manage("migrate", "-v0").returncode != 0:
                raise FederationError("migrate failed")
            holders = {"admin": ("admin", "bench"), "combiner": ("combiner", "combiner")}
            holders.update({client_name(i): ("client", client_name(i)) for i in range(max(counts))})
            tokens = mint_tokens(federation, holders)
            federation.env["FEDPLANE_CONTROL_TOKEN"] = tokens["admin"]
            federation.api = APIClient("127.0.0.1", federation.port, timeout=30, token=tokens["admin"])
        # As deployed: runserver takes a thread, and a kept PostgreSQL connection, per request, so
        # 100 clients registering at once ran PostgreSQL out of connections.
        federation.start_controller(gunicorn=True)
        federation.start_worker()
        # Room for every client: a combiner takes 30 by default (FEDn's max_clients).
        federation.start_combiner(
            "combiner", token=tokens.get("combiner"), extra_args=["--max-clients", str(max(counts) + 10)]
        )
        package, seed = build_noop_package(work / "package")
        if not federation.api.set_active_package(str(package), "numpyhelper", name="noop").get(
            "success", True
        ):
            raise RuntimeError("the no-op package was refused")
        if not federation.api.set_active_model(str(seed)).get("success", True):
            raise RuntimeError("the seed model was refused")
        auth = "auth off (tokenless)" if args.no_auth else "auth on (a token per process)"
        print(f"federation up on {backend.description}, {auth}; {available_mb()} MB available", flush=True)
        measure(federation, backend.env["DATABASE_URL"], counts, args.rounds, tokens)
    finally:
        federation.stop()
        backend.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
