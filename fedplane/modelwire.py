"""ModelService's chunk messages in wire form, for both ends of a model transfer.

A model moves as ModelRequest (upload) and ModelResponse (download) messages of about 1 MiB each
(protos/fedn.proto). Building a protobuf message around a chunk and serializing it copies the
chunk two or three times, and parsing one copies it twice more; at a few GB/s that is most of a
transfer's CPU. Here a chunk message is its few header bytes joined to the chunk (one copy), and
a received message is read in place: its data is a view into the received bytes. The encoding
is protobuf's own, so either end may be FEDn 0.9.5's generated code.
"""

from __future__ import annotations

from typing import NamedTuple

# Field numbers (protos/fedn.proto).
REQUEST_DATA, REQUEST_ID, REQUEST_STATUS = 3, 4, 5
RESPONSE_DATA, RESPONSE_ID, RESPONSE_STATUS, RESPONSE_MESSAGE = 1, 2, 3, 4
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class MalformedMessage(ValueError):
    """Bytes that are not a well-formed protobuf message."""


class ChunkMessage(NamedTuple):
    model_id: str
    data: memoryview
    status: int
    message: str = ""


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _key(field_number: int, wire_type: int) -> bytes:
    return varint(field_number << 3 | wire_type)


def chunk_header(*, model_id: str, status: int, id_field: int, status_field: int, data_field: int) -> bytes:
    """Everything of a chunk message before the chunk's length and bytes (see `chunk_message`)."""
    encoded_id = model_id.encode()
    return (
        _key(id_field, LENGTH_DELIMITED)
        + varint(len(encoded_id))
        + encoded_id
        + _key(status_field, VARINT)
        + varint(status)
        + _key(data_field, LENGTH_DELIMITED)
    )


def request_header(model_id: str, status: int) -> bytes:
    return chunk_header(
        model_id=model_id,
        status=status,
        id_field=REQUEST_ID,
        status_field=REQUEST_STATUS,
        data_field=REQUEST_DATA,
    )


def response_header(model_id: str, status: int) -> bytes:
    return chunk_header(
        model_id=model_id,
        status=status,
        id_field=RESPONSE_ID,
        status_field=RESPONSE_STATUS,
        data_field=RESPONSE_DATA,
    )


def chunk_message(header: bytes, chunk: bytes) -> bytes:
    return b"".join((header, varint(len(chunk)), chunk))


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedMessage("a varint cut short or longer than 64 bits")


def _read(
    raw: bytes, *, id_field: int, status_field: int, data_field: int, message_field: int
) -> ChunkMessage:
    """The chunk fields of a message; fields may come in any order and unknown ones are skipped,
    as protobuf's parser does (the last of a repeated scalar field wins)."""
    view = memoryview(raw)
    data, model_id, status, message = view[:0], "", 0, ""
    pos = 0
    while pos < len(raw):
        key, pos = _read_varint(raw, pos)
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == VARINT:
            value, pos = _read_varint(raw, pos)
            if field_number == status_field:
                status = value
        elif wire_type == LENGTH_DELIMITED:
            length, pos = _read_varint(raw, pos)
            end = pos + length
            if end > len(raw):
                raise MalformedMessage("a field longer than the message")
            if field_number == data_field:
                data = view[pos:end]
            elif field_number in (id_field, message_field):
                try:
                    text = str(view[pos:end], "utf-8")
                except UnicodeDecodeError as exc:
                    raise MalformedMessage("a string field that is not UTF-8") from exc
                if field_number == id_field:
                    model_id = text
                else:
                    message = text
            pos = end
        elif wire_type in (FIXED64, FIXED32):
            pos += 8 if wire_type == FIXED64 else 4
            if pos > len(raw):
                raise MalformedMessage("a fixed-size field cut short")
        else:
            raise MalformedMessage(f"wire type {wire_type}, which proto3 does not use")
    return ChunkMessage(model_id, data, status, message)


def read_request(raw: bytes) -> ChunkMessage:
    """A serialized ModelRequest's id, data (a view into `raw`) and status; its sender is skipped."""
    return _read(
        raw, id_field=REQUEST_ID, status_field=REQUEST_STATUS, data_field=REQUEST_DATA, message_field=-1
    )


def read_response(raw: bytes) -> ChunkMessage:
    """A serialized ModelResponse's id, data (a view into `raw`), status and message."""
    return _read(
        raw,
        id_field=RESPONSE_ID,
        status_field=RESPONSE_STATUS,
        data_field=RESPONSE_DATA,
        message_field=RESPONSE_MESSAGE,
    )
