"""The Celery application of the control plane.

Redis when CELERY_BROKER_URL is set; otherwise kombu's filesystem broker under var/, so the
embedded default needs no server.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
