"""Settings, split by concern; every value that differs between deployments comes from the environment."""

from controlplane.settings.base import *  # noqa: F403
from controlplane.settings.celery import *  # noqa: F403
from controlplane.settings.database import *  # noqa: F403
from controlplane.settings.rest import *  # noqa: F403
from controlplane.settings.storage import *  # noqa: F403
