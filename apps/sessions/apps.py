from django.apps import AppConfig


class FlSessionsConfig(AppConfig):
    name = "apps.sessions"
    # "sessions" is taken by django.contrib.sessions.
    label = "fl_sessions"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        from apps.packages import services as package_services
        from apps.sessions.services import package_change_guard

        if package_change_guard not in package_services.change_guards:
            package_services.change_guards.append(package_change_guard)
