"""FEDn's legacy combiner routes."""

from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from apps.combiners.models import Combiner
from apps.combiners.services import combiner_register, combiner_registration_answer
from controlplane.api.auth import IsCombinerRole, require_speaks_for
from controlplane.api.fields import as_plain
from controlplane.api.legacy import failure, json_body, required_param, window
from controlplane.api.schema import LEGACY_PAGING, error, errors, fedn_route, query

ADD_COMBINER_KEYS = {"combiner_id", "address", "fqdn", "port", "secure_grpc", "max_clients"}


class AddCombinerRequestSerializer(serializers.Serializer):
    combiner_id = serializers.CharField(help_text="The combiner's name.")
    address = serializers.CharField()
    port = serializers.JSONField(help_text="An integer, or its digits as a string.")
    fqdn = serializers.CharField(required=False, allow_null=True)
    secure_grpc = serializers.BooleanField(required=False)
    max_clients = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class CombinerRegistrationSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    status = serializers.ChoiceField(choices=["added"])
    storage = serializers.DictField(help_text="{storage_type, storage_config}: where models are stored.")
    statestore = serializers.DictField(help_text="{type, network_id}.")
    certificate = serializers.CharField(allow_null=True, help_text="Base64 PEM, when TLS is on.")
    key = serializers.CharField(allow_null=True)


class LegacyCombinerSerializer(serializers.Serializer):
    name = serializers.CharField()
    updated_at = serializers.CharField(help_text="`2024-05-22 14:49:40.123456`, UTC.")


class LegacyCombinerListSerializer(serializers.Serializer):
    result = LegacyCombinerSerializer(many=True)
    count = serializers.IntegerField()


# /get_combiner's answer: {"<name>": this}.
COMBINER_ENTRY_SCHEMA = {
    "type": "object",
    "properties": {
        "address": {"type": "string"},
        "fqdn": {"type": "string", "nullable": True},
        "parent_reducer": {"type": "string", "enum": ["api"]},
        "port": {"type": "integer"},
        "updated_at": {"type": "string", "example": "2024-05-22 14:49:40.123456"},
    },
    "required": ["address", "fqdn", "parent_reducer", "port", "updated_at"],
}


def client_ip(request: Request) -> str:
    return request.META.get("REMOTE_ADDR", "")


@fedn_route(
    request=AddCombinerRequestSerializer,
    responses={200: CombinerRegistrationSerializer, **errors(400)},
)
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


@fedn_route(parameters=LEGACY_PAGING, responses={200: LegacyCombinerListSerializer})
@api_view(["GET"])
def list_combiners(request: Request) -> Response:
    combiners = Combiner.objects.order_by("-updated_at", "-pk")
    result = [{"name": c.name, "updated_at": as_plain(c.updated_at)} for c in window(combiners, request)]
    return Response({"result": result, "count": combiners.count()})


@fedn_route(
    parameters=[query("combiner", "The combiner's name.", required=True)],
    responses={
        200: {
            "type": "object",
            "description": "The combiner, under its name.",
            "additionalProperties": COMBINER_ENTRY_SCHEMA,
        },
        **errors(400),
        404: error(404, "No such combiner."),
    },
)
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
