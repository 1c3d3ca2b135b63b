"""Domain errors are answered once, by the exception handler; lookups keep each viewset's queryset."""

from typing import Any

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from apps.clients.services import AssignmentError
from apps.combiners.grpc_client import CombinerCallFailed, CombinerRejected, CombinerUnreachable
from apps.combiners.services import CombinerRefused
from apps.identity.services import IdentityError, TokenNotFound
from apps.models.services import ModelError
from apps.packages.services import PackageError
from apps.sessions.api.views import RoundViewSet
from apps.sessions.ingestion import ReportRefused
from apps.sessions.services import PreconditionFailed, SessionError
from controlplane.api.errors import json_exception_handler
from controlplane.errors import ConflictError, DomainError, NotFoundError
from controlplane.tokens import TokenError

from .factories import Network


@pytest.mark.parametrize(
    ("error_class", "status"),
    [
        (DomainError, 400),
        (NotFoundError, 404),
        (ConflictError, 409),
        (PackageError, 400),
        (ModelError, 400),
        (TokenError, 400),
        (IdentityError, 400),
        (TokenNotFound, 404),
        (CombinerRefused, 400),
        (AssignmentError, 400),
        (SessionError, 400),
        (PreconditionFailed, 400),
        (ReportRefused, 409),
        (CombinerCallFailed, 502),
        (CombinerRejected, 502),
        (CombinerUnreachable, 503),
    ],
)
def test_the_handler_answers_each_domain_error_with_its_status(error_class: type, status: int) -> None:
    assert issubclass(error_class, DomainError)
    response = json_exception_handler(error_class("the reason, in words"), {"view": None})
    assert response is not None
    assert response.status_code == status
    assert response.data == {"success": False, "message": "the reason, in words"}


def test_a_refused_request_is_answered_by_the_handler(api: Any) -> None:
    response = api.post("/api/v1/sessions/", {"session_config": {"rounds": 0}}, format="json")
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "session_config.rounds must be at least 1"}


def test_round_lookup_uses_the_viewsets_own_queryset(
    network: Network, django_assert_num_queries: Any
) -> None:
    network.combiner("combiner-1")
    network.session("session-a")
    round_id = network.round("session-a")["round_id"]
    assert network.report(round_id, "combiner-1").status_code == 201
    view = RoundViewSet(
        request=Request(APIRequestFactory().get("/")), kwargs={"pk": round_id}, format_kwarg=None
    )
    # The round with its session (select_related), then its reports (prefetch_related): no more.
    with django_assert_num_queries(2):
        found = view.get_object()
        assert found.session.session_id == "session-a"
        assert [report.combiner for report in found.reports.all()] == ["combiner-1"]


@pytest.mark.parametrize("identifier", ["²", "9" * 30, "not-a-uuid"])
def test_an_identifier_that_names_nothing_is_404(api: Any, identifier: str) -> None:
    response = api.get(f"/api/v1/models/{identifier}")
    assert response.status_code == 404
    assert response.json() == {"success": False, "message": f"Model {identifier} not found"}
