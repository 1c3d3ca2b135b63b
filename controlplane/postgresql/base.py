"""Django's PostgreSQL backend with a health check that costs no round trip.

With CONN_HEALTH_CHECKS, Django sends `SELECT 1` on a kept connection before the first query of
each request: a round trip and a statement per request, as much as the token revocation lookup. A
connection the server has closed (a restart, pg_terminate_backend, an idle timeout) has a readable
socket: the server's FATAL message, then the end of the stream. So the socket is polled without
waiting: a quiet idle connection is usable; one with anything to read is asked `SELECT 1` as
Django asks it, and replaced when that fails.
"""

import select

from django.db.backends.postgresql import base as postgresql_base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(postgresql_base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        if connection.info.transaction_status != TransactionStatus.IDLE:
            return super().is_usable()
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return super().is_usable() if readable else True
