"""The edge client end to end against a FakeController (REST) and a FakeCombiner (gRPC)."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedplane.client import ClientConfig, EdgeClient
from fedplane.client.tests.fakes import (
    CombinerRecord,
    FakeCombiner,
    FakeController,
    make_package,
    package_from_dir,
    self_signed_certificate,
    wait_until,
)
from fedplane.proto import fedn_pb2
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[3]

TRAIN_PY = """
import json, os, sys, time
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
if data.startswith(b"FAIL"):
    sys.stderr.write("deliberate training failure: bad weights\\n")
    sys.exit(3)
if data.startswith(b"SLEEP"):
    open(os.environ["SLEEP_MARKER"], "w").write(str(os.getpid()))
    time.sleep(60)
open(dst, "wb").write(data + b"+trained")
with open(dst + "-metadata", "w") as fh:
    json.dump({"num_examples": 7, "client": os.environ.get("FEDPLANE_CLIENT_NAME")}, fh)
"""

VALIDATE_PY = """
import json, sys
data = open(sys.argv[1], "rb").read()
json.dump({"accuracy": 0.5, "size": len(data)}, open(sys.argv[2], "w"))
"""

FEDN_YAML = """
entry_points:
  startup:
    command: python -c "open('startup.done', 'w').write('ok')"
  train:
    command: python train.py
  validate:
    command: python validate.py
