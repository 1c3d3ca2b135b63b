"""Fixtures for combiner tests: a real in-process combiner on port 0, test clients built on the
generated stubs, and FakeController, an in-process HTTP server standing in for the controller."""

from __future__ import annotations

import contextlib
import http.server
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from combiner_node.node import CombinerNode, NodeSettings
from combiner_node.store import DirectoryStore
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

DEADLINE = 10.0


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class FakeController:
    """Records every POST and GET; answers from `responses` (path -> (status, body)), else 200 {}."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, Any, dict[str, str]]] = []
        self.responses: dict[str, list[tuple[int, Any]]] = {}
        self.lock = threading.Lock()
        controller = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                with controller.lock:
                    controller.requests.append((self.path, body, dict(self.headers)))
                    scripted = controller.responses.get(self.path)
                    status, answer = scripted.pop(0) if scripted else (200, {})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                with controller.lock:
                    controller.requests.append((self.path, None, dict(self.headers)))
                    scripted = controller.responses.get(self.path)
                    status, answer = (
                        (scripted[0] if len(scripted) == 1 else scripted.pop(0)) if scripted else (200, {})
                    )
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def script(self, path: str, *answers: tuple[int, Any]) -> None:
        with self.lock:
            self.responses.setdefault(path, []).extend(answers)

    def bodies(self, path_prefix: str) -> list[Any]:
        with self.lock:
            return [body for path, body, _ in self.requests if path.startswith(path_prefix)]

    def items(self, path_prefix: str) -> list[Any]:
        """Bodies of batched routes flattened into single items."""
        items: list[Any] = []
        for body in self.bodies(path_prefix):
            items.extend(body if isinstance(body, list) else [body])
        return items

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def controller() -> Iterator[FakeController]:
    fake = FakeController()
    yield fake
    fake.close()


def save_model(path: Path, layers: list[np.ndarray]) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **{str(i): layer for i, layer in enumerate(layers)})


def load_model(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[str(i)] for i in range(len(data.files))]


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "media")


@pytest.fixture
def make_node(
    tmp_path: Path, store: DirectoryStore, controller: FakeController
) -> Iterator[Callable[..., CombinerNode]]:
    nodes: list[CombinerNode] = []

    def make(**overrides: Any) -> CombinerNode:
        settings = NodeSettings(
            name="combiner-1",
            store=store,
            port=0,
            controller_url=controller.url,
            online_window=1.0,
            workdir=tmp_path / f"work-{len(nodes)}",
        )
        for key, value in overrides.items():
            setattr(settings, key, value)
        node = CombinerNode(settings)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop(grace=1.0)


@pytest.fixture
def node(make_node: Callable[..., CombinerNode]) -> CombinerNode:
    return make_node()


class TestClient:
    """A client built on the generated stubs: heartbeats, task stream, upload, update."""

    __test__ = False

    def __init__(self, port: int, name: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.name = name
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = (("client", name), *metadata)
        self.connector = fedn_pb2_grpc.ConnectorStub(self.channel)
        self.combiner = fedn_pb2_grpc.CombinerStub(self.channel)
        self.models = fedn_pb2_grpc.ModelServiceStub(self.channel)
        self.tasks: queue.Queue[fedn_pb2.TaskRequest] = queue.Queue()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> fedn_pb2.Client:
        return fedn_pb2.Client(name=self.name, role=fedn_pb2.WORKER)

    def heartbeat(self) -> fedn_pb2.Response:
        return self.connector.SendHeartbeat(
            fedn_pb2.Heartbeat(sender=self.identity), metadata=self.metadata, timeout=DEADLINE
        )

    def open_stream(self) -> None:
        self._stream = self.combiner.TaskStream(
            fedn_pb2.ClientAvailableMessage(sender=self.identity), metadata=self.metadata
        )

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):
                for task in self._stream:
                    self.tasks.put(task)

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def next_task(self, timeout: float = DEADLINE) -> fedn_pb2.TaskRequest:
        return self.tasks.get(timeout=timeout)

    def download(self, model_id: str) -> tuple[bytes, list[fedn_pb2.ModelResponse]]:
        responses = list(
            self.models.Download(
                fedn_pb2.ModelRequest(id=model_id, sender=self.identity),
                metadata=self.metadata,
                timeout=DEADLINE,
            )
        )
        return b"".join(response.data for response in responses), responses

    def upload_bytes(self, model_id: str, payload: bytes, chunk: int = 1024 * 1024) -> fedn_pb2.ModelResponse:
        def requests() -> Iterator[fedn_pb2.ModelRequest]:
            for start in range(0, len(payload), chunk):
                yield fedn_pb2.ModelRequest(
                    id=model_id, data=payload[start : start + chunk], status=fedn_pb2.IN_PROGRESS
                )
            yield fedn_pb2.ModelRequest(id=model_id, status=fedn_pb2.OK)

        return self.models.Upload(requests(), metadata=self.metadata, timeout=DEADLINE)

    def send_update(
        self,
        task: fedn_pb2.TaskRequest,
        layers: list[np.ndarray],
        num_examples: Any,
        tmp_dir: Path,
        *,
        correlation_id: str | None = None,
    ) -> fedn_pb2.Response:
        path = tmp_dir / f"{uuid.uuid4()}.npz"
        save_model(path, layers)
        return self.send_update_bytes(task, path.read_bytes(), num_examples, correlation_id=correlation_id)

    def send_update_bytes(
        self,
        task: fedn_pb2.TaskRequest,
        payload: bytes,
        num_examples: Any,
        *,
        correlation_id: str | None = None,
    ) -> fedn_pb2.Response:
        """Upload ``payload`` as the update file, whatever it holds, and send the update for ``task``."""
        update_id = str(uuid.uuid4())
        self.upload_bytes(update_id, payload)
        meta = {"training_metadata": {"num_examples": num_examples}, "config": task.data}
        update = fedn_pb2.ModelUpdate(
            sender=self.identity,
            receiver=task.sender,
            model_id=task.model_id,
            model_update_id=update_id,
            correlation_id=correlation_id or task.correlation_id,
            timestamp="now",
            meta=json.dumps(meta),
        )
        return self.combiner.SendModelUpdate(update, metadata=self.metadata, timeout=DEADLINE)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self.channel.close()


@pytest.fixture
def make_client(node: CombinerNode) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(name: str, *, online: bool = True, port: int | None = None) -> TestClient:
        client = TestClient(port or node.port, name)
        if online:
            client.heartbeat()
            client.open_stream()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def control_stub(port: int) -> tuple[grpc.Channel, fedn_pb2_grpc.ControlStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, fedn_pb2_grpc.ControlStub(channel)


def start_request(**config: Any) -> fedn_pb2.ControlRequest:
    return fedn_pb2.ControlRequest(
        command=fedn_pb2.START,
        parameter=[fedn_pb2.Parameter(key=key, value=str(value)) for key, value in config.items()],
    )
