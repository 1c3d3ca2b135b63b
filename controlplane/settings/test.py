"""Test settings: the same concerns, with passwords hashed fast and Celery run in-process."""

from controlplane.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