"""

TINY_PACKAGE = make_package({"fedn.yaml": FEDN_YAML, "train.py": TRAIN_PY, "validate.py": VALIDATE_PY})


def _config(controller_url: str, workdir: Path, **overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "controller_url": controller_url,
        "name": "client-1",
        "token": "tok",
        "workdir": workdir,
        "heartbeat_interval": 0.2,
        "reconnect_after_missed_heartbeat": 3,
        "task_timeout": 30.0,
        "transfer_timeout": 30.0,
        "request_timeout": 5.0,
        "backoff_initial": 0.1,
        "backoff_max": 0.5,
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


class RunningClient:
    def __init__(self, config: ClientConfig):
        self.client = EdgeClient(config)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.exit_code = self.client.run()

    def stop(self) -> None:
        self.client.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "client did not stop"


@pytest.fixture
def combiner() -> Iterator[FakeCombiner]:
    fake = FakeCombiner().start()
    yield fake
    fake.stop()


@pytest.fixture
def controller(combiner: FakeCombiner) -> Iterator[FakeController]:
    fake = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port).start()
    yield fake
    fake.stop()


@pytest.fixture
def running(controller: FakeController, tmp_path: Path) -> Iterator[RunningClient]:
    client = RunningClient(_config(controller.url, tmp_path / "work"))
    yield client
    client.stop()


def _statuses(record: CombinerRecord, text: str) -> list[fedn_pb2.Status]:
    return [s for s in record.statuses if s.status == text]


def test_a_task_goes_on_while_its_statuses_are_unanswered(
    running: RunningClient, combiner: FakeCombiner, controller: FakeController
) -> None:
    """Statuses are best effort: a slow combiner answering them does not hold up the task."""
    wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
    record = combiner.record
    combiner.status_gate = threading.Event()
    try:
        model_id = combiner.put_model(b"weights")
        combiner.send_task("client-1", model_id, fedn_pb2.MODEL_UPDATE)
        wait_until(lambda: record.updates, 8, "the model update, with every status held")
        assert record.statuses == []
        combiner.send_task("client-1", model_id, fedn_pb2.MODEL_VALIDATION)
        wait_until(lambda: record.validations, 8, "the validation, with every status held")
    finally:
        combiner.status_gate.set()
    # Once answered, all of them are there.
    wait_until(lambda: _statuses(record, "Model validation completed."), 15, "the statuses")
    assert len(_statuses(record, "Received model update request.")) == 2
    assert len(_statuses(record, "Model update completed.")) == 1


def test_training_and_validation_round_trip(
    running: RunningClient, combiner: FakeCombiner, controller: FakeController, tmp_path: Path
) -> None:
    wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
    record = combiner.record

    # REST: FEDn's /add_client payload and Authorization header.
    assert controller.assign_requests[0]["body"] == {"client_id": "client-1", "preferred_combiner": False}
    assert controller.assign_requests[0]["authorization"] == "Bearer tok"
    package_root = next((tmp_path / "work").glob("pkg-*/client"))
    assert (package_root / "startup.done").read_text() == "ok"

    model_id = combiner.put_model(b"weights")
    correlation = combiner.send_task("client-1", model_id, fedn_pb2.MODEL_UPDATE)
    wait_until(lambda: _statuses(record, "Model update completed."), 15, "model update")

    update = record.updates[0]
    assert update.sender == fedn_pb2.Client(name="client-1", role=fedn_pb2.WORKER)
    assert update.receiver == fedn_pb2.Client(name=FakeCombiner.NAME, role=fedn_pb2.COMBINER)
    assert update.model_id == model_id and update.correlation_id == correlation
    assert record.models[update.model_update_id] == b"weights+trained"
    meta = json.loads(update.meta)
    assert set(meta) == {
        "fetch_model",
        "exec_training",
        "upload_model",
        "training_metadata",
        "processing_time",
        "config",
    }
    assert meta["training_metadata"] == {"num_examples": 7, "client": "client-1"}
    assert json.loads(meta["config"]) == {"round_id": "1", "session_id": "s1"}

    received = _statuses(record, "Received model update request.")[0]
    assert received.log_level == fedn_pb2.Status.AUDIT and received.type == fedn_pb2.MODEL_UPDATE_REQUEST
    assert json.loads(received.data)["modelId"] == model_id
    done = _statuses(record, "Model update completed.")[0]
    assert done.log_level == fedn_pb2.Status.AUDIT and done.type == fedn_pb2.MODEL_UPDATE
    assert done.session_id == "s1" and done.sender.role == fedn_pb2.WORKER
    assert done.timestamp.seconds > 0

    combiner.send_task("client-1", model_id, fedn_pb2.MODEL_VALIDATION)
    wait_until(lambda: record.validations, 15, "validation")
    validation = record.validations[0]
    assert json.loads(validation.data) == {"accuracy": 0.5, "size": len(b"weights")}
    assert validation.session_id == "s1" and validation.model_id == model_id
    assert validation.timestamp.seconds > 0
    # Its meta times the task, as a model update's does.
    timing = json.loads(validation.meta)
    assert set(timing) == {"fetch_model", "exec_validation", "processing_time"}
    assert timing["processing_time"] >= timing["fetch_model"] + timing["exec_validation"] > 0
    wait_until(lambda: _statuses(record, "Model validation completed."), 5, "validation status")

    # gRPC metadata as 0.9.5 sends it, and heartbeats flowing.
    assert record.stream_metadata[0]["grpc-server"] == "127.0.0.1"
    assert record.stream_metadata[0]["client"] == "client-1"
    assert record.heartbeats > 0


def test_failed_training_reports_error_with_stderr_and_carries_on(
    running: RunningClient, combiner: FakeCombiner
) -> None:
    wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
    record = combiner.record
    bad = combiner.put_model(b"FAIL")
    combiner.send_task("client-1", bad, fedn_pb2.MODEL_UPDATE)
    wait_until(lambda: any(s.log_level == fedn_pb2.Status.ERROR for s in record.statuses), 15, "error status")
    error = next(s for s in record.statuses if s.log_level == fedn_pb2.Status.ERROR)
    assert "exited with code 3" in error.status
    extra = json.loads(error.extra)
    assert extra["returncode"] == 3
    assert "deliberate training failure: bad weights" in extra["stderr_tail"]
    assert record.updates == []

    good = combiner.put_model(b"ok")
    combiner.send_task("client-1", good, fedn_pb2.MODEL_UPDATE)
    wait_until(lambda: record.updates, 15, "update after a failure")
    assert running.client.tasks_failed == 1


def test_validator_only_client_skips_training(
    combiner: FakeCombiner, controller: FakeController, tmp_path: Path
) -> None:
    client = RunningClient(_config(controller.url, tmp_path / "work", trainer=False))
    try:
        wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
        model_id = combiner.put_model(b"w")
        combiner.send_task("client-1", model_id, fedn_pb2.MODEL_UPDATE)
        combiner.send_task("client-1", model_id, fedn_pb2.MODEL_VALIDATION)
        wait_until(lambda: combiner.record.validations, 15, "validation")
        # Both requests are acknowledged, as 0.9.5 does, but only the validation runs.
        assert len(_statuses(combiner.record, "Received model update request.")) == 2
        assert combiner.record.updates == []
        wait_until(lambda: client.client.tasks_done == 1, 5, "task counted")
        assert client.client.tasks_failed == 0
    finally:
        client.stop()


def test_client_reconnects_when_the_combiner_restarts(
    running: RunningClient, combiner: FakeCombiner, controller: FakeController
) -> None:
    wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
    port, record = combiner.port, combiner.record
    combiner.stop()
    # More than 3 missed heartbeats of 0.2 s: the client asks the controller again.
    wait_until(lambda: len(controller.assign_requests) >= 2, 15, "re-assignment while the combiner is down")
    assert running.exit_code is None
    restarted = FakeCombiner(port=port, record=record).start()
    try:
        wait_until(lambda: restarted.connected("client-1"), 15, "reconnect after restart")
        model_id = restarted.put_model(b"after-restart")
        restarted.send_task("client-1", model_id, fedn_pb2.MODEL_UPDATE)
        wait_until(lambda: record.updates, 15, "update after restart")
        assert record.models[record.updates[0].model_update_id] == b"after-restart+trained"
        assert running.client.assignments >= 2
        assert len(controller.assign_requests) >= 2
        assert controller.downloads == 1  # the package is not fetched again on re-assignment
        assert running.exit_code is None
    finally:
        restarted.stop()


def test_client_waits_for_a_controller_that_is_not_up_yet(
    combiner: FakeCombiner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, logger="fedplane.client")

    def refused_attempts() -> int:
        return sum("event=assignment_retry" in record.getMessage() for record in caplog.records)

    client = RunningClient(_config(f"http://127.0.0.1:{port}", tmp_path / "work"))
    try:
        # Each refused attempt is a chance to give up: after a few the client is still waiting.
        wait_until(lambda: refused_attempts() >= 3, 10, "three refused assignment attempts")
        assert not combiner.connected("client-1")
        assert client.thread.is_alive()
        controller = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port, port=port).start()
        try:
            wait_until(lambda: combiner.connected("client-1"), 10, "connection once the controller is up")
        finally:
            controller.stop()
    finally:
        client.stop()
    assert client.exit_code == 0


def test_controller_retry_answer_is_retried(combiner: FakeCombiner, tmp_path: Path) -> None:
    controller = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port).start()
    controller.scripted_assign = [(203, {"status": "retry", "message": "no package"})] * 2
    client = RunningClient(_config(controller.url, tmp_path / "work"))
    try:
        wait_until(lambda: combiner.connected("client-1"), 10, "connection after retries")
        assert len(controller.assign_requests) >= 3
    finally:
        client.stop()
        controller.stop()


@pytest.mark.parametrize(
    ("code", "body"), [(400, {"message": "name taken"}), (401, {"message": "Invalid token"})]
)
def test_rejection_by_the_controller_is_fatal(
    combiner: FakeCombiner, tmp_path: Path, code: int, body: dict
) -> None:
    controller = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port).start()
    controller.scripted_assign = [(code, body)]
    try:
        client = EdgeClient(_config(controller.url, tmp_path / "work"))
        started = time.monotonic()
        assert client.run() == 1
        assert time.monotonic() - started < 5
    finally:
        controller.stop()


def test_package_checksum_mismatch_is_fatal_and_nothing_is_unpacked(
    combiner: FakeCombiner, tmp_path: Path
) -> None:
    controller = FakeController(
        package=TINY_PACKAGE, combiner_port=combiner.port, checksum_override="0" * 64
    ).start()
    try:
        assert EdgeClient(_config(controller.url, tmp_path / "work")).run() == 1
        assert not list((tmp_path / "work").glob("pkg-*"))
        assert not combiner.connected("client-1")
    finally:
        controller.stop()


def test_hostile_package_is_refused(combiner: FakeCombiner, tmp_path: Path) -> None:
    evil = make_package({"fedn.yaml": FEDN_YAML, "../../escape.txt": "x"})
    controller = FakeController(package=evil, combiner_port=combiner.port).start()
    try:
        assert EdgeClient(_config(controller.url, tmp_path / "work")).run() == 1
        assert not (tmp_path / "escape.txt").exists()
    finally:
        controller.stop()


def test_stop_during_training_kills_the_entry_point(
    combiner: FakeCombiner, controller: FakeController, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "sleeping.pid"
    monkeypatch.setenv("SLEEP_MARKER", str(marker))
    client = RunningClient(_config(controller.url, tmp_path / "work"))
    wait_until(lambda: combiner.connected("client-1"), 10, "task stream")
    combiner.send_task("client-1", combiner.put_model(b"SLEEP"), fedn_pb2.MODEL_UPDATE)
    wait_until(marker.exists, 15, "training to start")
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 10
    pid = int(marker.read_text())
    wait_until(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
        ),
        5,
        "child killed",
    )
    assert client.exit_code == 0


def test_digits_example_trains_and_validates(combiner: FakeCombiner, tmp_path: Path) -> None:
    digits = REPO / "examples" / "digits"
    controller = FakeController(
        package=package_from_dir(digits / "client"), combiner_port=combiner.port
    ).start()
    client = RunningClient(_config(controller.url, tmp_path / "client2"))
    try:
        wait_until(lambda: combiner.connected("client-1"), 15, "task stream")
        seed = tmp_path / "seed.npz"
        subprocess.run(
            [sys.executable, str(digits / "client" / "model.py"), "build", str(seed)], check=True, timeout=60
        )
        model_id = combiner.put_model(seed.read_bytes())
        combiner.send_task("client-1", model_id, fedn_pb2.MODEL_UPDATE)
        wait_until(lambda: combiner.record.updates, 60, "digits update")
        update = combiner.record.updates[0]
        meta = json.loads(update.meta)["training_metadata"]
        assert meta["num_examples"] == 1438  # one client: the whole 80 % training split
        trained = tmp_path / "trained.npz"
        trained.write_bytes(combiner.record.models[update.model_update_id])
        with np.load(trained, allow_pickle=False) as weights:
            assert weights.files == ["0", "1", "2", "3"]

        combiner.send_task("client-1", update.model_update_id, fedn_pb2.MODEL_VALIDATION)
        wait_until(lambda: combiner.record.validations, 60, "digits validation")
        metrics = json.loads(combiner.record.validations[0].data)
        assert set(metrics) == {"training_accuracy", "training_loss", "test_accuracy", "test_loss"}
        assert metrics["test_accuracy"] > 0.8  # one round of two epochs from the seed
    finally:
        client.stop()
        controller.stop()


def test_cli_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"discover_host: 127.0.0.1\ndiscover_port: {free_port()}\nname: cli-client\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedplane.client",
            "start",
            "--init",
            str(settings),
            "--workdir",
            str(tmp_path / "w"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in process.stderr), daemon=True
    )
    reader.start()
    try:
        # Signal only once the client is up and retrying, so its handlers are installed.
        wait_until(lambda: any("event=assignment_retry" in line for line in lines), 30, "first retry")
        assert process.poll() is None, "client exited although the controller is merely absent"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    reader.join(timeout=5)
    log = "".join(lines)
    assert process.returncode == 0, log
    assert "event=client_stopped name=cli-client" in log


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("how", ["certificate_in_assignment", "secure_flag"])
def test_tls_channel_carries_the_token(tmp_path: Path, how: str) -> None:
    key, cert = self_signed_certificate(tmp_path)
    combiner = FakeCombiner(tls=(key, cert)).start()
    controller = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port).start()
    overrides: dict[str, object] = {}
    if how == "certificate_in_assignment":
        assignment = {
            "status": "assigned",
            "package": "remote",
            "host": "127.0.0.1",
            "port": combiner.port,
            "fqdn": None,
            "certificate": base64.b64encode(cert).decode(),
            "helper_type": "numpyhelper",
        }
        controller.scripted_assign = [(200, assignment)]
    else:
        overrides["secure"] = True  # fetch and pin the server's certificate, as 0.9.5 does
    client = RunningClient(_config(controller.url, tmp_path / "work", **overrides))
    try:
        wait_until(lambda: combiner.connected("client-1"), 15, "task stream over TLS")
        assert combiner.record.stream_metadata[0]["authorization"] == "Bearer tok"
        combiner.send_task("client-1", combiner.put_model(b"w"), fedn_pb2.MODEL_UPDATE)
        wait_until(lambda: combiner.record.updates, 15, "update over TLS")
    finally:
        client.stop()
        controller.stop()
        combiner.stop()
