import dj_database_url

from controlplane.settings.env import VAR_DIR, env_str

# Django's SQLite backend, creating the database's folder on first connect (controlplane/sqlite).
SQLITE_ENGINE = "controlplane.sqlite"

# SQLite under var/ unless DATABASE_URL names another database (PostgreSQL in production).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fedplane.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["ENGINE"] = SQLITE_ENGINE
    # Several processes (server, worker) share the file: wait for locks instead of failing, and
    # take the write lock when a transaction starts, so read-then-write never dies on "locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
