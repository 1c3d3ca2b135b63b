"""A model page's lineage: its ancestors and descendants within bounds, each linked to its page,
the model itself highlighted, labelled with what the layers above know of each model."""

import re
import uuid
from collections.abc import Mapping, Sequence

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from apps.models import lineage
from apps.models.lineage import NodeFacts, lineage_svg, model_lineage
from apps.models.models import Model

pytestmark = pytest.mark.django_db


def make_model(parent: Model | None, session_id: str | None = "run-a") -> Model:
    return Model.objects.create(
        model_id=uuid.uuid4(), parent=parent, session_id=session_id, artifact="models/x.npz", sha256="0" * 64
    )


def chain(length: int, parent: Model | None = None, session_id: str = "run-a") -> list[Model]:
    models = []
    for _ in range(length):
        parent = make_model(parent, session_id)
        models.append(parent)
    return models


def page(admin_client: HttpClient, model: Model) -> str:
    response = admin_client.get(reverse("admin:mlmodels_model_change", args=[model.pk]))
    assert response.status_code == 200
    return str(response.content.decode())


def nodes(body: str) -> dict[str, tuple[str, str]]:
    """Each drawn model: its uuid -> (relation, link)."""
    return {
        model_id: (relation, href)
        for href, relation, model_id in re.findall(
            r'<a href="([^"]+)" class="fp-lineage-node[^"]*" data-relation="(\w+)" data-model-id="([^"]+)"',
            body,
        )
    }


def test_reads_ancestors_and_descendants_in_order() -> None:
    seed = make_model(None, None)
    first, second, third = chain(3, seed)
    branch = make_model(first, "run-b")  # another session started from the first model
    found = model_lineage(first)
    assert found.ancestors == [seed]
    assert found.descendants == [second, branch, third]  # by generation, then commit order
    assert not found.more_ancestors and not found.more_descendants
    assert model_lineage(seed).ancestors == [] and model_lineage(third).descendants == []


def test_bounds_say_when_more_lie_past_them() -> None:
    models = chain(9)
    middle = models[4]
    found = model_lineage(middle, ancestor_limit=2, descendant_depth=3, descendant_limit=10)
    assert found.ancestors == [models[3], models[2]] and found.more_ancestors
    assert found.descendants == models[5:8] and found.more_descendants
    wide = make_model(None, None)
    children = [make_model(wide) for _ in range(5)]
    capped = model_lineage(wide, descendant_limit=3)
    assert capped.descendants == children[:3] and capped.more_descendants
    svg = str(lineage_svg(found, facts={}))
    assert "older ancestors not shown" in svg and "more descendants not shown" in svg


def test_model_page_draws_linked_lineage_with_the_model_highlighted(admin_client: HttpClient) -> None:
    seed = make_model(None, None)
    first, second, third = chain(3, seed)
    branch = make_model(second, "run-b")
    drawn = nodes(page(admin_client, second))
    assert drawn == {
        str(seed.model_id): ("ancestor", reverse("admin:mlmodels_model_change", args=[seed.pk])),
        str(first.model_id): ("parent", reverse("admin:mlmodels_model_change", args=[first.pk])),
        str(second.model_id): ("current", reverse("admin:mlmodels_model_change", args=[second.pk])),
        str(third.model_id): ("child", reverse("admin:mlmodels_model_change", args=[third.pk])),
        str(branch.model_id): ("child", reverse("admin:mlmodels_model_change", args=[branch.pk])),
    }
    body = page(admin_client, second)
    picture = body[
        body.index('<svg class="fp-lineage"') : body.index("</svg>", body.index('<svg class="fp-lineage"'))
    ]
    assert picture.count('aria-current="page"') == 1
    assert re.search(r'class="fp-lineage-node fp-lineage-current"[^>]*aria-current="page"', body)
    # Each generation a row further down; the branch opens a second column.
    tops = {
        model_id: (float(x), float(y))
        for model_id, x, y in re.findall(
            r'data-model-id="([^"]+)"[^>]*>.*?<rect x="([\d.]+)" y="([\d.]+)"', body, re.S
        )
    }
    assert tops[str(seed.model_id)][1] < tops[str(first.model_id)][1] < tops[str(second.model_id)][1]
    assert tops[str(third.model_id)][1] == tops[str(branch.model_id)][1] > tops[str(second.model_id)][1]
    assert tops[str(third.model_id)][0] != tops[str(branch.model_id)][0]


def test_a_seed_alone_is_drawn_and_labelled(admin_client: HttpClient) -> None:
    seed = make_model(None, None)
    body = page(admin_client, seed)
    assert list(nodes(body).values()) == [("current", reverse("admin:mlmodels_model_change", args=[seed.pk]))]
    assert "seed model (no session)" in body and "no validations" in body


def test_nodes_carry_the_facts_a_registered_source_gives(
    admin_client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = chain(2)
    asked: list[Sequence[str]] = []

    def facts(model_ids: Sequence[str]) -> Mapping[str, NodeFacts]:
        asked.append(model_ids)
        return {
            str(first.model_id): NodeFacts(origin="run-a · round 7", metric="accuracy 0.9100 (2 clients)")
        }

    monkeypatch.setattr(lineage, "_facts_sources", [])
    lineage.register_facts_source(facts)
    lineage.register_facts_source(facts)  # once is enough
    body = page(admin_client, second)
    assert len(asked) == 1 and set(asked[0]) == {str(first.model_id), str(second.model_id)}
    assert "run-a · round 7" in body and "accuracy 0.9100 (2 clients)" in body
    assert "<script>" not in str(
        lineage_svg(model_lineage(first), {str(first.model_id): NodeFacts("<script>")})
    )
