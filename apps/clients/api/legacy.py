"""FEDn's legacy client routes, including /add_client, which 0.9.5 clients call first."""

from django.conf import settings
from django.db.models import Count, Q
from rest_framework import status
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

ADD_CLIENT_KEYS = {"client_id", "preferred_combiner", "name", "package"}


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


@api_view(["GET"])
def get_active_clients(request: Request) -> Response:
    """Online clients of one combiner (this route always failed in FEDn 0.9.5)."""
    name = required_param(request, "combiner", "Missing combiner name.")
    combiner = Combiner.objects.filter(name=name).first()
    if combiner is None:
        return failure(f"Combiner {name} not found.", status.HTTP_404_NOT_FOUND)
    clients = clients_online().select_related("combiner").filter(combiner=combiner).order_by("name")
    return Response({"result": ClientSerializer(clients, many=True).data, "count": clients.count()})


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
