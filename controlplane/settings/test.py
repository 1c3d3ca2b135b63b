"""Test settings: the same concerns, with passwords hashed fast and no worker consuming tasks.

Tests that run a real Celery worker start it as a separate process with its own settings.
"""

import os

from controlplane.settings import *  # noqa: F403
from controlplane.settings.database import SQLITE_ENGINE

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks enqueued by API tests go nowhere; a shared Redis queue would leak them into e2e runs.
CELERY_BROKER_URL = os.environ.get("FEDPLANE_TEST_CELERY_BROKER_URL", "memory://")
CELERY_BROKER_TRANSPORT = None
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_RESULT_BACKEND = "cache+memory://"
# In-process tests render pages without running collectstatic: plain names, files found by the
# finders on request. The browser tests check the collected, hashed files under gunicorn.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True

if DATABASES["default"]["ENGINE"] == SQLITE_ENGINE:  # noqa: F405
    # A file, not Django's shared in-memory connection: live-server threads then get connections
    # of their own and lock like the real processes do.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
