"""Two sends of one batch racing: the second arrives while the first's transaction is still open."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction

# Inside a write transaction only PostgreSQL lets a second connection write: SQLite takes one
# writer at a time.
POSTGRESQL_ONLY = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite admits no second writer inside a write transaction"
)


def send_twice_at_once(send: Callable[[], int]) -> dict[str, int]:
    """{"first": n, "resend": m}: `send` run in a transaction that stays open (half a second) while
    the same `send` runs again from another connection, which must wait for its outcome."""
    first_written = threading.Event()
    results: dict[str, int] = {}

    def first_send() -> None:
        try:
            with transaction.atomic():
                results["first"] = send()
                first_written.set()
                resend.join(timeout=0.5)
        finally:
            connection.close()

    def second_send() -> None:
        try:
            if first_written.wait(10):
                results["resend"] = send()
        finally:
            connection.close()

    resend = threading.Thread(target=second_send)
    first = threading.Thread(target=first_send)
    first.start()
    resend.start()
    first.join(timeout=30)
    resend.join(timeout=30)
    assert not first.is_alive() and not resend.is_alive(), "a send did not finish within 30 s"
    return results
