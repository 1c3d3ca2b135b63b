"""A whole federation as separate processes, for end-to-end and fault tests.

`Backend` gives one run its own storage: a fresh PostgreSQL database, a dedicated Redis database
and a fresh S3 bucket when the services' variables are set (scripts/services.sh env), otherwise
the embedded defaults under a temporary FEDPLANE_VAR_DIR (SQLite, files, filesystem broker).
`Federation` starts the controller, the Celery worker, beat, combiners and clients on top of it,
and can kill, stop and restart any of them. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from fedplane.api_client import APIClient
from fedplane.tokenfile import write_token_file
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
DIGITS_CLIENT = ROOT / "examples" / "digits" / "client"
# The Redis databases e2e runs use as their broker, one per running federation (several test
# runs may share one Redis); flushed before and after each run. FEDPLANE_E2E_REDIS_DB pins one.
E2E_REDIS_DBS = range(5, 16)
E2E_REDIS_DB: int | None = (
    int(os.environ["FEDPLANE_E2E_REDIS_DB"]) if os.environ.get("FEDPLANE_E2E_REDIS_DB") else None
)
TERMINAL_SESSION = ("Finished", "Failed", "Stopped")
# Variables of the outer (test) process that must not leak into the federation's processes.
SCRUBBED_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "S3_BUCKET",
    "FEDPLANE_TEST_CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
    "FEDN_AUTH_TOKEN",
    "FEDN_JWT_SECRET_KEY",
    "FEDPLANE_COMBINER_TOKEN",
    "FEDPLANE_CONTROL_TOKEN",
    "FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS",
    "FEDPLANE_TOKEN_FILE",
    "FEDPLANE_COMBINER_TOKEN_FILE",
    "FEDPLANE_CLIENT_TOKEN_FILE",
    "FEDPLANE_COMBINER_CLIENT_CA",
    "FEDPLANE_CLIENT_CERT",
    "FEDPLANE_CLIENT_KEY",
    "FEDN_GRPC_ROOT_CERT_PATH",
    "FEDPLANE_CONTROL_CLIENT_CERT",
    "FEDPLANE_CONTROL_CLIENT_KEY",
    "FEDPLANE_CONTROL_CA",
)

T = TypeVar("T")


class FederationError(AssertionError):
    """A process died or a wait ran past its deadline; the message carries the logs' tails."""


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@dataclass
class Backend:
    """Where one run keeps its state, and how to remove it afterwards."""

    var_dir: Path
    env: dict[str, str]
    store_spec: str
    s3: dict[str, str] | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def description(self) -> str:
        database = "postgresql" if self.env.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
        broker = "redis" if self.env.get("CELERY_BROKER_URL", "").startswith("redis") else "filesystem"
        return f"{database} + {broker} + {'s3' if self.s3 else 'files'}"

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        assert self.s3 is not None
        return boto3.client(
            "s3",
            endpoint_url=self.s3["endpoint_url"] or None,
            aws_access_key_id=self.s3["access_key"],
            aws_secret_access_key=self.s3["secret_key"],
            region_name=self.s3["region"],
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30),
        )

    def artifact_exists(self, key: str) -> bool:
        """Whether the shared artifact store holds `key` (asked of S3 itself when S3 is on)."""
        if self.s3 is None:
            return (self.var_dir / "media" / key).is_file()
        from botocore.exceptions import ClientError

        try:
            self.s3_client().head_object(Bucket=self.s3["bucket"], Key=key)
        except ClientError:
            return False
        return True

    def close(self) -> None:
        while self.cleanups:
            cleanup = self.cleanups.pop()
            try:
                cleanup()
            except Exception as exc:  # cleanup must go on; the leftover is named for the operator
                print(f"e2e cleanup failed: {exc}", file=sys.stderr)


