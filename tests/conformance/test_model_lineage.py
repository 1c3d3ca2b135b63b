"""GET /api/v1/models/<id>/ancestors: X-Limit counts parents; include_self adds the model itself.

FEDn 0.9.5's list_ancestors appends the model first when include_self, then walks up to
`limit` parents, so `get_model_trail(n_max=2)` gets the model and its two nearest parents.
"""

from tests.api.factories import Network


def chain(network: Network, length: int) -> list[str]:
    uuids = [network.seed()["model"]]
    for _ in range(length - 1):
        uuids.append(network.child_model(uuids[-1], "s")["model"])
    return uuids


def ancestors(network: Network, model: str, limit: str, include_self: str) -> list[str]:
    response = network.api.get(
        f"/api/v1/models/{model}/ancestors", {"include_self": include_self}, HTTP_X_LIMIT=limit
    )
    assert response.status_code == 200
    return [doc["model"] for doc in response.json()]


def test_limit_counts_parents_only(network: Network) -> None:
    m0, m1, m2, m3 = chain(network, 4)
    assert ancestors(network, m3, "2", "false") == [m2, m1]
    assert ancestors(network, m3, "2", "true") == [m3, m2, m1]
    assert ancestors(network, m3, "1", "true") == [m3, m2]
    assert ancestors(network, m3, "10", "true") == [m3, m2, m1, m0]
