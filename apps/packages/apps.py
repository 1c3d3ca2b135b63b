from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "apps.packages"
    label = "packages"
    verbose_name = "Compute packages"
