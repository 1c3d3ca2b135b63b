"""FEDn's legacy combiner routes."""

from rest_framework import status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from apps.combiners.models import Combiner
from apps.combiners.services import combiner_register, combiner_registration_answer
from controlplane.api.auth import IsCombinerRole, require_speaks_for
from controlplane.api.fields import as_plain
from controlplane.api.legacy import failure, json_body, required_param, window

ADD_COMBINER_KEYS = {"combiner_id", "address", "fqdn", "port", "secure_grpc", "max_clients"}


def client_ip(request: Request) -> str:
    return request.META.get("REMOTE_ADDR", "")


@api_view(["POST"])
@permission_classes([IsCombinerRole])
def add_combiner(request: Request) -> Response:
    """A combiner announces itself: {combiner_id, address, fqdn, port, secure_grpc}.

    A combiner token registers (and moves, and learns the certificate and key of) only the combiner
    its `sub` names.
    """
    body = json_body(request, ADD_COMBINER_KEYS, required={"combiner_id", "address", "port"})
    require_speaks_for(request, body["combiner_id"])
    port = body["port"]
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int):
        return failure("port must be an integer", status.HTTP_400_BAD_REQUEST)
    name, address = body["combiner_id"], body["address"]
    if not isinstance(name, str) or not isinstance(address, str):
        return failure("combiner_id and address must be strings", status.HTTP_400_BAD_REQUEST)
    fqdn = body.get("fqdn")
    if fqdn is not None and not isinstance(fqdn, str):
        return failure("fqdn must be a string or null", status.HTTP_400_BAD_REQUEST)
    max_clients = body.get("max_clients")
    if max_clients is not None and (
        isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1
    ):
        return failure("max_clients must be a positive integer", status.HTTP_400_BAD_REQUEST)
    combiner = combiner_register(
        name=name,
        address=address,
        port=port,
        fqdn=fqdn,
        secure_grpc=bool(body.get("secure_grpc", False)),
        ip=client_ip(request),
        max_clients=max_clients,
    )
    return Response(combiner_registration_answer(combiner))


@api_view(["GET"])
def list_combiners(request: Request) -> Response:
    combiners = Combiner.objects.order_by("-updated_at", "-pk")
    result = [{"name": c.name, "updated_at": as_plain(c.updated_at)} for c in window(combiners, request)]
    return Response({"result": result, "count": combiners.count()})


@api_view(["GET"])
def get_combiner(request: Request) -> Response:
    name = required_param(request, "combiner", "Missing combiner name.")
    combiner = Combiner.objects.filter(name=name).first()
    if combiner is None:
        return failure(f"Combiner {name} not found.", status.HTTP_404_NOT_FOUND)
    return Response(
        {
            combiner.name: {
                "address": combiner.address,
                "fqdn": combiner.fqdn,
                "parent_reducer": "api",
                "port": combiner.port,
                "updated_at": as_plain(combiner.updated_at),
            }
        }
    )
