"""The controller's settings with the benchmark's URLconf: the product's routes plus a plain view.

Used only by bench/api.py (DJANGO_SETTINGS_MODULE=bench.api_settings); the product never loads it.
"""

from controlplane.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
