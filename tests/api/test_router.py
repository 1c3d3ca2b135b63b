"""The /api/v1/ router: each collection's routes gathered behind one pattern for its prefix, with
the names, paths and answers they had as a flat list."""

from typing import Any

import pytest
from django.urls import Resolver404, resolve, reverse

from controlplane.urls import router

pytestmark = pytest.mark.django_db


def test_a_path_is_resolved_past_one_pattern_per_collection_before_it() -> None:
    # One pattern per collection and the API root: /api/v1/validations/ is not tried against
    # every route of the seven collections before it.
    assert len(router.urls) == len(router.registry) + 1


@pytest.mark.parametrize(
    ("name", "args", "path"),
    [
        ("status-list", [], "/api/v1/statuses"),
        ("status-count", [], "/api/v1/statuses/count"),
        ("status-list-post", [], "/api/v1/statuses/list"),
        ("status-detail", ["7"], "/api/v1/statuses/7"),
        ("combiner-clients", ["c1"], "/api/v1/combiners/c1/clients"),
        ("model-ancestors", ["m1"], "/api/v1/models/m1/ancestors"),
        ("session-start", [], "/api/v1/sessions/start"),
        ("package-active", [], "/api/v1/packages/active"),
    ],
)
def test_routes_keep_their_names_and_paths(name: str, args: list[str], path: str) -> None:
    assert reverse(name, args=args) == path
    for asked in (path, f"{path}/"):
        assert resolve(asked).url_name == name


@pytest.mark.parametrize("path", ["/api/v1/statusesx/", "/api/v1/statuses/7/x/", "/api/v1/statuses-old"])
def test_a_path_that_only_starts_like_a_collection_is_not_found(api: Any, path: str) -> None:
    with pytest.raises(Resolver404):
        resolve(path)
    answer = api.get(path)
    assert answer.status_code == 404
    assert answer["Content-Type"].startswith("application/json")
