"""A Celery worker builds its artifact-store client when it starts, not in a round's reduce."""

from __future__ import annotations

from typing import Any

import pytest
from celery.signals import worker_process_init, worker_ready
from django.core.files.storage import default_storage


@pytest.mark.s3
@pytest.mark.parametrize("signal", [worker_ready, worker_process_init], ids=["solo", "prefork-child"])
def test_a_starting_worker_builds_its_s3_client(s3_storage: Any, signal: Any) -> None:
    import controlplane.celery  # noqa: F401  (connects the receivers, as the worker does)

    assert getattr(default_storage._connections, "connection", None) is None
    signal.send(sender=None)
    assert getattr(default_storage._connections, "connection", None) is not None
