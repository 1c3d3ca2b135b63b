from django.apps import AppConfig


class MlModelsConfig(AppConfig):
    name = "apps.models"
    # "models" would read badly beside Django's own notion of models.
    label = "mlmodels"
    verbose_name = "Models"
