from controlplane.settings.env import VAR_DIR, env_int, env_str

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    # kombu's filesystem broker: producer and worker must share one folder. Its channel creates
    # the folders when it opens (controlplane/celery_filesystem.py).
    _queue = VAR_DIR / "celery"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "controlplane.celery_filesystem:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue / "in"),
        "data_folder_out": str(_queue / "in"),
        "processed_folder": str(_queue / "processed"),
        "store_processed": False,
        "control_folder": str(_queue / "control"),
        "polling_interval": 0.1,
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Defaults for tasks that declare none; a session's steps and its reduce declare limits that fit
# their leases (apps/sessions/tasks.py), so these never stop a step that still holds its lease.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 120)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 180)
# django-celery-beat's DatabaseScheduler behind a lock: of several beats, one fires (controlplane/beat.py).
CELERY_BEAT_SCHEDULER = "controlplane.beat:LeaderScheduler"
CELERY_TIMEZONE = "UTC"

# Declared here, synced into django-celery-beat's tables, editable in the admin.
CELERY_BEAT_SCHEDULE = {
    "sessions-watchdog": {"task": "fl_sessions.sessions_watchdog", "schedule": 5.0},
    "combiners-expire-silent": {"task": "combiners.expire_silent", "schedule": 5.0},
}
