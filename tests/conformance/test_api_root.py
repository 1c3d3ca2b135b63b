"""The README points new users at /api/v1/: it answers with the entity collections."""

from typing import Any

ENTITIES = {"clients", "combiners", "models", "packages", "rounds", "sessions", "statuses", "validations"}


def test_api_v1_root_lists_every_collection(api: Any) -> None:
    response = api.get("/api/v1/")
    assert response.status_code == 200
    links = response.json()
    assert set(links) == ENTITIES
    for name, url in links.items():
        assert api.get(url).json()["count"] == 0, name


def test_api_v1_root_is_browsable(api: Any) -> None:
    response = api.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"/api/v1/models" in response.content
