"""FEDn's legacy client routes, including /add_client, which 0.9.5 clients call first."""

from django.conf import settings
from django.db.models import Count, Q
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from apps.clients.api.serializers import ClientSerializer
from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.clients.services import assignment_answer, client_assign, clients_online
from apps.combiners.api.legacy import client_ip
from apps.combiners.models import Combiner
from apps.packages.services import package_get_active
from controlplane.api.auth import IsClientRole, bound_subject, require_speaks_for
from controlplane.api.fields import as_http_date
from controlplane.api.legacy import failure, json_body, required_param, window
from controlplane.api.schema import LEGACY_PAGING, error, errors, fedn_route, query
from controlplane.api.serializers import ErrorSerializer

ADD_CLIENT_KEYS = {"client_id", "preferred_combiner", "name", "package"}


class AddClientRequestSerializer(serializers.Serializer):
    client_id = serializers.CharField(
        required=False, help_text="The client's name (FEDn 0.9.5 sends it here)."
    )
    name = serializers.CharField(required=False)
    preferred_combiner = serializers.JSONField(
        required=False, help_text="A combiner's name, or false or null for the least-packed one."
    )
    package = serializers.CharField(required=False, help_text="Accepted and ignored, as in FEDn.")


class ClientAssignmentSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["assigned"])
    host = serializers.CharField(help_text="The combiner's address.")
    fqdn = serializers.CharField(allow_null=True)
    package = serializers.ChoiceField(choices=["remote"])
    ip = serializers.CharField()
    port = serializers.IntegerField()
    certificate = serializers.CharField(allow_null=True, help_text="Base64 PEM, when TLS is on.")
    helper_type = serializers.CharField()


class RetrySerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always false.")
    status = serializers.ChoiceField(choices=["retry"])
    message = serializers.CharField()


class LegacyClientSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The client's name.")
    combiner = serializers.CharField(allow_null=True)
    combiner_preferred = serializers.JSONField(help_text="The combiner the client asked for, or false.")
    ip = serializers.CharField()
    status = serializers.CharField()
    last_seen = serializers.CharField(help_text='RFC 822 date, or "" when never seen.')


class LegacyClientListSerializer(serializers.Serializer):
    result = LegacyClientSerializer(many=True)
    count = serializers.IntegerField()


class ActiveClientListSerializer(serializers.Serializer):
    result = ClientSerializer(many=True)
    count = serializers.IntegerField()


class ClientConfigSerializer(serializers.Serializer):
    network_id = serializers.CharField()
    discover_host = serializers.CharField()
    discover_port = serializers.IntegerField()
    checksum = serializers.CharField(required=False, help_text='sha256 of the active package; "" when none.')


class CombinersDataRequestSerializer(serializers.Serializer):
    combiners = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="Names, or null for every client."
    )


class CombinerClientCountSerializer(serializers.Serializer):
    combiner = serializers.CharField(allow_null=True)
    count = serializers.IntegerField()


class CombinersDataSerializer(serializers.Serializer):
    result = CombinerClientCountSerializer(many=True)


@fedn_route(
    request=AddClientRequestSerializer,
    responses={
        200: ClientAssignmentSerializer,
        203: OpenApiResponse(RetrySerializer, description="No compute package yet: retry later."),
        400: error(400, "A body FEDn would refuse, an unknown combiner, or no combiner available."),
    },
)
@api_view(["POST"])
@permission_classes([IsClientRole])
def add_client(request: Request) -> Response:
    """Assign a client to a combiner (least-packed, or its preferred one).

    A client token registers only the client its `sub` names; a body that names none means that one.
    A client its combiner still has online keeps `online` (client_assign).
    """
    body = json_body(request, ADD_CLIENT_KEYS)
    for key in ("client_id", "name"):
        if body.get(key):
            require_speaks_for(request, body[key])
    name = body.get("name") or body.get("client_id") or bound_subject(request)
    if not isinstance(name, str) or not name:
        return failure("client_id must be the client's name", status.HTTP_400_BAD_REQUEST)
    preferred = body.get("preferred_combiner") or None
    if preferred is not None and not isinstance(preferred, str):
        return failure("preferred_combiner must be a name or false", status.HTTP_400_BAD_REQUEST)
    package = package_get_active()
    if package is None:
        # 0.9.5 clients retry every few seconds on this answer.
        return Response(
            {
                "success": False,
                "status": "retry",
                "message": "No compute package found. Set package in controller.",
            },
            status=status.HTTP_203_NON_AUTHORITATIVE_INFORMATION,
        )
    _, combiner = client_assign(name=name, preferred_combiner=preferred, ip=client_ip(request))
    return Response(assignment_answer(combiner, package.helper))


