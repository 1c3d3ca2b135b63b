"""Django's SQLite backend that creates the database file's folder when it first connects.

The embedded default keeps its database under var/, which a fresh checkout does not have; creating
the folder here, where it is first needed, keeps the settings free of side effects.
"""

from pathlib import Path
from typing import Any

from django.db.backends.sqlite3 import base as sqlite_base


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        database = str(conn_params["database"])
        # Only a plain path names a folder; a "file:" URI is left as it is.
        if not self.is_in_memory_db() and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return super().get_new_connection(conn_params)
