"""How the browser tests start the controller as users run it: gunicorn with controlplane's
gunicorn_conf.py loading controlplane.wsgi, static files collected and served by the application
(WhiteNoise), on the test database pytest-django set up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
GUNICORN_CONF = ROOT / "controlplane" / "gunicorn_conf.py"
# Seconds; every wait on the served controller ends by then.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class ServedController:
    url: str
    static_root: Path
    log: Path

    def manifest_name(self, name: str) -> str:
        """The hashed name collectstatic gave a static file (staticfiles.json)."""
        manifest = json.loads((self.static_root / "staticfiles.json").read_text())
        return str(manifest["paths"][name])


def database_url() -> str:
    """DATABASE_URL naming the test database pytest-django set up (SQLite file or PostgreSQL)."""
    database = settings.DATABASES["default"]
    if "sqlite" in database["ENGINE"]:
        return f"sqlite:///{database['NAME']}"
    user = quote(database.get("USER") or "", safe="")
    password = quote(database.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"postgres://{credentials}{database.get('HOST') or '127.0.0.1'}{port}/{database['NAME']}"


def served_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "FEDPLANE_VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url(),
        # Nothing these tests do enqueues work that a worker would need to run.
        "CELERY_BROKER_URL": "memory://",
        "FEDPLANE_DEMO": "1",
        "PYTHONPATH": str(ROOT),
        **overrides,
    }


def start_gunicorn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [PY, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", "127.0.0.1:0", "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_gunicorn(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def wait_until_serving(process: subprocess.Popen[bytes], log: Path) -> str:
    """The served URL once gunicorn listens and /health answers; fails with the log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    url = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if not url:
            found = LISTENING.search(log.read_text(errors="replace"))
            url = f"http://127.0.0.1:{found.group(1)}" if found else ""
        if url:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass  # workers still booting
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not serve within {START_TIMEOUT:.0f} s:\n{log.read_text(errors='replace')}")
