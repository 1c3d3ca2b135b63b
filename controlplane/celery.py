"""The Celery application of the control plane.

Redis when CELERY_BROKER_URL is set; otherwise kombu's filesystem broker under var/, so the
embedded default needs no server.
"""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect  # the solo pool runs tasks in the worker's own thread
@worker_process_init.connect  # the prefork pool, in each child
def warm_up_storage(**_: Any) -> None:
    """A round's reduce is the first step to touch the artifact store: its client is built when
    the worker starts, not on the round's critical path."""
    from controlplane import artifacts

    artifacts.warm_up()
