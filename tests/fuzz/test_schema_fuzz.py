"""Property-based fuzzing of every operation of /api/schema/ against a real controller process.

Two passes over the same server (auth on): with an admin token, and without any token. Every
answer must be no server error, a status code and content type the schema declares, and a body
that conforms to the declared response schema. Detail routes are tried with the generated path
parameters and again with the id of a row that exists.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.server import FuzzServer
from tests.fuzz.tally import EXAMPLES, TALLIES, Tally, Timer

# A deadline for the whole pass that grows with the budget; each request has its own below.
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600 + EXAMPLES * 15)]


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """Schemathesis's not_a_server_error, except for a 5xx the operation declares.

    FEDn's /delete_model_trail answers 501 Not Implemented by design; fedplane answers the same.
    """
    if str(response.status_code) in case.operation.responses.status_codes:
        return None
    return not_a_server_error(ctx, response, case)


def json_error_answer(ctx: Any, response: Any, case: Any) -> None:
    """Every error answer is a JSON object with a message, as FEDn's clients expect."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    return None


CHECKS = [
    no_server_error,
    json_error_answer,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A slow answer is a finding too: no request may hang the run.
REQUEST_TIMEOUT = 30
# How much of each failure's report goes into the assertion message.
FAILURE_CHARS = 4000


@pytest.fixture(scope="session")
def api_schema(fuzz_server: FuzzServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/api/schema/?format=json", timeout=60)


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking: a failure's report carries a curl line that reproduces it, and time goes to examples.
    phases=[Phase.explicit, Phase.generate],
)


def _with_known_row(case: Any, server: FuzzServer) -> dict[str, Any] | None:
    """The case's path parameters with the id of a seeded row of its resource, when one is known."""
    if not case.path_parameters:
        return None
    resource = case.operation.path.strip("/").split("/")
    if len(resource) < 3 or resource[:2] != ["api", "v1"]:
        return None
    known = {}
    for name in case.path_parameters:
        value = server.known.get(f"{resource[2]}:{name}")
        if value is None:
            return None
        known[name] = value
    return known


def _fuzz_operation(operation: Any, server: FuzzServer, http: requests.Session, tally: Tally) -> None:
    @given(case=operation.as_strategy())
    @FUZZ_SETTINGS
    def examples(case: Any) -> None:
        tally.examples += 1
        case.call_and_validate(session=http, checks=CHECKS, timeout=REQUEST_TIMEOUT)
        known = _with_known_row(case, server)
        if known is not None:
            case.path_parameters = known
            case.call_and_validate(session=http, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    examples()


def _fuzz_all(api_schema: Any, server: FuzzServer, *, token: bool, name: str) -> None:
    """Every operation in turn; all failures are collected, then reported together."""
    http = server.session(token=token)
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        tally = TALLIES[(name, operation.label)]
        with Timer(tally):
            try:
                _fuzz_operation(operation, server, http, tally)
            except (
                Exception,
                BaseExceptionGroup,
            ) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup
                tally.failed = True
                failures.append(f"--- {operation.label}\n{str(exc)[:FAILURE_CHARS]}")
    assert not failures, f"{len(failures)} operations failed ({name}):\n" + "\n".join(failures)


def test_with_admin_token(api_schema: Any, fuzz_server: FuzzServer) -> None:
    _fuzz_all(api_schema, fuzz_server, token=True, name="admin token")


def test_without_token(api_schema: Any, fuzz_server: FuzzServer) -> None:
    _fuzz_all(api_schema, fuzz_server, token=False, name="no token")
