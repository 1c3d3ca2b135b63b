"""A controller process for the fuzz run: its own database, auth on, a few rows to find.

The server is a subprocess serving controlplane.wsgi on a free port as a deployment does (gunicorn
with controlplane/gunicorn_conf.py; the settings here pass its deploy checks), on the storage
tests/e2e/harness.py prepares: a fresh PostgreSQL database, Redis database and S3 bucket when the
services are up, the embedded defaults otherwise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.api.factories import model_bytes, package_bytes
from tests.e2e.harness import PY, ROOT, SCRUBBED_ENV, Backend, free_port, prepare_backend


class ServerError(AssertionError):
    """The controller died or did not come up in time; the message carries its log's tail."""


@dataclass
class FuzzServer:
    url: str
    admin_token: str = field(repr=False)
    # Tokens of the combiner and client rows the seed registers (they may register only themselves).
    member_tokens: dict[str, str] = field(repr=False)
    backend: Backend
    log: Path
    # Values of rows that exist, by path parameter name, so detail routes also hit real rows.
    known: dict[str, str] = field(default_factory=dict)
    sessions: dict[bool, requests.Session] = field(default_factory=dict)

    def session(self, *, token: bool) -> requests.Session:
        if token not in self.sessions:
            http = requests.Session()
            if token:
                http.headers["Authorization"] = f"Bearer {self.admin_token}"
            self.sessions[token] = http
        return self.sessions[token]


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerError(f"the controller exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ServerError(
                f"the controller was not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)


def _seed(server: FuzzServer) -> None:
    """A package, a seed model, a combiner, a client and a session, through the API itself."""
    http = server.session(token=True)
    timeout = 60

    def ok(response: requests.Response) -> dict:
        if response.status_code >= 400:
            raise ServerError(f"seeding {response.request.method} {response.url}: {response.text[:500]}")
        return response.json() if response.content else {}

    ok(
        http.post(
            f"{server.url}/set_package",
            data={"helper": "numpyhelper", "name": "fuzz-package"},
            files={"file": ("package.tgz", package_bytes())},
            timeout=timeout,
        )
    )
    ok(
        http.post(
            f"{server.url}/set_initial_model",
            files={"file": ("seed.npz", model_bytes())},
            timeout=timeout,
        )
    )
    ok(
        http.post(
            f"{server.url}/add_combiner",
            json={"combiner_id": "fuzz-combiner", "address": "127.0.0.1", "port": 12080, "fqdn": None},
            headers={"Authorization": f"Bearer {server.member_tokens['combiner']}"},
            timeout=timeout,
        )
    )
    ok(
        http.post(
            f"{server.url}/add_client",
            json={"client_id": "fuzz-client", "name": "fuzz-client"},
            headers={"Authorization": f"Bearer {server.member_tokens['client']}"},
            timeout=timeout,
        )
    )
    # A session that is created, not started: no worker runs, so none would ever finish.
    config = {"aggregator": "fedavg", "round_timeout": 30, "clients_required": 1, "rounds": 1}
    ok(
        http.post(
            f"{server.url}/api/v1/sessions/",
            json={"session_id": "fuzz-session", "session_config": config},
            timeout=timeout,
        )
    )
    for resource in ("packages", "models", "clients", "combiners", "sessions"):
        body = ok(http.get(f"{server.url}/api/v1/{resource}/", timeout=timeout))
        for item in body.get("result", []):
            if "id" in item:
                server.known.setdefault(f"{resource}:id", str(item["id"]))
        if f"{resource}:id" not in server.known:
            raise ServerError(f"seeding left no row with an id in /api/v1/{resource}/: {body}")


def _mint(env: dict[str, str], role: str, subject: str) -> str:
    minted = subprocess.run(
        [PY, "manage.py", "fedplane_token", "--role", role, "--subject", subject],
        cwd=ROOT,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    if minted.returncode != 0:
        raise ServerError(f"minting a {role} token failed: {minted.stderr[-2000:]}")
    return minted.stdout.split()[-1]


@contextlib.contextmanager
def running_server(var_dir: Path, *, startup_timeout: float = 120) -> Iterator[FuzzServer]:
    backend = prepare_backend(var_dir)
    secret = secrets.token_urlsafe(48)
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV},
        **backend.env,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        # A deployment's settings, not the demo's: the deploy checks accept them.
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "FEDN_JWT_SECRET_KEY": secret,
        "FEDPLANE_CONTROLLER_PORT": str(port),
        "FEDPLANE_BIND": f"127.0.0.1:{port}",
        # One worker process is enough for one client asking in turn; its threads serve the seeding.
        "WEB_CONCURRENCY": "1",
    }
    log = var_dir / "controller.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
        tokens = {
            role: _mint(env, role, subject)
            for role, subject in (("admin", "fuzz"), ("combiner", "fuzz-combiner"), ("client", "fuzz-client"))
        }
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [PY, "-m", "gunicorn", "-c", str(ROOT / "controlplane" / "gunicorn_conf.py")],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log, startup_timeout)
        server = FuzzServer(
            url=url, admin_token=tokens["admin"], member_tokens=tokens, backend=backend, log=log
        )
        _seed(server)
        yield server
    finally:
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        backend.close()
