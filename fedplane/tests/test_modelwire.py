"""ModelService chunk messages in wire form read and write as protobuf's generated code does."""

from __future__ import annotations

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.message import DecodeError

from fedplane.modelwire import (
    MalformedMessage,
    chunk_message,
    read_request,
    read_response,
    request_header,
    response_header,
    varint,
)
from fedplane.proto import fedn_pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 1 << 20, 2**35 + 5])
def test_varint_matches_the_protobuf_encoder(value: int) -> None:
    assert varint(value) == _VarintBytes(value)


@pytest.mark.parametrize("chunk", [b"", b"x", bytes(range(256)) * 4097])
@pytest.mark.parametrize("model_id", ["m", "model-ü-" + "x" * 200])
def test_chunk_messages_parse_as_the_generated_messages(chunk: bytes, model_id: str) -> None:
    request = fedn_pb2.ModelRequest.FromString(
        chunk_message(request_header(model_id, fedn_pb2.IN_PROGRESS), chunk)
    )
    assert (request.id, request.data, request.status) == (model_id, chunk, fedn_pb2.IN_PROGRESS)
    response = fedn_pb2.ModelResponse.FromString(
        chunk_message(response_header(model_id, fedn_pb2.IN_PROGRESS), chunk)
    )
    assert (response.id, response.data, response.status) == (model_id, chunk, fedn_pb2.IN_PROGRESS)


@pytest.mark.parametrize(
    "response",
    [
        fedn_pb2.ModelResponse(id="m", data=b"\x00\x01" * 40_000, status=fedn_pb2.IN_PROGRESS),
        fedn_pb2.ModelResponse(id="m", status=fedn_pb2.OK),
        fedn_pb2.ModelResponse(id="m", status=fedn_pb2.FAILED, message="Model m is not available."),
        fedn_pb2.ModelResponse(),
    ],
)
def test_responses_read_as_protobuf_reads_them(response: fedn_pb2.ModelResponse) -> None:
    model_id, data, status, message = read_response(response.SerializeToString())
    assert (model_id, bytes(data), status, message) == (
        response.id,
        response.data,
        response.status,
        response.message,
    )


def test_requests_read_as_protobuf_reads_them_with_a_sender_skipped() -> None:
    # FEDn 0.9.5's download request names its sender; uploads carry data, id and status.
    request = fedn_pb2.ModelRequest(
        sender=fedn_pb2.Client(name="client-1", role=fedn_pb2.WORKER),
        data=b"abc",
        id="m-1",
        status=fedn_pb2.IN_PROGRESS,
    )
    model_id, data, status, _ = read_request(request.SerializeToString())
    assert (model_id, bytes(data), status) == ("m-1", b"abc", fedn_pb2.IN_PROGRESS)


def test_field_order_and_unknown_fields_do_not_matter() -> None:
    # status first, an unknown varint field 9, an unknown fixed32 field 10, data, then id.
    raw = b"\x18\x01" + b"\x48\x96\x01" + b"\x55abcd" + b"\x0a\x03abc" + b"\x12\x01m"
    parsed = fedn_pb2.ModelResponse.FromString(raw)
    model_id, data, status, _ = read_response(raw)
    assert (model_id, bytes(data), status) == (parsed.id, parsed.data, parsed.status)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05abc",  # data says 5 bytes, 3 follow
        b"\x18",  # a status key without its value
        b"\x18\x80",  # a varint that never ends
        b"\x18" + b"\xff" * 10 + b"\x01",  # a varint over 64 bits
        b"\x0b",  # wire type 3 (a group): not in proto3
        b"\x0d\x01\x02",  # a fixed32 field cut short
        b"\x12\x02\xff\xfe",  # an id that is not UTF-8
        b"\x02\x00",  # field number 0
    ],
)
def test_malformed_messages_are_refused_as_protobuf_refuses_them(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        read_response(raw)
    with pytest.raises(DecodeError):
        fedn_pb2.ModelResponse.FromString(raw)
