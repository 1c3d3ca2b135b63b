"""The deploy/ commands, run for real: each systemd unit's ExecStart, the container image's
entrypoint (deploy/run-process, the Procfile's lines) in a tree assembled from the Containerfile,
and nginx in front of the web unit, on a fresh PostgreSQL database, Redis database and S3 bucket,
with a production-like environment file (secret key set, named hosts, behind a TLS proxy).

Each process is started the way systemd would start it (tests/deploy/deployfiles.py: working
directory, Environment=, EnvironmentFile=, specifiers), checked the way docs/deploy.md's health
checks say, and stopped with its unit's KillSignal within its TimeoutStopSec.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from combiner_node.tests.certs import CertificateAuthority
from fedplane.api_client import APIClient
from tests.deploy.deployfiles import (
    DEPLOY,
    ROOT,
    Installation,
    Launch,
    assemble_image_tree,
    containerfile_env,
    launch,
    read_containerfile,
    read_environment_file,
    read_unit,
)
from tests.e2e.harness import Backend, build_digits, free_port, prepare_backend

pytestmark = pytest.mark.e2e

T = TypeVar("T")
HOST_NAME = "fedplane.test"
START_TIMEOUT = 60.0
# What systemd itself puts in a service's environment before Environment= and EnvironmentFile=.
SYSTEMD_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, logs: Callable[[], str]) -> T:
    """Poll `probe` until it returns something truthy; fail with the processes' logs after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = f" (last error: {type(exc).__name__}: {exc})"
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{last_error}\n{logs()}")
        time.sleep(0.3)


@dataclass
class Deployment:
    """The test's stand-in for /opt/fedplane, /etc/fedplane and /var/lib/fedplane, and its ports."""

    installation: Installation
    backend: Backend
    web_port: int
    combiner_port: int
    env_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


@dataclass
class Running:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    spec: Launch

    def tail(self, chars: int = 2500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Processes:
    logs_dir: Path
    running: dict[str, Running] = field(default_factory=dict)

    def start(self, name: str, spec: Launch) -> Running:
        log = self.logs_dir / f"{name}.{time.monotonic_ns()}.log"
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = Running(name, popen, log, spec)
        return self.running[name]

    def logs(self) -> str:
        parts = []
        for process in self.running.values():
            state = "running" if process.popen.poll() is None else f"exited {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}): {' '.join(process.spec.argv)}\n{process.tail()}")
        return "\n".join(parts)

    def stop_as_systemd(self, name: str) -> float:
        """Send the unit's KillSignal as its KillMode does; seconds until the process exited.

        Fails when it outlives TimeoutStopSec (systemd would SIGKILL it), exits unclean, or leaves
        processes of its group behind.
        """
        process = self.running[name]
        spec = process.spec
        began = time.monotonic()
        if spec.kill_mode in ("mixed", "process"):
            process.popen.send_signal(spec.kill_signal)
        else:
            os.killpg(process.popen.pid, spec.kill_signal)
        try:
            process.popen.wait(timeout=spec.stop_timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"{name} did not stop within TimeoutStopSec={spec.stop_timeout:.0f} s after "
                f"{spec.kill_signal.name}\n{process.tail()}"
            )
        took = time.monotonic() - began
        # systemd counts an exit on the stop signal as clean, like exit code 0.
        assert process.popen.returncode in (0, -spec.kill_signal), (
            f"{name} exited {process.popen.returncode} on {spec.kill_signal.name}\n{process.tail()}"
        )
        wait_until(f"{name}'s other processes to exit", lambda: not group_alive(process), 5, self.logs)
        return took

    def kill_all(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=10)


