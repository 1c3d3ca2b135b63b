from django.apps import AppConfig


class FlSessionsConfig(AppConfig):
    name = "apps.sessions"
    # "sessions" is taken by django.contrib.sessions.
    label = "fl_sessions"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        # Asynchronous sessions register their steps with the orchestration.
        from apps.sessions import asyncsessions  # noqa: F401