@fedn_route(
    parameters=[*LEGACY_PAGING, query("status", "Only clients in this status.")],
    responses={200: LegacyClientListSerializer},
)
@api_view(["GET"])
def list_clients(request: Request) -> Response:
    clients = Client.objects.select_related("combiner").order_by("-last_seen", "-pk")
    if request.query_params.get("status"):
        clients = clients.filter(status=request.query_params["status"])
    result = [
        {
            "id": c.name,
            "combiner": c.combiner.name if c.combiner else None,
            "combiner_preferred": c.combiner_preferred or False,
            "ip": c.ip,
            "status": c.status,
            "last_seen": as_http_date(c.last_seen) or "",
        }
        for c in window(clients, request)
    ]
    return Response({"result": result, "count": clients.count()})


@fedn_route(
    parameters=[query("combiner", "The combiner's name.", required=True)],
    responses={200: ActiveClientListSerializer, **errors(400), 404: error(404, "No such combiner.")},
)
@api_view(["GET"])
def get_active_clients(request: Request) -> Response:
    """Online clients of one combiner (this route always failed in FEDn 0.9.5)."""
    name = required_param(request, "combiner", "Missing combiner name.")
    combiner = Combiner.objects.filter(name=name).first()
    if combiner is None:
        return failure(f"Combiner {name} not found.", status.HTTP_404_NOT_FOUND)
    clients = clients_online().select_related("combiner").filter(combiner=combiner).order_by("name")
    return Response({"result": ClientSerializer(clients, many=True).data, "count": clients.count()})


@fedn_route(
    parameters=[query("checksum", 'Anything but "false" adds the active package\'s checksum.')],
    responses={200: ClientConfigSerializer},
)
@api_view(["GET"])
def get_client_config(request: Request) -> Response:
    """What a client's settings file needs to find the controller."""
    config = {
        "network_id": settings.FEDPLANE_NETWORK_ID,
        "discover_host": settings.FEDPLANE_CONTROLLER_HOST,
        "discover_port": settings.FEDPLANE_CONTROLLER_PORT,
    }
    if request.query_params.get("checksum", "true") != "false":
        package = package_get_active()
        config["checksum"] = package.sha256 if package else ""
    return Response(config)


@fedn_route(
    request=CombinersDataRequestSerializer,
    responses={200: CombinersDataSerializer, 400: ErrorSerializer},
)
@api_view(["POST"])
def list_combiners_data(request: Request) -> Response:
    """Online clients per listed combiner; with null, every client grouped by combiner (FEDn's combiner route)."""
    body = json_body(request, {"combiners"}, required={"combiners"})
    names = body["combiners"]
    if names is None:
        rows = Client.objects.values("combiner__name").annotate(count=Count("pk")).order_by("combiner__name")
        return Response({"result": [{"combiner": r["combiner__name"], "count": r["count"]} for r in rows]})
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return failure("combiners must be a list of names or null", status.HTTP_400_BAD_REQUEST)
    counts = dict(
        Combiner.objects.filter(name__in=names)
        .annotate(count=Count("clients", filter=Q(clients__status=ClientStatus.ONLINE)))
        .values_list("name", "count")
    )
    return Response({"result": [{"combiner": n, "count": counts.get(n, 0)} for n in names]})
