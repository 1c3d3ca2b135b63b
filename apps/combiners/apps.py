from django.apps import AppConfig


class CombinersConfig(AppConfig):
    name = "apps.combiners"
    label = "combiners"
    verbose_name = "Combiners"
