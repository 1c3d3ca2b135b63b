"""The controller as users run it, for the browser and HTTP tests of this folder.

pytest-django's live_server would serve static files itself and hide a console without styles;
these fixtures start the same gunicorn command `make serve` runs instead (tests/browser/served.py).
"""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.served import (
    PY,
    ROOT,
    ServedController,
    served_env,
    start_gunicorn,
    stop_gunicorn,
    wait_until_serving,
)


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A var dir whose static/ holds what `manage.py collectstatic` makes, as make serve runs it."""
    var_dir = tmp_path_factory.mktemp("served")
    subprocess.run(
        [PY, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=served_env(var_dir),
        check=True,
        timeout=300,
    )
    return var_dir


@pytest.fixture(scope="module")
def served(collected_static: Path, django_db_setup: Any) -> Iterator[ServedController]:
    """gunicorn serving the app on the test database; stopped before the database is dropped."""
    log = collected_static / f"gunicorn-{time.monotonic_ns()}.log"
    process = start_gunicorn(served_env(collected_static), log)
    try:
        url = wait_until_serving(process, log)
        yield ServedController(url=url, static_root=collected_static / "static", log=log)
    finally:
        stop_gunicorn(process)
