from typing import Any

import pytest

SECRET = "identity-test-secret-of-at-least-32-bytes"


@pytest.fixture
def auth_on(settings: Any) -> Any:
    settings.FEDN_JWT_SECRET_KEY = SECRET
    settings.FEDN_JWT_ALGORITHM = "HS256"
    settings.FEDN_AUTH_SCHEME = "Bearer"
    settings.FEDN_JWT_CUSTOM_CLAIM_KEY = ""
    settings.FEDN_JWT_CUSTOM_CLAIM_VALUE = ""
    settings.FEDN_AUTH_WHITELIST_URL_PREFIX = ""
    settings.FEDPLANE_TOKEN_MAX_DAYS = 365.0
    return settings
