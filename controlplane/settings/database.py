import sys

import dj_database_url

from controlplane.settings.env import VAR_DIR, env_bool, env_int, env_str

# Django's SQLite backend, creating the database's folder on first connect (controlplane/sqlite).
SQLITE_ENGINE = "controlplane.sqlite"
# Django's PostgreSQL backend, checking a kept connection without a round trip (controlplane/postgresql).
POSTGRESQL_ENGINE = "controlplane.postgresql"

# A server database's connection is kept for this many seconds and reused by the requests of the
# thread that opened it (a new PostgreSQL connection costs more than a page of statuses); it is
# checked before each request reuses it, so one the server dropped is replaced, not an error.
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)

# SQLite under var/ unless DATABASE_URL names another database (PostgreSQL in production).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fedplane.sqlite3'}"),
        conn_max_age=DATABASE_CONN_MAX_AGE,
        conn_health_checks=True,
    )
}
if sys.argv[1:2] == ["runserver"]:
    # The development server runs each request on a new thread: a kept connection would outlive
    # its thread, and a busy test federation would run the database out of connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = POSTGRESQL_ENGINE
    if env_bool("DATABASE_PREPARED_STATEMENTS", True):
        # Parameters bound by the server, and a statement run five times on a connection prepared
        # there: the list queries of the API are the same text each time, and planning them again
        # per request cost the server a third of its time. Off for a pooler in transaction mode,
        # which hands a client's statements to other connections.
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["ENGINE"] = SQLITE_ENGINE
    # Opening the file costs nothing; a kept connection would only hold it open.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Several processes (server, worker) share the file: wait for locks instead of failing, and
    # take the write lock when a transaction starts, so read-then-write never dies on "locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
