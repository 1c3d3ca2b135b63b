"""The project's own system checks: a deployment must not run on the demo's defaults.

Deploy checks: `manage.py check --deploy` runs them, and controlplane/wsgi.py before a WSGI server
serves anything. The embedded demo (FEDPLANE_DEMO, set by `make demo` and `make serve`) runs on
loopback with the defaults and is exempt. controlplane's AppConfig.ready registers them.
"""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register, run_checks
from django.core.management.base import SystemCheckError

from controlplane.settings.base import DEVELOPMENT_SECRET_KEY


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if settings.FEDPLANE_DEMO or settings.SECRET_KEY != DEVELOPMENT_SECRET_KEY:
        return []
    return [
        Error(
            "SECRET_KEY is the development default, published in the source: whatever Django "
            "signs with it (cookies, tokens) can be forged.",
            hint="Set DJANGO_SECRET_KEY to a long random value, e.g. the output of "
            '`python -c "import secrets; print(secrets.token_urlsafe(50))"`.',
            id="fedplane.E001",
        )
    ]


@register(Tags.security, deploy=True)
def check_allowed_hosts(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if settings.FEDPLANE_DEMO or "*" not in settings.ALLOWED_HOSTS:
        return []
    return [
        Error(
            "ALLOWED_HOSTS is '*': the controller answers for any Host header, so URLs it builds "
            "from a request can name a host an attacker chose.",
            hint="Set DJANGO_ALLOWED_HOSTS to the names the controller is reached by, comma-separated.",
            id="fedplane.E002",
        )
    ]


def refuse_insecure_deployment() -> None:
    """Raise SystemCheckError on any error of the security deploy checks (ours and Django's)."""
    found = run_checks(include_deployment_checks=True, tags=[Tags.security])
    errors = [message for message in found if message.is_serious() and not message.is_silenced()]
    if errors:
        listed = "\n".join(str(error) for error in errors)
        raise SystemCheckError(f"Refusing to serve an insecure deployment:\n{listed}")
