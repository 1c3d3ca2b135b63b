"""Model transfer in wire form: the upload's hand-encoded ModelRequest messages read back as the
protobuf messages they stand for, and the download reads ModelResponse messages as protobuf does."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.internal.encoder import _VarintBytes

from fedplane.client.transfer import CHUNK_SIZE, MalformedMessage, _model_response, _upload_messages, _varint
from fedplane.proto import fedn_pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, CHUNK_SIZE, 2**35 + 5])
def test_varint_matches_the_protobuf_encoder(value: int) -> None:
    assert _varint(value) == _VarintBytes(value)


@pytest.mark.parametrize(
    ("size", "model_id"),
    [
        (0, "empty"),
        (1000, "a-model"),
        (2 * CHUNK_SIZE + 17, "model-ü-" + "x" * 200),  # a multi-byte id length
    ],
)
def test_upload_messages_decode_to_the_chunks_and_the_ok_terminator(
    tmp_path: Path, size: int, model_id: str
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "model.npz"
    path.write_bytes(payload)
    messages = [fedn_pb2.ModelRequest.FromString(raw) for raw in _upload_messages(path, model_id, None)]
    assert {message.id for message in messages} == {model_id}
    assert [message.status for message in messages] == [fedn_pb2.IN_PROGRESS] * (len(messages) - 1) + [
        fedn_pb2.OK
    ]
    assert messages[-1].data == b""
    assert b"".join(message.data for message in messages) == payload
    assert all(len(message.data) == CHUNK_SIZE for message in messages[:-2])
    # Each message is exactly what the protobuf encoder would send for the same fields.
    for raw, message in zip(_upload_messages(path, model_id, None), messages, strict=True):
        assert len(raw) == message.ByteSize()


@pytest.mark.parametrize(
    "response",
    [
        fedn_pb2.ModelResponse(id="m", data=b"\x00\x01" * 40_000, status=fedn_pb2.IN_PROGRESS),
        fedn_pb2.ModelResponse(id="m", status=fedn_pb2.OK),
        fedn_pb2.ModelResponse(id="m", status=fedn_pb2.FAILED, message="Model m is not available."),
        fedn_pb2.ModelResponse(),
    ],
)
def test_model_responses_read_as_protobuf_reads_them(response: fedn_pb2.ModelResponse) -> None:
    data, status, message = _model_response(response.SerializeToString())
    assert (bytes(data), status, message) == (response.data, response.status, response.message)


def test_field_order_and_unknown_fields_do_not_matter() -> None:
    wanted = fedn_pb2.ModelResponse(id="m", data=b"abc", status=fedn_pb2.IN_PROGRESS)
    # status first, then an unknown varint field 9, an unknown fixed32 field 10, data, then id.
    raw = b"\x18\x01" + b"\x48\x96\x01" + b"\x55abcd" + b"\x0a\x03abc" + b"\x12\x01m"
    parsed = fedn_pb2.ModelResponse.FromString(raw)  # keeps the unknown fields beside these
    assert (parsed.id, parsed.data, parsed.status) == (wanted.id, wanted.data, wanted.status)
    data, status, _ = _model_response(raw)
    assert (bytes(data), status) == (wanted.data, wanted.status)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05abc",  # data says 5 bytes, 3 follow
        b"\x18",  # a status key without its value
        b"\x18\x80",  # a varint that never ends
        b"\x0b",  # wire type 3 (a group): not in proto3
        b"\x0d\x01\x02",  # a fixed32 field cut short
    ],
)
def test_a_malformed_response_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        _model_response(raw)
