from django.apps import AppConfig


class ControlplaneConfig(AppConfig):
    """The project's base layer as an app, so its system checks register when Django starts."""

    name = "controlplane"
    verbose_name = "Control plane"

    def ready(self) -> None:
        from controlplane import checks  # noqa: F401  (registers the deploy checks)