def prepare_backend(var_dir: Path, environ: dict[str, str] | None = None) -> Backend:
    """Fresh storage for one run, on the real services that `environ` names, else embedded."""
    environ = dict(os.environ if environ is None else environ)
    run_id = uuid.uuid4().hex[:10]
    var_dir.mkdir(parents=True, exist_ok=True)
    backend = Backend(var_dir=var_dir, env={"FEDPLANE_VAR_DIR": str(var_dir)}, store_spec="")
    try:
        database_url = environ.get("DATABASE_URL", "")
        if database_url.startswith(("postgres://", "postgresql://")):
            backend.env["DATABASE_URL"] = _fresh_database(database_url, f"fedplane_e2e_{run_id}", backend)
        broker_url = environ.get("CELERY_BROKER_URL", "")
        if broker_url.startswith("redis://"):
            backend.env["CELERY_BROKER_URL"] = _dedicated_redis_db(broker_url, backend)
        if environ.get("S3_BUCKET"):
            backend.s3 = {
                "bucket": f"fedplane-e2e-{run_id}",
                "endpoint_url": environ.get("S3_ENDPOINT_URL", ""),
                "access_key": environ.get("S3_ACCESS_KEY", ""),
                "secret_key": environ.get("S3_SECRET_KEY", ""),
                "region": environ.get("S3_REGION", "us-east-1"),
            }
            _fresh_bucket(backend)
            backend.env.update(
                {
                    "S3_BUCKET": backend.s3["bucket"],
                    "S3_ENDPOINT_URL": backend.s3["endpoint_url"],
                    "S3_ACCESS_KEY": backend.s3["access_key"],
                    "S3_SECRET_KEY": backend.s3["secret_key"],
                    "S3_REGION": backend.s3["region"],
                }
            )
            backend.store_spec = f"s3://{backend.s3['bucket']}"
        else:
            backend.store_spec = str(var_dir / "media")
    except BaseException:
        backend.close()
        raise
    return backend


def _fresh_database(database_url: str, name: str, backend: Backend) -> str:
    import psycopg

    admin_url = _with_path(database_url, "/postgres")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    backend.cleanups.append(drop)
    return _with_path(database_url, f"/{name}")


def _dedicated_redis_db(broker_url: str, backend: Backend) -> str:
    import redis

    url = _with_path(broker_url, f"/{_claim_redis_db(backend)}")

    def flush() -> None:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()

    flush()
    backend.cleanups.append(flush)
    return url


def _claim_redis_db(backend: Backend) -> int:
    """A Redis database no other running federation on this machine uses, held until close()."""
    if E2E_REDIS_DB is not None:
        return E2E_REDIS_DB
    for db in E2E_REDIS_DBS:
        handle = open(Path(tempfile.gettempdir()) / f"fedplane-e2e-redis-db-{db}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        backend.cleanups.append(handle.close)  # runs after the flush appended next
        return db
    raise FederationError(
        f"every e2e Redis database ({E2E_REDIS_DBS.start}..{E2E_REDIS_DBS.stop - 1}) is in use"
    )


def _fresh_bucket(backend: Backend) -> None:
    client = backend.s3_client()
    bucket = backend.s3["bucket"] if backend.s3 else ""
    client.create_bucket(Bucket=bucket)

    def remove() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)

    backend.cleanups.append(remove)


