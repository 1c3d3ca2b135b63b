from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.identity.services import tokens_revoked
from controlplane.api.auth import IsCombinerOrAdminRole

REVOKED_SCHEMA = {
    "type": "object",
    "properties": {"jti": {"type": "array", "items": {"type": "string"}}},
    "required": ["jti"],
}


class RevokedTokensView(APIView):
    """The revocation list combiners poll: the jti of every revoked token not yet expired."""

    permission_classes = [IsCombinerOrAdminRole]

    @extend_schema(operation_id="tokens_revoked", responses={200: REVOKED_SCHEMA})
    def get(self, request: Request) -> Response:
        return Response({"jti": tokens_revoked()})
