"""`python -m combiner_node` as a process: serve, register, stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from combiner_node.tests.conftest import FakeController, wait_for
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def run_combiner(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "combiner_node", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_registers_serves_and_stops_on_sigterm(controller: FakeController, tmp_path: Path) -> None:
    controller.script("/add_combiner", (203, {"status": "retry"}), (200, {"status": "added"}))
    process = run_combiner(
        "--port",
        "0",
        "--controller",
        controller.url,
        "--store",
        str(tmp_path / "media"),
        env={"FEDPLANE_COMBINER_NAME": "cli-combiner", "FEDN_AUTH_TOKEN": "tok"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:" in line, (
            process.stderr.read() if process.poll() is not None else line
        )
        port = int(line.rsplit(":", 1)[1])
        registrations = controller.bodies("/add_combiner")
        assert len(registrations) == 2
        assert registrations[-1] == {
            "combiner_id": "cli-combiner",
            "address": "127.0.0.1",
            "fqdn": None,
            "port": port,
            "secure_grpc": False,
            "max_clients": 30,
        }
        assert controller.requests[0][2]["Authorization"] == "Bearer tok"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            connector = fedn_pb2_grpc.ConnectorStub(channel)
            connector.SendHeartbeat(fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="c1")), timeout=5)
            wait_for(lambda: controller.bodies("/api/v1/combiners/cli-combiner/clients"))
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_refused_registration_exits_with_a_message(controller: FakeController, tmp_path: Path) -> None:
    controller.script("/add_combiner", (400, {"message": "Combiner name is taken"}))
    process = run_combiner(
        "--name", "c2", "--port", "0", "--controller", controller.url, "--store", str(tmp_path / "media")
    )
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "Combiner name is taken" in stderr


def test_bad_name_is_a_usage_error(tmp_path: Path) -> None:
    process = run_combiner("--name", "bad name!", "--no-register", "--store", str(tmp_path))
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2 and "invalid combiner name" in stderr
