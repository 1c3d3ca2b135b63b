"""v1 list and count filters: a filter name the entity does not have is refused, never dropped.

FEDn 0.9.5 hands every query parameter to MongoDB, so an unknown or misspelt field matches
nothing; silently ignoring it would answer the whole table instead.
"""

import pytest

from tests.api.factories import Network

ENTITIES = ["clients", "combiners", "models", "packages", "rounds", "sessions", "statuses", "validations"]


@pytest.mark.parametrize("entity", ENTITIES)
def test_unknown_query_filter_is_400_naming_it(populated: Network, entity: str) -> None:
    for url in (f"/api/v1/{entity}/", f"/api/v1/{entity}/count"):
        response = populated.api.get(url, {"sesion_id": "session-a"})
        assert response.status_code == 400, url
        assert "sesion_id" in response.json()["message"]


@pytest.mark.parametrize("entity", ENTITIES)
def test_unknown_posted_filter_is_400(populated: Network, entity: str) -> None:
    for url in (f"/api/v1/{entity}/list", f"/api/v1/{entity}/count"):
        response = populated.api.post(url, {"no_such_field": "x"}, format="json")
        assert response.status_code == 400, url
        assert "no_such_field" in response.json()["message"]


def test_paging_and_format_parameters_are_not_filters(populated: Network) -> None:
    response = populated.api.get(
        "/api/v1/clients/", {"status": "online", "limit": "1", "offset": "0", "format": "json"}
    )
    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert len(response.json()["result"]) == 1


def test_fedn_apiclient_filters_are_all_known(populated: Network) -> None:
    # The query parameters FEDn 0.9.5's APIClient sends (spec §11.2) still filter.
    api = populated.api
    assert api.get("/api/v1/clients/", {"status": "online", "combiner": "combiner-1"}).json()["count"] == 1
    assert api.get("/api/v1/models/", {"session_id": "session-a"}).status_code == 200
    statuses = {
        "session_id": "session-b",
        "type": "LOG",
        "sender.name": "client-b",
        "sender.role": "COMBINER",
    }
    assert api.get("/api/v1/statuses/", statuses).json()["count"] == 1
    validations = {
        "sessionId": "session-b",
        "modelId": "model-b",
        "correlationId": "corr-2",
        "sender.name": "client-c",
        "sender.role": "OTHER",
        "receiver.name": "combiner-2",
        "receiver.role": "REDUCER",
    }
    assert api.get("/api/v1/validations/", validations).json()["count"] == 1
