"""mTLS end to end: a combiner process that requires client certificates (--client-ca), a worker
whose Control calls present the controller's certificate (FEDPLANE_CONTROL_CLIENT_CERT), and a
fedplane client process with its own certificate (CN = its name) train one round together."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from combiner_node.tests.certs import LOCAL_NAMES, CertificateAuthority
from tests.e2e.conftest import CLIENT_ENV
from tests.e2e.harness import Federation, prepare_backend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

COMBINER = "combiner-m"
CLIENT = "alice"
SESSION = "e2e-mtls"


@pytest.fixture(scope="module")
def trained(e2e_dir: Path) -> Iterator[tuple[Federation, dict[str, Any]]]:
    started = time.monotonic()
    pki = e2e_dir / "pki"
    authority = CertificateAuthority("fedplane e2e CA")
    ca = authority.write(pki, "ca")
    server_cert, server_key = authority.issue(COMBINER, hosts=LOCAL_NAMES).write(pki, COMBINER)
    control_cert, control_key = authority.issue("controller").write(pki, "controller")
    client_cert, client_key = authority.issue(CLIENT).write(pki, CLIENT)

    backend = prepare_backend(e2e_dir)
    federation = Federation(
        backend,
        client_env=CLIENT_ENV,
        env={
            "FEDPLANE_CONTROL_CLIENT_CERT": str(control_cert),
            "FEDPLANE_CONTROL_CLIENT_KEY": str(control_key),
            "FEDPLANE_CONTROL_CA": str(ca),
        },
    )
    try:
        federation.start_controller()
        federation.start_worker()
        federation.start_combiner(
            COMBINER,
            extra_args=["--cert", str(server_cert), "--key", str(server_key), "--client-ca", str(ca)],
        )
        federation.upload_digits()
        federation.start_client(
            CLIENT,
            0,
            1,
            combiner=COMBINER,
            extra_args=["--client-cert", str(client_cert), "--client-key", str(client_key), "--ca", str(ca)],
        )
        federation.wait_clients_online(1, timeout=90)
        federation.start_session(SESSION, rounds=1, round_timeout=60, min_clients=1)
        session = federation.wait_session_end(SESSION, timeout=120)
        print(
            f"\nmTLS federation and one round in {time.monotonic() - started:.1f} s on {backend.description}"
        )
        yield federation, session
    finally:
        federation.stop()
        backend.close()


def test_one_round_trains_over_mtls(trained: tuple[Federation, dict[str, Any]]) -> None:
    federation, session = trained
    assert session["status"] == "Finished", federation.diagnostics()
    (only_round,) = federation.session_rounds(SESSION)
    assert only_round["status"] == "Finished"
    assert only_round["round_data"]["participants_clients"] == [CLIENT]
    assert "client certificates required" in federation.processes[COMBINER].tail(10**6)
    assert "client_cert=True" in federation.processes[CLIENT].tail(10**6)
