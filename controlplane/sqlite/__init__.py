"""Django's SQLite backend that creates the database file's folder when it first connects."""
