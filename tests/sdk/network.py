"""A small federated network on a live controller, built through its real routes and services.

Packages, the seed model, combiners and clients go through FEDn's REST routes; what a running
session would have produced (session, rounds with combiner reports, session models, events and
validations) is written with the sessions app's models and services and the combiners' report
routes. Shared by the SDK tests and the FEDn 0.9.5 compatibility test.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

SESSION_ID = "sess-done"
COMBINERS = ("combiner-a", "combiner-b")
# client name → preferred combiner; the first two are reported online by combiner-a.
CLIENTS = {"client-1": "combiner-a", "client-2": "combiner-a", "client-3": "combiner-b"}
ONLINE_CLIENTS = ("client-1", "client-2")
# Per round: each client's test metrics on that round's global model.
ROUND_METRICS = (
    {"client-1": (0.50, 1.20), "client-2": (0.70, 1.00)},
    {"client-1": (0.80, 0.60), "client-2": (0.90, 0.40)},
)
REQUEST_TIMEOUT = 30


@dataclass
class Network:
    url: str
    host: str
    port: int
    package_ids: list[str]  # upload order; the last is active
    package_bytes: bytes  # the active package file
    seed_model_id: str
    seed_bytes: bytes
    session_model_ids: list[str]  # one per round, in order
    round_ids: list[str]
    status_ids: list[str] = field(default_factory=list)
    validation_ids: list[str] = field(default_factory=list)


def package_archive(name: str) -> bytes:
    """A .tgz compute package: fedn.yaml with train/validate entry points and the script."""
    fedn_yaml = (
        b"entry_points:\n"
        b"  train:\n    command: python train.py\n"
        b"  validate:\n    command: python validate.py\n"
    )
    files = {"fedn.yaml": fedn_yaml, "train.py": f"# {name}\n".encode(), "validate.py": b"# validate\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member, data in files.items():
            info = tarfile.TarInfo(f"package/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def seed_model() -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer, **{"0": np.arange(6, dtype=np.float32).reshape(2, 3), "1": np.zeros(3, dtype=np.float32)}
    )
    return buffer.getvalue()


def _ok(response: requests.Response) -> Any:
    assert response.status_code < 300, (
        f"{response.request.method} {response.url}: {response.status_code} {response.text}"
    )
    return response.json()


def build_network(live_url: str, folder: Path) -> Network:
    from apps.models.models import artifact_key
    from apps.models.services import model_commit
    from apps.sessions.choices import RoundStatus, SessionStatus
    from apps.sessions.models import CombinerReport, Round, Session
    from controlplane import artifacts

    http = requests.Session()

    def post(route: str, **kwargs: Any) -> Any:
        return _ok(http.post(f"{live_url}/{route}", timeout=REQUEST_TIMEOUT, **kwargs))

    package_ids, data = [], b""
    for name in ("first", "digits"):
        data = package_archive(name)
        answer = post(
            "set_package",
            files={"file": (f"{name}.tgz", data)},
            data={"helper": "numpyhelper", "name": name, "description": f"{name} package"},
        )
        assert answer["success"] is True, answer
        active = _ok(http.get(f"{live_url}/api/v1/packages/active", timeout=REQUEST_TIMEOUT))
        package_ids.append(active["id"])

    seed = seed_model()
    assert post("set_initial_model", files={"file": ("seed.npz", seed)})["success"] is True
    seed_model_id = _ok(http.get(f"{live_url}/api/v1/models/", timeout=REQUEST_TIMEOUT))["result"][0]["model"]

    for port, name in enumerate(COMBINERS, start=12080):
        answer = post(
            "add_combiner",
            json={
                "combiner_id": name,
                "address": "127.0.0.1",
                "fqdn": None,
                "port": port,
                "secure_grpc": False,
            },
        )
        assert answer["status"] == "added", answer
    for name, combiner in CLIENTS.items():
        assert (
            post("add_client", json={"client_id": name, "preferred_combiner": combiner})["status"]
            == "assigned"
        )
    post(
        "api/v1/combiners/combiner-a/clients",
        json={
            "clients": [
                {"name": name, "status": "online", "last_seen": f"2024-05-22T12:0{i}:00Z"}
                for i, name in enumerate(ONLINE_CLIENTS)
            ]
        },
    )

    # What a finished two-round session leaves behind.
    session = Session.objects.create(
        session_id=SESSION_ID,
        status=SessionStatus.FINISHED,
        rounds=len(ROUND_METRICS),
        model_id=seed_model_id,
        clients_required=1,
        rounds_completed=len(ROUND_METRICS),
    )
    session_model_ids, round_ids = [], []
    for number, metrics in enumerate(ROUND_METRICS, start=1):
        model_id = uuid.uuid4()
        path = folder / f"round-{number}.npz"
        path.write_bytes(seed)
        artifacts.save(artifact_key(model_id), path)
        model_commit(
            model_id=model_id,
            key=artifact_key(model_id),
            size=len(seed),
            sha256="0" * 64,
            session_id=SESSION_ID,
        )
        found = Round.objects.create(
            number=number,
            round_id=str(number),
            session=session,
            status=RoundStatus.SUCCESS,
            round_config={"session_id": SESSION_ID, "round_id": str(number), "model_id": seed_model_id},
            model_id=str(model_id),
        )
        CombinerReport.objects.create(
            round=found,
            combiner="combiner-a",
            model_id=str(model_id),
            num_examples=200,
            report={"participants": sorted(metrics), "config": {"round_id": str(number)}},
        )
        session_model_ids.append(str(model_id))
        round_ids.append(str(number))

        post(
            "api/v1/statuses/",
            json=[
                {
                    "sender": {"name": client, "role": "WORKER"},
                    "status": f"model update for round {number}",
                    "logLevel": "INFO",
                    "data": "{}",
                    "correlationId": f"corr-{number}-{client}",
                    "timestamp": f"2024-05-22T12:{10 + number}:0{i}Z",
                    "type": "MODEL_UPDATE",
                    "extra": "",
                    "sessionId": SESSION_ID,
                }
                for i, client in enumerate(metrics)
            ],
        )
        post(
            "api/v1/validations/",
            json=[
                {
                    "sender": {"name": client, "role": "WORKER"},
                    "receiver": {"name": "combiner-a", "role": "COMBINER"},
                    "modelId": str(model_id),
                    "data": json.dumps({"test_accuracy": accuracy, "test_loss": loss}),
                    "correlationId": f"val-{number}-{client}",
                    "timestamp": f"2024-05-22T12:{20 + number}:0{i}Z",
                    "meta": "",
                    "sessionId": SESSION_ID,
                }
                for i, (client, (accuracy, loss)) in enumerate(metrics.items())
            ],
        )

    host, port = live_url.removeprefix("http://").split(":")
    network = Network(
        url=live_url,
        host=host,
        port=int(port),
        package_ids=package_ids,
        package_bytes=data,
        seed_model_id=seed_model_id,
        seed_bytes=seed,
        session_model_ids=session_model_ids,
        round_ids=round_ids,
    )
    # Newest first, as the list routes answer.
    statuses = _ok(http.get(f"{live_url}/api/v1/statuses/", timeout=REQUEST_TIMEOUT))["result"]
    network.status_ids = [doc["id"] for doc in statuses]
    validations = _ok(http.get(f"{live_url}/api/v1/validations/", timeout=REQUEST_TIMEOUT))["result"]
    network.validation_ids = [doc["id"] for doc in validations]
    return network