def group_alive(process: Running) -> bool:
    try:
        os.killpg(process.popen.pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A production-like environment file over fresh services, migrated and with static files."""
    if not (
        os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
        and os.environ.get("CELERY_BROKER_URL", "").startswith("redis://")
        and os.environ.get("S3_BUCKET")
    ):
        pytest.skip(
            "a deployment needs PostgreSQL, Redis and S3: set their variables (scripts/services.sh env)"
        )
    base = tmp_path_factory.mktemp("deploy")
    installation = Installation(root=ROOT, config_dir=base / "etc", state_dir=base / "state")
    installation.config_dir.mkdir()
    backend = prepare_backend(installation.state_dir)
    try:
        web_port, combiner_port = free_port(), free_port()
        settings = {
            **backend.env,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": f"{HOST_NAME},127.0.0.1",
            "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
            # gunicorn trusts X-Forwarded-Proto from loopback by itself; trusting no address here
            # (a documentation-only one) leaves it to Django's setting, as with a proxy on another host.
            "FORWARDED_ALLOW_IPS": "192.0.2.1",
            "DJANGO_SECURE_HSTS_SECONDS": "3600",
            "DJANGO_SECURE_COOKIES": "true",
            "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST_NAME}",
            "FEDPLANE_BIND": f"127.0.0.1:{web_port}",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "4",
            "FEDPLANE_COMBINER_CONTROLLER": f"http://127.0.0.1:{web_port}",
            "FEDPLANE_COMBINER_HOST": "127.0.0.1",
            "FEDPLANE_COMBINER_BIND": "127.0.0.1",
            "FEDPLANE_COMBINER_PORT": str(combiner_port),
            "FEDPLANE_COMBINER_STORE": backend.store_spec,
        }
        env_file = installation.config_dir / "fedplane.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        deployment = Deployment(installation, backend, web_port, combiner_port, env_file)
        # The upgrade steps of docs/deploy.md, with the web unit's environment.
        web = launch(read_unit("fedplane-web.service"), installation, SYSTEMD_BASE_ENV)
        python = web.argv[0]
        for step in (["migrate", "-v0"], ["collectstatic", "--noinput", "-v0"], ["check", "--deploy"]):
            done = subprocess.run(
                [python, "manage.py", *step],
                cwd=web.cwd,
                env=web.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"manage.py {' '.join(step)} failed:\n{done.stdout}\n{done.stderr}"
        yield deployment
    finally:
        backend.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def check_web(deployment: Deployment, web: Launch, healthcheck: list[str], processes: Processes) -> None:
    url = deployment.url
    health = wait_until(
        "GET /health",
        lambda: (r := requests.get(f"{url}/health", headers={"Host": HOST_NAME}, timeout=5)).ok and r,
        START_TIMEOUT,
        processes.logs,
    )
    assert health.status_code == 200
    assert health.text == "OK"
    # A request the proxy marks as HTTPS is secure to Django (HSTS is sent on secure requests only).
    proxied = requests.get(
        f"{url}/health", headers={"Host": HOST_NAME, "X-Forwarded-Proto": "https"}, timeout=5
    )
    assert proxied.headers.get("Strict-Transport-Security") == "max-age=3600"
    assert "Strict-Transport-Security" not in health.headers
    # The admin's stylesheet, as collectstatic hashed it, served by the application itself.
    login = requests.get(f"{url}/admin/login/", headers={"Host": HOST_NAME}, timeout=10)
    assert login.status_code == 200
    stylesheets = re.findall(r'<link[^>]+href="(/static/[^"]+\.css)"', login.text)
    assert stylesheets, f"no stylesheet on the login page:\n{login.text[:2000]}"
    css = requests.get(f"{url}{stylesheets[0]}", headers={"Host": HOST_NAME}, timeout=10)
    assert css.status_code == 200, stylesheets[0]
    assert css.headers["Content-Type"].startswith("text/css")
    assert re.search(r"\.[0-9a-f]{12}\.css$", stylesheets[0]), (
        f"not a collected, hashed name: {stylesheets[0]}"
    )
    # The container's HEALTHCHECK command, with the web process's environment.
    probe = subprocess.run(healthcheck, env=web.env, capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr


def check_worker(python: str, cwd: Path, env: dict[str, str], processes: Processes) -> None:
    """`celery inspect ping`, as an operator runs it on a host with the worker's environment."""

    def ping() -> bool:
        done = subprocess.run(
            [python, "-m", "celery", "-A", "controlplane", "inspect", "ping", "--timeout", "3"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode == 0 and "pong" in done.stdout

    wait_until("celery inspect ping to be answered", ping, START_TIMEOUT, processes.logs)


def check_beat(name: str, processes: Processes) -> None:
    beat = processes.running[name]
    wait_until(
        "the beat to start", lambda: "beat: Starting..." in beat.tail(10**6), START_TIMEOUT, processes.logs
    )
    wait_until("the beat to lead", lambda: " leads: " in beat.tail(10**6), START_TIMEOUT, processes.logs)


def check_combiner(deployment: Deployment, combiner_name: str, processes: Processes) -> None:
    def serving() -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{deployment.combiner_port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def registered() -> bool:
        answer = requests.get(f"{deployment.url}/api/v1/combiners/", timeout=10)
        answer.raise_for_status()
        return combiner_name in [item["name"] for item in answer.json()["result"]]

    wait_until("the combiner's gRPC health to say SERVING", serving, START_TIMEOUT, processes.logs)
    wait_until(f"combiner {combiner_name} to be registered", registered, START_TIMEOUT, processes.logs)


def check_client_unit(deployment: Deployment, processes: Processes) -> None:
    """fedplane-client@alice, as on a data holder's machine, goes online through the combiner."""
    installation = deployment.installation
    (installation.config_dir / "client-alice.env").write_text(f"FEDPLANE_CONTROLLER={deployment.url}\n")
    # systemd makes the unit's StateDirectory= (its WorkingDirectory) before starting it.
    (installation.state_dir / "client-alice").mkdir(parents=True, exist_ok=True)
    spec = launch(read_unit("fedplane-client@.service"), installation, SYSTEMD_BASE_ENV, instance="alice")
    assert "DJANGO_SECRET_KEY" not in spec.env and "S3_SECRET_KEY" not in spec.env
    api = APIClient("127.0.0.1", deployment.web_port, timeout=30)
    try:
        package, _seed = build_digits(installation.state_dir / "example")
        answer = api.set_active_package(str(package), "numpyhelper", name="digits")
        assert answer.get("success", True), answer
        processes.start("client", spec)

        def alice_online() -> bool:
            return "alice" in [client["name"] for client in api.get_active_clients()["result"]]

        wait_until("client alice to be online", alice_online, START_TIMEOUT, processes.logs)
    finally:
        api.close()


def check_stops(processes: Processes, order: list[str]) -> dict[str, float]:
    return {name: round(processes.stop_as_systemd(name), 2) for name in order}


def test_units_start_serve_and_stop(deployment: Deployment, processes: Processes) -> None:
    """web, worker, beat, combiner@c1 and client@alice from their units' ExecStart, healthy, then
    stopped cleanly."""
    specs = {
        name: launch(read_unit(unit), deployment.installation, SYSTEMD_BASE_ENV, instance=instance)
        for name, unit, instance in (
            ("web", "fedplane-web.service", ""),
            ("worker", "fedplane-worker.service", ""),
            ("beat", "fedplane-beat.service", ""),
            ("combiner", "fedplane-combiner@.service", "c1"),
        )
    }
    assert specs["combiner"].env["FEDPLANE_COMBINER_NAME"] == "c1"
    for name, spec in specs.items():
        processes.start(name, spec)
    check_web(deployment, specs["web"], [specs["web"].argv[0], str(DEPLOY / "healthcheck.py")], processes)
    check_worker(specs["worker"].argv[0], specs["worker"].cwd, specs["worker"].env, processes)
    check_beat("beat", processes)
    check_combiner(deployment, "c1", processes)
    check_client_unit(deployment, processes)
    took = check_stops(processes, ["client", "combiner", "beat", "worker", "web"])
    print(f"\nstopped within (s): {took}")
    # With the web process gone the container's health check says so.
    probe = subprocess.run(
        [specs["web"].argv[0], str(DEPLOY / "healthcheck.py")],
        env=specs["web"].env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 1
    assert "does not answer" in probe.stderr


def test_container_image_tree_runs_each_process(
    deployment: Deployment, processes: Processes, tmp_path: Path
) -> None:
    """The image without a builder: its WORKDIR assembled from the Containerfile's COPY lines (less
    .dockerignore) and its collectstatic step, then ENTRYPOINT NAME for each process with the image's
    ENV under the deployment's env file (as `docker run --env-file`): the same checks as the units,
    and the HEALTHCHECK command passes."""
    image = Installation(
        root=tmp_path / "image",
        config_dir=deployment.installation.config_dir,
        state_dir=deployment.installation.state_dir,
    )
    assemble_image_tree(image)
    instructions = {i.keyword: i.arguments for i in read_containerfile()}
    entrypoint = [image.path(word) for word in json.loads(instructions["ENTRYPOINT"])]
    healthcheck = [image.path(word) for word in json.loads(instructions["HEALTHCHECK"].split(" CMD ", 1)[1])]
    env = {
        **SYSTEMD_BASE_ENV,
        **{key: image.path(value) for key, value in containerfile_env().items()},
        **read_environment_file(deployment.env_file),
    }
    specs = {}
    for name in ("web", "worker", "beat", "combiner"):
        unit = f"fedplane-{name}@.service" if name == "combiner" else f"fedplane-{name}.service"
        stop_policy = launch(read_unit(unit), deployment.installation, SYSTEMD_BASE_ENV, instance="c2")
        # docker stop sends SIGTERM, as the units do; the arguments after the name are appended.
        specs[name] = Launch(
            argv=[*entrypoint, name, *(["--name", "c2"] if name == "combiner" else [])],
            cwd=image.state_dir,
            env=env,
            kill_signal=stop_policy.kill_signal,
            stop_timeout=stop_policy.stop_timeout,
            kill_mode=stop_policy.kill_mode,
        )
        processes.start(name, specs[name])
    check_web(deployment, specs["web"], healthcheck, processes)
    check_worker(str(image.root / ".venv" / "bin" / "python"), image.root, env, processes)
    check_beat("beat", processes)
    check_combiner(deployment, "c2", processes)
    # The static files come from the image's own folder, collected at build time.
    assert (image.root / "static" / "staticfiles.json").is_file()
    # The entrypoint execs the command from the image's WORKDIR: signals reach the process itself.
    web_pid = processes.running["web"].popen.pid
    assert b"gunicorn" in Path(f"/proc/{web_pid}/cmdline").read_bytes()
    assert Path(f"/proc/{web_pid}/cwd").resolve() == image.root.resolve()
    took = check_stops(processes, ["combiner", "beat", "worker", "web"])
    print(f"\nstopped within (s): {took}")


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_site(https_port: int, http_port: int, web_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx/fedplane.conf on test ports, name and certificate; every edit must apply."""
    text = (DEPLOY / "nginx" / "fedplane.conf").read_text()
    edits = {
        "    listen 80;\n": f"    listen 127.0.0.1:{http_port};\n",
        "    listen [::]:80;\n": "",
        "    listen 443 ssl http2;\n": f"    listen 127.0.0.1:{https_port} ssl http2;\n",
        "    listen [::]:443 ssl http2;\n": "",
        "server 127.0.0.1:8092;": f"server 127.0.0.1:{web_port};",
        "/etc/ssl/fedplane/fullchain.pem": str(cert),
        "/etc/ssl/fedplane/privkey.pem": str(key),
        "fedplane.example.org": HOST_NAME,
    }
    for old, new in edits.items():
        assert old in text, f"deploy/nginx/fedplane.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make deps installs it)")
def test_nginx_front_terminates_tls_for_the_web_unit(
    deployment: Deployment, processes: Processes, tmp_path: Path
) -> None:
    """deploy/nginx/fedplane.conf in front of the web unit: HTTPS answers, the request is secure to
    Django, plain HTTP only redirects, and an operator logs in to the admin through it."""
    assert NGINX is not None
    web = launch(read_unit("fedplane-web.service"), deployment.installation, SYSTEMD_BASE_ENV)
    processes.start("web", web)
    authority = CertificateAuthority("fedplane test CA")
    cert, key = authority.issue(HOST_NAME, hosts=(HOST_NAME, "127.0.0.1")).write(tmp_path / "tls", "fedplane")
    ca = authority.write(tmp_path / "tls", "ca")
    https_port, http_port = free_port(), free_port()
    (tmp_path / "fedplane.conf").write_text(nginx_site(https_port, http_port, deployment.web_port, cert, key))
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log {tmp_path}/access.log;\n{temp_paths}    include {tmp_path}/fedplane.conf;\n}}\n"
    )
    nginx = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    checked = subprocess.run([*nginx, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr, checked.stderr
    processes.start(
        "nginx",
        Launch(nginx, tmp_path, dict(SYSTEMD_BASE_ENV), signal.SIGQUIT, 10.0, "mixed"),
    )
    https = f"https://127.0.0.1:{https_port}"
    host = {"Host": HOST_NAME}
    health = wait_until(
        "GET /health through nginx",
        lambda: (r := requests.get(f"{https}/health", headers=host, verify=str(ca), timeout=5)).ok and r,
        START_TIMEOUT,
        processes.logs,
    )
    assert health.text == "OK"
    # nginx's X-Forwarded-Proto made the request secure to Django: it sends HSTS.
    assert health.headers.get("Strict-Transport-Security") == "max-age=3600"
    # Plain HTTP is redirected to HTTPS, whatever the client claims, and never reaches gunicorn.
    plain = requests.get(
        f"http://127.0.0.1:{http_port}/admin/",
        headers={**host, "X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=5,
    )
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://{HOST_NAME}/admin/"
    # An operator logs in through the proxy: CSRF over HTTPS passes, the cookies are Secure.
    created = subprocess.run(
        [
            web.argv[0],
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "ops",
            "--email",
            "ops@example.org",
        ],
        cwd=web.cwd,
        env={**web.env, "DJANGO_SUPERUSER_PASSWORD": "a long test password"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    with requests.Session() as browser:
        # Not browser.verify: requests lets REQUESTS_CA_BUNDLE override a session's CA.
        browser.headers.update(host)
        form = browser.get(f"{https}/admin/login/", timeout=10, verify=str(ca))
        assert form.status_code == 200
        stylesheet = re.findall(r'<link[^>]+href="(/static/[^"]+\.css)"', form.text)[0]
        css = browser.get(f"{https}{stylesheet}", timeout=10, verify=str(ca))
        assert css.headers["Content-Type"].startswith("text/css")
        assert "Secure" in form.headers["Set-Cookie"]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text[:2000]
        answer = browser.post(
            f"{https}/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": "ops",
                "password": "a long test password",
                "next": "/admin/",
            },
            headers={"Referer": f"https://{HOST_NAME}/admin/login/", "Origin": f"https://{HOST_NAME}"},
            allow_redirects=False,
            timeout=10,
            verify=str(ca),
        )
        assert answer.status_code == 302, answer.text[:2000]
        assert answer.headers["Location"] == "/admin/"
        assert re.search(r"sessionid=[^;]+;.*Secure", answer.headers["Set-Cookie"]), answer.headers[
            "Set-Cookie"
        ]
        console = browser.get(f"{https}/admin/", timeout=10, verify=str(ca))
        assert console.status_code == 200
    took = check_stops(processes, ["nginx", "web"])
    print(f"\nstopped within (s): {took}")
