"""Protocol messages the combiner builds, and their JSON form for the controller."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from fedplane.proto import fedn_pb2


def to_report(message: Message) -> dict[str, Any]:
    """FEDn's camelCase MessageToDict form, default-valued fields included."""
    return MessageToDict(
        message, preserving_proto_field_name=False, always_print_fields_with_no_presence=True
    )


def combiner_status(
    combiner_name: str,
    text: str,
    *,
    log_level: int = fedn_pb2.Status.INFO,
    status_type: int = fedn_pb2.LOG,
    session_id: str = "",
    correlation_id: str = "",
    data: str = "",
) -> dict[str, Any]:
    status = fedn_pb2.Status(
        sender=fedn_pb2.Client(name=combiner_name, role=fedn_pb2.COMBINER),
        status=text,
        log_level=log_level,
        type=status_type,
        session_id=session_id,
        correlation_id=correlation_id,
        data=data,
    )
    status.timestamp.GetCurrentTime()
    return to_report(status)
