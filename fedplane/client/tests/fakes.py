"""Fakes of the client's two peers: the controller's three REST routes and a combiner's gRPC.

Both are small and in-process, on 127.0.0.1 only, and record what the client sent them.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc

from fedplane.proto import fedn_pb2, fedn_pb2_grpc

CHUNK = 1024 * 1024


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def self_signed_certificate(directory: Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for localhost/127.0.0.1, made with the openssl command."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key.read_bytes(), cert.read_bytes()


def make_package(files: dict[str, str | bytes], top: str = "client") -> bytes:
    """A .tgz with `files` under the folder `top` (arcname as `fedn package create` makes it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def package_from_dir(directory: Path, top: str = "client") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname=top, filter=lambda info: None if "__pycache__" in info.name else info)
    return buffer.getvalue()


# --------------------------------------------------------------------------- controller


@dataclass
class FakeController:
    """Serves /add_client, /download_package and /get_package_checksum like a 0.9.5 controller."""

    package: bytes
    combiner_port: int = 0
    package_name: str = "package.tgz"
    port: int = 0
    checksum_override: str | None = None
    # Each call pops the first entry when there is one: (status code, JSON body).
    scripted_assign: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    assign_requests: list[dict[str, Any]] = field(default_factory=list)
    downloads: int = 0

    def __post_init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeController:
        controller = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _json(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/add_client":
                    # Combiner reports (rounds, statuses, validations, client states): record them.
                    with controller._lock:
                        controller.posts.append((self.path, body))
                    return self._json(200, {})
                controller.assign_requests.append(
                    {"body": body, "authorization": self.headers.get("Authorization")}
                )
                if controller.scripted_assign:
                    code, answer = controller.scripted_assign.pop(0)
                    return self._json(code, answer)
                return self._json(
                    200,
                    {
                        "status": "assigned",
                        "package": "remote",
                        "host": "127.0.0.1",
                        "port": controller.combiner_port,
                        "fqdn": None,
                        "certificate": None,
                        "helper_type": "numpyhelper",
                        "ip": "127.0.0.1",
                    },
                )

            def do_GET(self) -> None:
                if self.path == "/download_package":
                    controller.downloads += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Disposition", f"attachment; filename={controller.package_name}")
                    self.send_header("Content-Length", str(len(controller.package)))
                    self.end_headers()
                    self.wfile.write(controller.package)
                elif self.path == "/get_package_checksum":
                    checksum = controller.checksum_override or hashlib.sha256(controller.package).hexdigest()
                    self._json(200, {"checksum": checksum})
                else:
                    self._json(404, {"message": "not found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def posted(self, path_prefix: str) -> list[Any]:
        """Bodies POSTed under `path_prefix`, batched lists flattened."""
        with self._lock:
            bodies = [body for path, body in self.posts if path.startswith(path_prefix)]
        return [item for body in bodies for item in (body if isinstance(body, list) else [body])]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --------------------------------------------------------------------------- combiner


@dataclass
class CombinerRecord:
    """What the client sent, shared across restarts of the fake combiner."""

    heartbeats: int = 0
    statuses: list[fedn_pb2.Status] = field(default_factory=list)
    updates: list[fedn_pb2.ModelUpdate] = field(default_factory=list)
    validations: list[fedn_pb2.ModelValidation] = field(default_factory=list)
    stream_metadata: list[dict[str, str]] = field(default_factory=list)
    models: dict[str, bytes] = field(default_factory=dict)


class FakeCombiner(
    fedn_pb2_grpc.ConnectorServicer, fedn_pb2_grpc.CombinerServicer, fedn_pb2_grpc.ModelServiceServicer
):
    """A combiner's client-facing gRPC services, enough to hand out tasks and collect results."""

    NAME = "fake-combiner"

    def __init__(
        self, port: int = 0, record: CombinerRecord | None = None, *, tls: tuple[bytes, bytes] | None = None
    ):
        self.record = record or CombinerRecord()
        # Set to an unset Event to hold every SendStatus unanswered (for up to 10 s) until it is set.
        self.status_gate: threading.Event | None = None
        self._subscribers: dict[str, queue.Queue[fedn_pb2.TaskRequest]] = {}
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        fedn_pb2_grpc.add_ConnectorServicer_to_server(self, self._server)
        fedn_pb2_grpc.add_CombinerServicer_to_server(self, self._server)
        fedn_pb2_grpc.add_ModelServiceServicer_to_server(self, self._server)
        address = f"127.0.0.1:{port}"
        if tls is not None:  # (private key PEM, certificate PEM)
            self.port = self._server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
        else:
            self.port = self._server.add_insecure_port(address)

    def start(self) -> FakeCombiner:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0).wait(timeout=5)

    # -- test controls --------------------------------------------------------------------

    def connected(self, name: str) -> bool:
        with self._lock:
            return name in self._subscribers

    def put_model(self, data: bytes) -> str:
        model_id = str(uuid.uuid4())
        self.record.models[model_id] = data
        return model_id

    def send_task(self, client: str, model_id: str, task_type: int, session_id: str = "s1") -> str:
        correlation_id = str(uuid.uuid4())
        request = fedn_pb2.TaskRequest(
            sender=fedn_pb2.Client(name=self.NAME, role=fedn_pb2.COMBINER),
            receiver=fedn_pb2.Client(name=client, role=fedn_pb2.WORKER),
            model_id=model_id,
            data=json.dumps({"round_id": "1", "session_id": session_id})
            if task_type == fedn_pb2.MODEL_UPDATE
            else "",
            correlation_id=correlation_id,
            timestamp="2026-01-01 00:00:00",
            session_id=session_id,
            type=task_type,  # type: ignore[arg-type]
        )
        with self._lock:
            self._subscribers[client].put(request)
        return correlation_id

    # -- Connector ------------------------------------------------------------------------

    def SendHeartbeat(self, request: fedn_pb2.Heartbeat, context: grpc.ServicerContext) -> fedn_pb2.Response:
        self.record.heartbeats += 1
        return fedn_pb2.Response(response="Heartbeat received")

    def SendStatus(self, request: fedn_pb2.Status, context: grpc.ServicerContext) -> fedn_pb2.Response:
        gate = self.status_gate
        if gate is not None:
            gate.wait(10)
        self.record.statuses.append(request)
        return fedn_pb2.Response(response="Status received.")

    # -- Combiner -------------------------------------------------------------------------

    def TaskStream(
        self, request: fedn_pb2.ClientAvailableMessage, context: grpc.ServicerContext
    ) -> Iterator[fedn_pb2.TaskRequest]:
        self.record.stream_metadata.append(dict(context.invocation_metadata()))
        inbox: queue.Queue[fedn_pb2.TaskRequest] = queue.Queue()
        with self._lock:
            self._subscribers[request.sender.name] = inbox
        try:
            while context.is_active():
                try:
                    yield inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
        finally:
            with self._lock:
                if self._subscribers.get(request.sender.name) is inbox:
                    del self._subscribers[request.sender.name]

    def SendModelUpdate(
        self, request: fedn_pb2.ModelUpdate, context: grpc.ServicerContext
    ) -> fedn_pb2.Response:
        self.record.updates.append(request)
        return fedn_pb2.Response(response="RECEIVED ModelUpdate")

    def SendModelValidation(
        self, request: fedn_pb2.ModelValidation, context: grpc.ServicerContext
    ) -> fedn_pb2.Response:
        self.record.validations.append(request)
        return fedn_pb2.Response(response="RECEIVED ModelValidation")

    # -- ModelService ---------------------------------------------------------------------

    def Download(
        self, request: fedn_pb2.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[fedn_pb2.ModelResponse]:
        data = self.record.models.get(request.id)
        if data is None:
            yield fedn_pb2.ModelResponse(
                id=request.id, status=fedn_pb2.ModelStatus.FAILED, message="unknown model"
            )
            return
        for start in range(0, len(data), CHUNK):
            yield fedn_pb2.ModelResponse(
                id=request.id, data=data[start : start + CHUNK], status=fedn_pb2.ModelStatus.IN_PROGRESS
            )
        yield fedn_pb2.ModelResponse(id=request.id, status=fedn_pb2.ModelStatus.OK)

    def Upload(
        self, request_iterator: Iterator[fedn_pb2.ModelRequest], context: grpc.ServicerContext
    ) -> fedn_pb2.ModelResponse:
        buffer = io.BytesIO()
        model_id = ""
        for part in request_iterator:
            model_id = part.id
            if part.status == fedn_pb2.ModelStatus.IN_PROGRESS:
                buffer.write(part.data)
            elif part.status == fedn_pb2.ModelStatus.OK:
                self.record.models[model_id] = buffer.getvalue()
                return fedn_pb2.ModelResponse(
                    id=model_id, status=fedn_pb2.ModelStatus.OK, message="Got model successfully."
                )
        return fedn_pb2.ModelResponse(id=model_id, status=fedn_pb2.ModelStatus.FAILED, message="no OK")
