"""The upload's hand-encoded ModelRequest messages read back as the protobuf messages they stand for."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedplane.client.transfer import CHUNK_SIZE, _upload_messages
from fedplane.proto import fedn_pb2


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
    # Each message is exactly as long as the protobuf encoder would make it for the same fields.
    for raw, message in zip(_upload_messages(path, model_id, None), messages, strict=True):
        assert len(raw) == message.ByteSize()
