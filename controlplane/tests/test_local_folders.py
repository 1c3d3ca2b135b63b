"""Reading the settings creates nothing; each local folder appears where it is first needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.db.utils import ConnectionHandler
from kombu import Connection

from controlplane.settings.database import SQLITE_ENGINE

ROOT = Path(__file__).resolve().parents[2]
# The variables that replace the embedded defaults, each of which would otherwise use var/.
SERVICE_VARIABLES = ("DATABASE_URL", "S3_BUCKET", "CELERY_BROKER_URL", "REDIS_URL")

READ_SETTINGS = """
import controlplane.settings.test
from django.conf import settings

assert settings.DATABASES["default"]["ENGINE"] == "controlplane.sqlite", settings.DATABASES
assert settings.CELERY_BROKER_URL == "filesystem://", settings.CELERY_BROKER_URL
assert settings.STORAGES["default"]["BACKEND"].endswith("FileSystemStorage")
"""


def test_reading_the_settings_creates_no_folder(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env.update(
        {
            "FEDPLANE_VAR_DIR": str(var_dir),
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "PYTHONPATH": str(ROOT),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", READ_SETTINGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_sqlite_database_folder_is_created_on_first_connect(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "var" / "fedplane.sqlite3"
    wrapper = ConnectionHandler({"default": {"ENGINE": SQLITE_ENGINE, "NAME": str(database)}})["default"]
    # Below ensure_connection, which pytest-django keeps from tests without a database.
    wrapper.get_new_connection(wrapper.get_connection_params()).close()
    assert database.is_file()


def test_filesystem_broker_creates_its_folders_when_it_opens(tmp_path: Path) -> None:
    queue = tmp_path / "celery"
    options = {
        "data_folder_in": str(queue / "in"),
        "data_folder_out": str(queue / "in"),
        "processed_folder": str(queue / "processed"),
        "control_folder": str(queue / "control"),
    }
    with Connection(
        "filesystem://", transport="controlplane.celery_filesystem:Transport", transport_options=options
    ) as connection:
        probe = connection.SimpleQueue("probe")
        probe.put({"hello": "broker"})
        message = probe.get(timeout=5)
        message.ack()
        probe.close()
    assert message.payload == {"hello": "broker"}
    assert sorted(path.name for path in queue.iterdir()) == ["control", "in", "processed"]
