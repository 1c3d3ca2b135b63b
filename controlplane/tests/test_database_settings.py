"""The database settings per process kind: how long a connection is kept, and how PostgreSQL is used."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRINT_SETTINGS = """
import json, sys
sys.argv = {argv!r}
from controlplane.settings import database
settings = database.DATABASES["default"]
print(json.dumps([settings["CONN_MAX_AGE"], settings["ENGINE"], settings.get("OPTIONS", {{}})]))
"""


def database_settings(argv: list[str], **environ: str) -> list:
    """[CONN_MAX_AGE, ENGINE, OPTIONS] as a process started with `argv` and `environ` reads them."""
    env = {**os.environ, "DATABASE_URL": "postgres://fp:fp@127.0.0.1:5432/fp"}
    env.pop("DATABASE_CONN_MAX_AGE", None)
    env.pop("DATABASE_PREPARED_STATEMENTS", None)
    env.update(environ)
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS.format(argv=argv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def conn_max_age(argv: list[str], **environ: str) -> object:
    return database_settings(argv, **environ)[0]


def test_served_processes_keep_their_connection() -> None:
    assert conn_max_age(["gunicorn"]) == 60
    assert conn_max_age(["celery"], DATABASE_CONN_MAX_AGE="15") == 15


def test_the_development_server_connects_per_request() -> None:
    # Each of its requests runs on a new thread, which a kept connection would outlive.
    assert conn_max_age(["manage.py", "runserver"], DATABASE_CONN_MAX_AGE="60") == 0


def test_sqlite_connects_per_request() -> None:
    assert conn_max_age(["gunicorn"], DATABASE_URL="sqlite:////tmp/fp-settings-test.sqlite3") == 0


def test_postgresql_prepares_repeated_statements_unless_told_not_to() -> None:
    _, engine, options = database_settings(["gunicorn"])
    assert engine == "controlplane.postgresql"
    assert options == {"server_side_binding": True, "prepare_threshold": 5}
    # For a pooler in transaction mode, which would run a prepared statement on another connection.
    _, engine, options = database_settings(["gunicorn"], DATABASE_PREPARED_STATEMENTS="0")
    assert engine == "controlplane.postgresql"
    assert "server_side_binding" not in options and "prepare_threshold" not in options
