from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleConfig(AppConfig):
    """The operator console: the admin site, its dashboard and the templates that style it."""

    name = "apps.console"
    label = "console"
    verbose_name = "Operator console"
    # Two configs live here; this one is the app's, ConsoleAdminConfig replaces django.contrib.admin.
    default = True


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the console's site as `admin.site`, so every @admin.register lands there."""

    default = False
    default_site = "apps.console.sites.FedplaneAdminSite"
