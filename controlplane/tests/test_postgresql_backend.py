"""The PostgreSQL backend: a kept connection is checked without a round trip, replaced when the
server has closed it, and the API's repeated statements are prepared on the server."""

import select
import time

import psycopg
import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend"),
]


def last_statement_of(pid: int) -> str:
    """What the server last ran for backend `pid`, asked over a connection of its own."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as observer:
        row = observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None, f"backend {pid} is not in pg_stat_activity"
    return row[0]


def test_a_quiet_connection_is_usable_without_a_statement() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'health-check-marker'")
    pid = connection.connection.info.backend_pid
    assert connection.is_usable()
    # The server ran nothing after the marker: no SELECT 1 was sent.
    assert "health-check-marker" in last_statement_of(pid)


def test_a_connection_the_server_closed_is_found_and_replaced() -> None:
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    # The server's FATAL message reaches the socket shortly after.
    deadline = time.monotonic() + 10
    while not select.select([connection.connection.fileno()], [], [], 0.1)[0]:
        assert time.monotonic() < deadline, "the terminated connection's socket never became readable"
    assert not connection.is_usable()
    # What Django does before a request's first query: the dead connection is closed, a new one opened.
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (new_pid,) = cursor.fetchone()
    assert new_pid != pid


def test_a_statement_run_repeatedly_is_prepared_on_the_server() -> None:
    sql = "SELECT COUNT(*) FROM django_migrations WHERE app = %s"
    with connection.cursor() as cursor:
        for _ in range(6):
            cursor.execute(sql, ["fl_sessions"])
            assert cursor.fetchone()[0] > 0
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("django_migrations" in statement and "$1" in statement for statement in prepared), prepared
