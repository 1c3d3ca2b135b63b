from django.apps import AppConfig


class FlSessionsConfig(AppConfig):
    name = "apps.sessions"
    # "sessions" is taken by django.contrib.sessions.
    label = "fl_sessions"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        from apps.packages import services as package_services
        from apps.sessions import services

        if services.package_change_guard not in package_services.change_guards:
            package_services.change_guards.append(services.package_change_guard)
        if services.enqueue_session_advance not in services.start_hooks:
            services.start_hooks.append(services.enqueue_session_advance)
