"""Model transfer over ModelService: 1 MiB chunks, as FEDn 0.9.5 moves them.

Both directions stream between the wire and a file, one chunk in memory at a time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import grpc

from fedplane.modelwire import MalformedMessage, chunk_message, read_response, request_header
from fedplane.proto import fedn_pb2

CHUNK_SIZE = 1024 * 1024
UPLOAD_METHOD = "/fedn.ModelService/Upload"
DOWNLOAD_METHOD = "/fedn.ModelService/Download"
# How long a combiner may answer UNKNOWN ("not there yet") before the download gives up.
UNKNOWN_WAIT_SECONDS = 20.0


class TransferFailed(RuntimeError):
    """A model could not be downloaded or uploaded."""


def _progress(description: str, total: int | None) -> AbstractContextManager[Any]:
    # Progress bars only for a person at a terminal; logs stay clean otherwise.
    if not sys.stdout.isatty():
        return nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description, leave=False)


def download_model(
    channel: grpc.Channel,
    model_id: str,
    dest: Path,
    *,
    sender_name: str,
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> int:
    """Write model `model_id` from the combiner's ModelService.Download to `dest`; returns its size."""
    request = fedn_pb2.ModelRequest(
        id=model_id, sender=fedn_pb2.Client(name=sender_name, role=fedn_pb2.WORKER)
    )
    # The answers stay in wire form: each chunk is written from a view of the received message,
    # where parsing it into a protobuf message would copy it twice more.
    download = channel.unary_stream(
        DOWNLOAD_METHOD,
        request_serializer=fedn_pb2.ModelRequest.SerializeToString,
        response_deserializer=None,
    )
    started = time.monotonic()
    written = 0
    try:
        with open(dest, "wb") as out, _progress(f"download {model_id[:8]}", None) as bar:
            for raw in download(request, metadata=metadata, timeout=timeout):
                _, data, status, message = read_response(raw)
                if status == fedn_pb2.ModelStatus.IN_PROGRESS:
                    out.write(data)
                    written += len(data)
                    if bar is not None:
                        bar.update(len(data))
                elif status == fedn_pb2.ModelStatus.OK:
                    return written
                elif status == fedn_pb2.ModelStatus.FAILED:
                    raise TransferFailed(
                        f"combiner failed to send model {model_id}: {message or 'no reason'}"
                    )
                elif (
                    status == fedn_pb2.ModelStatus.UNKNOWN
                    and time.monotonic() - started > UNKNOWN_WAIT_SECONDS
                ):
                    raise TransferFailed(f"model {model_id} still unknown to the combiner after 20 s")
    except grpc.RpcError as exc:
        raise TransferFailed(
            f"model download failed: {exc.code().name} {exc.details() or ''}".strip()
        ) from exc
    except MalformedMessage as exc:
        raise TransferFailed(f"model download failed: the combiner sent {exc}") from exc
    except ValueError as exc:  # the channel was closed under us
        raise TransferFailed(f"model download aborted: {exc}") from exc
    raise TransferFailed(f"model {model_id} download ended before the combiner said OK ({written} bytes)")


def _upload_messages(path: Path, model_id: str, bar: Any) -> Iterator[bytes]:
    """The upload's ModelRequest messages in wire form (fedplane/modelwire.py): one copy a chunk."""
    header = request_header(model_id, fedn_pb2.ModelStatus.IN_PROGRESS)
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            if bar is not None:
                bar.update(len(chunk))
            yield chunk_message(header, chunk)
    yield fedn_pb2.ModelRequest(id=model_id, status=fedn_pb2.ModelStatus.OK).SerializeToString()


def upload_model(
    channel: grpc.Channel,
    path: Path,
    model_id: str,
    *,
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> int:
    """Stream `path` to the combiner's ModelService.Upload under `model_id`; returns the bytes sent."""
    size = path.stat().st_size
    upload = channel.stream_unary(
        UPLOAD_METHOD, request_serializer=None, response_deserializer=fedn_pb2.ModelResponse.FromString
    )
    try:
        with _progress(f"upload {model_id[:8]}", size) as bar:
            response = upload(_upload_messages(path, model_id, bar), metadata=metadata, timeout=timeout)
    except grpc.RpcError as exc:
        raise TransferFailed(f"model upload failed: {exc.code().name} {exc.details() or ''}".strip()) from exc
    except ValueError as exc:
        raise TransferFailed(f"model upload aborted: {exc}") from exc
    if response.status == fedn_pb2.ModelStatus.FAILED:
        raise TransferFailed(f"combiner refused model {model_id}: {response.message or 'no reason'}")
    return size