def build_digits(work: Path) -> tuple[Path, Path]:
    """The digits compute package (folder `client`, as `fedn package create` makes it) and seed model."""
    work.mkdir(parents=True, exist_ok=True)
    package = work / "digits.tgz"
    with tarfile.open(package, "w:gz") as archive:
        archive.add(DIGITS_CLIENT, arcname="client", filter=lambda m: None if "__pycache__" in m.name else m)
    seed = work / "seed.npz"
    subprocess.run(
        [PY, "model.py", "build", str(seed)],
        cwd=DIGITS_CLIENT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    return package, seed


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Federation:
    """Controller, worker, beat, combiners and clients of one run, each a process group of its own."""

    def __init__(
        self,
        backend: Backend,
        *,
        client_env: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        api_token: str | None = None,
    ) -> None:
        """`env` goes to every process (e.g. FEDN_JWT_SECRET_KEY); `api_token` to `self.api`."""
        self.backend = backend
        self.var_dir = backend.var_dir
        self.logs = self.var_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
        self.env = {
            **base,
            **backend.env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "FEDPLANE_CONTROLLER_PORT": str(self.port),
            **(env or {}),
        }
        self.client_env = client_env or {}
        self.processes: dict[str, Process] = {}
        self.api = APIClient("127.0.0.1", self.port, timeout=30, token=api_token)
        self._log_serial = 0

    # ------------------------------------------------------------ processes

    def spawn(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> Process:
        if name in self.processes and self.processes[name].alive():
            raise FederationError(f"{name} is already running")
        self._log_serial += 1
        log = self.logs / f"{name}.{self._log_serial}.log"
        full_env = {**self.env, **(env or {})}
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        process = Process(name, popen, log, argv, full_env, cwd)
        self.processes[name] = process
        return process

    def token_file(self, name: str, token: str) -> Path:
        """A fresh file of mode 0600 holding `token`: tokens reach processes as files, never argv."""
        return write_token_file(self.var_dir / "secrets" / f"{name}.{uuid.uuid4().hex[:8]}.token", token)

    def restart(self, name: str) -> Process:
        old = self.processes[name]
        if old.alive():
            raise FederationError(f"{name} is still running")
        return self.spawn(name, old.argv, env=old.env, cwd=old.cwd)

    def signal(self, name: str, signum: signal.Signals) -> None:
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signum)

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group (the process and its children) and reap it."""
        self.signal(name, signal.SIGKILL)
        self.processes[name].popen.wait(timeout=10)

    def stop(self) -> None:
        running = [p for p in self.processes.values() if p.alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGCONT)
                os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in running:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=10)
        self.api.close()

    def check_alive(self, *names: str) -> None:
        for name in names or self.processes:
            process = self.processes[name]
            if not process.alive():
                raise FederationError(
                    f"{name} exited with code {process.popen.returncode}; its log ends:\n{process.tail()}"
                )

    def diagnostics(self) -> str:
        parts = [f"backend: {self.backend.description}; logs in {self.logs}"]
        for process in self.processes.values():
            state = "running" if process.alive() else f"exited {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}) ---\n{process.tail(1500)}")
        return "\n".join(parts)

    def wait_for(
        self, what: str, probe: Callable[[], T], timeout: float, *, interval: float = 0.5, watch: tuple = ()
    ) -> T:
        """Poll `probe` until it returns something truthy; fail with the logs after `timeout` s."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            if watch:
                self.check_alive(*watch)
            try:
                value = probe()
                if value:
                    return value
            except Exception as exc:  # the thing waited for is not up yet
                last_error = f" (last error: {type(exc).__name__}: {exc})"
            if time.monotonic() > deadline:
                raise FederationError(
                    f"timed out after {timeout:.0f} s waiting for {what}{last_error}\n{self.diagnostics()}"
                )
            time.sleep(interval)

    # ------------------------------------------------------------ members

    def start_controller(self, *, gunicorn: bool = False) -> None:
        """runserver; with `gunicorn`, served as `make serve` serves it: static files collected and
        answered by the application (WhiteNoise), gunicorn with controlplane/gunicorn_conf.py."""
        subprocess.run(
            [PY, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=180,
        )
        if gunicorn:
            subprocess.run(
                [PY, "manage.py", "collectstatic", "--noinput", "-v0"],
                cwd=ROOT,
                env=self.env,
                check=True,
                timeout=300,
            )
            conf = str(ROOT / "controlplane" / "gunicorn_conf.py")
            # FEDPLANE_DEMO: the deploy checks let the development secret key serve on loopback.
            self.spawn(
                "controller",
                [PY, "-m", "gunicorn", "-c", conf, "--bind", f"127.0.0.1:{self.port}"],
                env={"FEDPLANE_DEMO": "1"},
            )
        else:
            self.spawn("controller", [PY, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"])
        self.wait_for(
            "the controller", lambda: self.api.get_controller_status()["state"], 90, watch=("controller",)
        )

    def start_worker(self, *, beat: bool = True) -> None:
        """The Celery worker; with `beat`, also a beat process ("beat") when none runs yet."""
        self.spawn(
            "worker",
            [
                PY,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
            ],
        )
        if beat:
            self.start_beat()

    def start_beat(self, name: str = "beat") -> Process:
        """A Celery beat process `name`, unless it runs already. Several beats may run: one leads
        and fires the schedules, the others stand by (controlplane/beat.py)."""
        if name in self.processes and self.processes[name].alive():
            return self.processes[name]
        return self.spawn(name, [PY, "-m", "celery", "-A", "controlplane", "beat", "-l", "info"])

    def start_combiner(
        self,
        name: str,
        *,
        extra_env: dict[str, str] | None = None,
        token: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        expected = len(self.combiner_names()) + 1
        if token:
            extra_args = [*extra_args, "--token-file", str(self.token_file(name, token))]
        self.spawn(
            name,
            [
                PY,
                "-m",
                "combiner_node",
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--controller",
                self.url,
                "--store",
                self.backend.store_spec,
                "--workdir",
                str(self.var_dir / name),
                "--grace",
                "2",
                *extra_args,
            ],
            env=extra_env,
        )
        self.wait_for(
            f"combiner {name} to register",
            lambda: self.api.get_combiners_count() >= expected,
            60,
            watch=(name,),
        )

    def combiner_names(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.argv[2:3] == ["combiner_node"]]

    def start_client(
        self,
        name: str,
        index: int,
        total: int,
        *,
        combiner: str | None = None,
        extra_env: dict[str, str] | None = None,
        token: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        workdir = self.var_dir / "clients" / name
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [PY, "-m", "fedplane.client", "start", "--controller", self.url, "--name", name]
        argv += ["--workdir", str(workdir / "package"), "--heartbeat-interval", "1"]
        if combiner:
            argv += ["--preferred-combiner", combiner]
        if token:
            argv += ["--token-file", str(self.token_file(name, token))]
        argv += extra_args
        env = {
            **self.client_env,
            "FEDPLANE_CLIENT_INDEX": str(index),
            "FEDPLANE_NUM_CLIENTS": str(total),
            **(extra_env or {}),
        }
        self.spawn(name, argv, env=env, cwd=workdir)

    def manage(
        self, *args: str, timeout: float = 180, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`manage.py <args>` against this federation's database, as an operator runs it."""
        return subprocess.run(
            [PY, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def mint(self, role: str, subject: str) -> str:
        """A token from `manage.py fedplane_token`; the database must be migrated first."""
        done = self.manage("fedplane_token", "--role", role, "--subject", subject, "--days", "1")
        if done.returncode != 0:
            raise FederationError(f"fedplane_token failed: {done.stderr}")
        return done.stdout.strip()

    def upload_digits(self) -> tuple[str, str]:
        package, seed = build_digits(self.var_dir / "example")
        answer = self.api.set_active_package(str(package), "numpyhelper", name="digits")
        if not answer.get("success", True):
            raise FederationError(f"package upload refused: {answer}")
        answer = self.api.set_active_model(str(seed))
        if not answer.get("success", True):
            raise FederationError(f"seed upload refused: {answer}")
        seed_id = self.api.get_active_model()["model"]
        return str(package), seed_id

    def wait_clients_online(self, count: int, timeout: float = 120, *, exactly: bool = False) -> None:
        def online() -> bool:
            found = self.api.get_active_clients()["count"]
            return found == count if exactly else found >= count

        self.wait_for(f"{'exactly ' if exactly else ''}{count} clients online", online, timeout)

    def wait_log(self, name: str, text: str, timeout: float) -> None:
        """Wait until the current log of process `name` contains `text` (polled every 20 ms)."""
        process = self.processes[name]
        self.wait_for(
            f"{text!r} in the log of {name}", lambda: text in process.tail(10**6), timeout, interval=0.02
        )

    # ------------------------------------------------------------ sessions

    def start_session(self, session_id: str, **config: Any) -> None:
        answer = self.api.start_session(id=session_id, **config)
        if not answer.get("success"):
            raise FederationError(f"session {session_id} did not start: {answer.get('message')}")

    def wait_session_end(self, session_id: str, timeout: float) -> dict[str, Any]:
        return self.wait_for(
            f"session {session_id} to end",
            lambda: self._ended(session_id),
            timeout,
            watch=("controller",),
        )

    def _ended(self, session_id: str) -> dict[str, Any] | None:
        session = self.api.get_session(session_id)
        return session if session.get("status") in TERMINAL_SESSION else None

    def session_rounds(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.api.iter_session_rounds(session_id))

    def wait_training(self, session_id: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until a round of the session is with the combiners (the `training` step)."""

        def training_round() -> dict[str, Any] | None:
            if self.api.get_controller_status().get("state") != "monitoring":
                return None
            pending = [r for r in self.session_rounds(session_id) if r["status"] == "Pending"]
            return pending[-1] if pending else None

        return self.wait_for(f"a round of {session_id} in training", training_round, timeout, interval=0.2)
