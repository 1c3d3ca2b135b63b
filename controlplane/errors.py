"""The domain's errors: what a service refuses, and the HTTP status the API answers it with.

Services raise these; the API's exception handler turns them into JSON once
(`controlplane.api.errors.json_exception_handler`), so views do not catch them. Pure Python: the
gRPC client and `controlplane.tokens` use it without Django.
"""

from http import HTTPStatus
from typing import ClassVar


class DomainError(Exception):
    """A request the domain refuses or finds invalid; the message says why, in words for the caller."""

    status: ClassVar[int] = HTTPStatus.BAD_REQUEST


class NotFoundError(DomainError):
    """The request names something that does not exist."""

    status: ClassVar[int] = HTTPStatus.NOT_FOUND


class ConflictError(DomainError):
    """The request clashes with the current state (e.g. a report for a round already closed)."""

    status: ClassVar[int] = HTTPStatus.CONFLICT


class UpstreamError(DomainError):
    """A service this controller depends on (e.g. a combiner) failed to answer as asked."""

    status: ClassVar[int] = HTTPStatus.BAD_GATEWAY


class UpstreamUnavailable(UpstreamError):
    """A service this controller depends on could not be reached in time."""

    status: ClassVar[int] = HTTPStatus.SERVICE_UNAVAILABLE
