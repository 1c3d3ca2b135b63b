"""One base for every /api/v1/<entity>/ resource: list, POST list, count, get by id or natural key."""

from typing import Any, ClassVar

from django.db.models import F, Model, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.filters import FednFilterBackend, may_be_null
from controlplane.api.pagination import Listing, count_of
from controlplane.api.rows import row_reader

SORT_HEADERS = [
    OpenApiParameter("X-Sort-Key", str, OpenApiParameter.HEADER, required=False),
    OpenApiParameter("X-Sort-Order", str, OpenApiParameter.HEADER, required=False, enum=["asc", "desc"]),
    OpenApiParameter("X-Limit", int, OpenApiParameter.HEADER, required=False),
    OpenApiParameter("X-Skip", int, OpenApiParameter.HEADER, required=False),
]


class FednReadViewSet(viewsets.ReadOnlyModelViewSet):
    """Read routes of one entity in FEDn's shapes.

    Subclasses declare `queryset` (of a model whose manager is a NaturalKeyQuerySet),
    `serializer_class`, `filterset_class`, `sort_fields` (FEDn key -> ORM field) and `default_sort_key`.
    """

    filter_backends = [FednFilterBackend]
    lookup_value_regex = "[^/]+"
    sort_fields: ClassVar[dict[str, str]] = {}
    default_sort_key: ClassVar[str] = ""
    entity_name: ClassVar[str] = "object"

    def sort_queryset(self, queryset: QuerySet) -> QuerySet:
        key = self.request.headers.get("X-Sort-Key") or self.default_sort_key
        if key not in self.sort_fields:
            allowed = ", ".join(sorted(self.sort_fields))
            raise ValidationError({"X-Sort-Key": f"cannot sort by '{key}'; use one of: {allowed}"})
        descending = self.request.headers.get("X-Sort-Order", "").lower() != "asc"
        path = self.sort_fields[key]
        field = F(path)
        if may_be_null(queryset.model, path):
            # Missing values sort lowest, as in FEDn's MongoDB: last when descending, first when
            # ascending.
            if descending:
                return queryset.order_by(field.desc(nulls_last=True), F("pk").desc())
            return queryset.order_by(field.asc(nulls_first=True), F("pk").asc())
        # A column without NULLs is ordered plainly: an explicit NULLS clause on it would keep
        # PostgreSQL from reading the (field, id) index and make it sort the whole table instead.
        if descending:
            return queryset.order_by(field.desc(), F("pk").desc())
        return queryset.order_by(field.asc(), F("pk").asc())

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        if self.action in {"list", "list_post"}:
            queryset = self.sort_queryset(queryset)
        return queryset

    def listing_names(self) -> tuple[Any, ...]:
        """What names this request's list (before its order): the entity and its filters.

        A viewset's rows depend on its queryset and the filters alone, so cached totals and page
        positions are keyed by these rather than by the list's SQL, which costs a compile to write.
        """
        filters = FednFilterBackend().filter_values(self.request)
        # The method too: a comma in a POSTed filter means any-of, in a query string itself.
        return (
            type(self).__module__,
            type(self).__qualname__,
            self.request.method,
            tuple(sorted(filters.items())),
        )

    def sort_names(self) -> tuple[str, str]:
        """What names this request's order: the sort key and direction as sent (sort_queryset)."""
        return self.request.headers.get("X-Sort-Key", ""), self.request.headers.get("X-Sort-Order", "")

    def get_object(self) -> Model:
        """By natural key or primary key, from this viewset's own queryset (its joins and prefetches)."""
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        found = self.get_queryset().find(value)
        if found is None:
            raise NotFound(f"{self.entity_name} {value} not found")
        self.check_object_permissions(self.request, found)
        return found

    @extend_schema(parameters=SORT_HEADERS)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer_class = self.get_serializer_class()
        reader = row_reader(serializer_class, self.get_queryset().model)
        if reader is None:
            queryset = self.filter_queryset(self.get_queryset())
            page = self.paginate_queryset(queryset)
            documents = self.get_serializer(queryset if page is None else page, many=True).data
        else:
            # The serializer's documents built from rows (controlplane/api/rows.py): no model
            # instance and no field-by-field serializer walk per row. The rows' queryset is
            # compiled once for all requests naming the same filters, order and serializer
            # (Listing's plan); its filters are checked when it is.
            columns = reader.columns
            listing = Listing(
                lambda: self.filter_queryset(self.get_queryset()).values_list(*columns),
                self.listing_names(),
                shape=(serializer_class, *self.sort_names()),
            )
            page = self.paginate_queryset(listing)
            documents = reader.documents(list(listing.queryset) if page is None else page)
        if page is None:
            return Response(documents)
        return self.get_paginated_response(documents)

    @extend_schema(parameters=SORT_HEADERS, request={"application/json": {"type": "object"}})
    @action(detail=False, methods=["post"], url_path="list")
    def list_post(self, request: Request) -> Response:
        """The list, filtered by a JSON body of strings; a comma-separated value means any-of."""
        return self.list(request)

    @extend_schema(responses={200: int}, request={"application/json": {"type": "object"}})
    @action(detail=False, methods=["get", "post"])
    def count(self, request: Request) -> Response:
        """The number of matching objects, as a bare integer."""
        return Response(count_of(self.filter_queryset(self.get_queryset()), self.listing_names()))
