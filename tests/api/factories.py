"""Factories for the API tests: archives, models and tokens as bytes, and a network built
through the routes a real network calls.

Entities are made the way the network makes them: packages and seeds are uploaded, combiners
announce themselves on /add_combiner, clients ask /add_client and go online through their
combiner's report, sessions are created on /api/v1/sessions/, events and validations arrive on
the combiner report routes. Only rounds and non-seed models come from services, because no route
makes them (the orchestration does).
"""

import hashlib
import io
import tarfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

import jwt
import numpy as np

JSON = "application/json"
FEDN_YAML = (
    b"entry_points:\n  train:\n    command: python train.py\n  validate:\n    command: python validate.py\n"
)


# ---------------------------------------------------------------- artifacts as bytes


def package_bytes(
    files: dict[str, bytes] | None = None, *, kind: str = "tgz", fedn_yaml: bool = True
) -> bytes:
    """A compute package archive in memory: fedn.yaml plus `files`."""
    members = dict(files or {"train.py": b"print('train')\n", "validate.py": b"print('validate')\n"})
    if fedn_yaml:
        members = {"fedn.yaml": FEDN_YAML, **members}
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return buffer.getvalue()
    mode = {"tgz": "w:gz", "tar.gz": "w:gz", "tar.bz2": "w:bz2"}[kind]
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_with(member: tarfile.TarInfo, data: bytes = b"", *, with_yaml: bool = True) -> bytes:
    """A .tar.gz holding fedn.yaml and one crafted member (for the unsafe-archive cases)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if with_yaml:
            info = tarfile.TarInfo("fedn.yaml")
            info.size = len(FEDN_YAML)
            archive.addfile(info, io.BytesIO(FEDN_YAML))
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def model_bytes(layers: list[np.ndarray] | None = None, *, compressed: bool = False) -> bytes:
    """A numpyhelper .npz: arrays named "0".."n-1"."""
    if layers is None:
        layers = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float64)]
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, **{str(index): layer for index, layer in enumerate(layers)})
    return buffer.getvalue()


def upload(name: str, data: bytes) -> io.BytesIO:
    """A file object for a multipart upload, named as the test client sends it."""
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def streamed_bytes(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def make_token(role: str, secret: str = "test-secret", expires_in: int = 300, **claims: Any) -> str:
    """A token as `fedplane_token` mints it (`sub` defaults to the role); `claims` override or add."""
    payload = {"role": role, "sub": role, "jti": uuid.uuid4().hex, "exp": int(time.time()) + expires_in}
    return jwt.encode({**payload, **claims}, secret, "HS256")


@dataclass
class Network:
    """Builds entities through the routes a real network calls; asserts each call succeeded."""

    api: Any
    uploaded_packages: dict[str, bytes] = field(default_factory=dict)
    uploaded_models: dict[str, bytes] = field(default_factory=dict)
    made: dict[str, dict] = field(default_factory=dict)

    def package(self, data: bytes | None = None, *, file_name: str = "package.tgz", **form: str) -> dict:
        data = package_bytes() if data is None else data
        form = {"helper": "numpyhelper", **form}
        response = self.api.post(
            "/set_package", {"file": upload(file_name, data), **form}, format="multipart"
        )
        assert response.status_code == 200, response.content
        assert response.json() == {"success": True, "message": "Compute package set."}
        active = self.api.get("/api/v1/packages/active").json()
        self.uploaded_packages[active["id"]] = data
        return active

    def seed(self, data: bytes | None = None) -> dict:
        data = model_bytes() if data is None else data
        response = self.api.post("/set_initial_model", {"file": upload("seed.npz", data)}, format="multipart")
        assert response.status_code == 200, response.content
        assert response.json()["success"] is True
        latest = self.api.get("/get_latest_model").json()["model_id"]
        self.uploaded_models[latest] = data
        return self.api.get(f"/api/v1/models/{latest}").json()

    def combiner(
        self, name: str = "combiner-1", *, address: str = "combiner-1.local", port: int = 12080
    ) -> dict:
        body = {"combiner_id": name, "address": address, "fqdn": None, "port": port, "secure_grpc": False}
        response = self.api.post("/add_combiner", body, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "added"
        return self.api.get(f"/api/v1/combiners/{name}").json()

    def client(self, name: str, *, combiner: str | None = None, status: str = "online") -> dict:
        """A client assigned on /add_client, then reported online (or offline) by its combiner."""
        response = self.api.post(
            "/add_client", {"client_id": name, "preferred_combiner": combiner or False}, format="json"
        )
        assert response.status_code == 200, response.content
        assigned = self.client_combiner(name)
        report = {"clients": [{"name": name, "status": status, "last_seen": "2024-05-22T12:49:40Z"}]}
        response = self.api.post(f"/api/v1/combiners/{assigned}/clients", report, format="json")
        assert response.status_code == 200, response.content
        return self.api.get(f"/api/v1/clients/{name}").json()

    def client_combiner(self, name: str) -> str:
        return self.api.get(f"/api/v1/clients/{name}").json()["combiner"]

    def session(self, session_id: str | None = None, **config: Any) -> dict:
        session_config = {
            "aggregator": "fedavg",
            "round_timeout": 30,
            "buffer_size": -1,
            "delete_models_storage": True,
            "clients_required": 1,
            "validate": True,
            "helper_type": "numpyhelper",
            "rounds": 2,
            **config,
        }
        body: dict[str, Any] = {"session_config": session_config}
        if session_id:
            body["session_id"] = session_id
        response = self.api.post("/api/v1/sessions/", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    def round(self, session_id: str) -> dict:
        from apps.sessions.models import Session
        from apps.sessions.records import round_create

        session = Session.objects.get(session_id=session_id)
        created = round_create(session=session, round_config={"session_id": session_id, "task": "training"})
        return self.api.get(f"/api/v1/rounds/{created.round_id}").json()

    def report(self, round_id: str, combiner: str, **fields: Any) -> Any:
        body = {"combiner": combiner, "status": "Success", "num_examples": 10, **fields}
        return self.api.post(f"/api/v1/rounds/{round_id}/reports", body, format="json")

    def statuses(self, *docs: dict) -> None:
        response = self.api.post("/api/v1/statuses/", list(docs), format="json")
        assert response.status_code == 201, response.content
        assert response.json() == {"created": len(docs)}

    def validations(self, *docs: dict) -> None:
        response = self.api.post("/api/v1/validations/", list(docs), format="json")
        assert response.status_code == 201, response.content
        assert response.json() == {"created": len(docs)}

    def child_model(self, parent_uuid: str, session_id: str, data: bytes | None = None) -> dict:
        """A global model committed inside a session, as the orchestration commits a round's model."""
        from apps.models.models import Model, artifact_key
        from apps.models.services import model_commit
        from controlplane import artifacts

        data = model_bytes() if data is None else data
        model_id = uuid.uuid4()
        key = artifacts.save_fileobj(artifact_key(model_id), io.BytesIO(data))
        model_commit(
            model_id=model_id,
            key=key,
            size=len(data),
            sha256=sha256(data),
            session_id=session_id,
            parent=Model.objects.find(parent_uuid),
        )
        self.uploaded_models[str(model_id)] = data
        return self.api.get(f"/api/v1/models/{model_id}").json()


def status_doc(**overrides: Any) -> dict:
    """FEDn's camelCase MessageToDict(Status) as a combiner forwards it."""
    return {
        "sender": {"name": "client-a", "role": "WORKER"},
        "status": "Model update received",
        "logLevel": "INFO",
        "data": "{}",
        "correlationId": "corr-1",
        "timestamp": "2024-05-22T12:49:40.123456Z",
        "type": "MODEL_UPDATE",
        "extra": "",
        "sessionId": "session-a",
        **overrides,
    }


def validation_doc(**overrides: Any) -> dict:
    """FEDn's camelCase MessageToDict(ModelValidation)."""
    return {
        "sender": {"name": "client-a", "role": "WORKER"},
        "receiver": {"name": "combiner-1", "role": "COMBINER"},
        "modelId": "model-a",
        "data": '{"accuracy": 0.5, "loss": 1.25}',
        "correlationId": "corr-1",
        "timestamp": "2024-05-22T12:49:40.123456Z",
        "meta": "",
        "sessionId": "session-a",
        **overrides,
    }
