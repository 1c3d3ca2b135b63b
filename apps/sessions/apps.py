from django.apps import AppConfig


class FlSessionsConfig(AppConfig):
    name = "apps.sessions"
    # "sessions" is taken by django.contrib.sessions.
    label = "fl_sessions"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        from apps.models import services as model_services
        from apps.packages import services as package_services
        from apps.sessions.guards import running_session_refusal

        for guards in (package_services.change_guards, model_services.change_guards):
            if running_session_refusal not in guards:
                guards.append(running_session_refusal)
