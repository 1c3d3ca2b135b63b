"""mTLS on a real in-process combiner (port 0) started with a client CA: the handshake needs a
certificate that CA signed, and a certificate speaks only for the client its common name names."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from combiner_node.cli import build_parser, settings_from_args
from combiner_node.node import CombinerNode
from combiner_node.server import TlsConfig
from combiner_node.tests.certs import LOCAL_NAMES, CertificateAuthority, Issued
from fedplane.client.config import ClientConfig
from fedplane.client.connection import CombinerLink
from fedplane.client.controller import Assignment
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

DEADLINE = 10.0


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    alice: Issued
    mallory: Issued
    stranger: Issued  # CN=alice, but from the other CA


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, other_ca = CertificateAuthority("fedplane test CA"), CertificateAuthority("someone else's CA")
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=ca.issue("combiner-1", hosts=LOCAL_NAMES),
        alice=ca.issue("alice"),
        mallory=ca.issue("mallory"),
        stranger=other_ca.issue("alice"),
    )


@pytest.fixture
def mtls_node(make_node: Callable[..., CombinerNode], pki: Pki) -> CombinerNode:
    return make_node(tls=TlsConfig(pki.server.cert_pem, pki.server.key_pem, client_ca_pem=pki.ca.cert_pem))


def channel(node: CombinerNode, pki: Pki, identity: Issued | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=identity.key_pem if identity else None,
        certificate_chain=identity.cert_pem if identity else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{node.port}", credentials)


def heartbeat(node: CombinerNode, pki: Pki, identity: Issued | None, sender: str) -> fedn_pb2.Response:
    with channel(node, pki, identity) as ch:
        return fedn_pb2_grpc.ConnectorStub(ch).SendHeartbeat(
            fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=sender, role=fedn_pb2.WORKER)),
            metadata=(("client", sender),),
            timeout=DEADLINE,
        )


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_client_without_a_certificate_fails_the_handshake(mtls_node: CombinerNode, pki: Pki) -> None:
    error = refusal(lambda: heartbeat(mtls_node, pki, None, "alice"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls_node.registry.online_names() == []


def test_certificate_from_another_ca_fails_the_handshake(mtls_node: CombinerNode, pki: Pki) -> None:
    error = refusal(lambda: heartbeat(mtls_node, pki, pki.stranger, "alice"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_alice_as_alice_is_let_in(mtls_node: CombinerNode, pki: Pki) -> None:
    assert heartbeat(mtls_node, pki, pki.alice, "alice").response == "Heartbeat received"


def test_alice_certificate_cannot_speak_for_mallory(mtls_node: CombinerNode, pki: Pki) -> None:
    # The common-name check lives in combiner_node/auth.py (IdentityGuard.require_sender).
    error = refusal(lambda: heartbeat(mtls_node, pki, pki.alice, "mallory"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_mallory_certificate_cannot_speak_for_alice(mtls_node: CombinerNode, pki: Pki) -> None:
    error = refusal(lambda: heartbeat(mtls_node, pki, pki.mallory, "alice"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert heartbeat(mtls_node, pki, pki.mallory, "mallory").response == "Heartbeat received"


def test_health_probe_needs_a_certificate_too(mtls_node: CombinerNode, pki: Pki) -> None:
    def check(identity: Issued | None) -> health_pb2.HealthCheckResponse:
        with channel(mtls_node, pki, identity) as ch:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)

    assert refusal(lambda: check(None)).code() == grpc.StatusCode.UNAVAILABLE
    # Any certificate from the CA will do: the health service names no sender.
    assert check(pki.mallory).status == health_pb2.HealthCheckResponse.SERVING


# --- fedplane's own client --- #


def client_config(tmp_path: Path, pki: Pki, identity: Issued | None, *, ca: bool = True) -> ClientConfig:
    cert = key = None
    if identity is not None:
        cert, key = identity.write(tmp_path / "pki", "client")
    return ClientConfig(
        controller_url="http://127.0.0.1:1",
        name="alice",
        workdir=tmp_path / "work",
        ca=pki.ca.write(tmp_path / "pki", "ca") if ca else None,
        client_cert=cert,
        client_key=key,
    )


def link_heartbeat(config: ClientConfig, assignment: Assignment) -> str:
    link = CombinerLink(assignment, config)
    try:
        answer = link.connector.SendHeartbeat(
            fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=config.name, role=fedn_pb2.WORKER)),
            metadata=link.metadata,
            timeout=DEADLINE,
        )
    finally:
        link.close()
    return answer.response


def assignment_for(node: CombinerNode, certificate: str | None = None) -> Assignment:
    return Assignment(
        host="127.0.0.1",
        port=node.port,
        fqdn=None,
        certificate=certificate,
        helper_type="numpyhelper",
        package="remote",
        raw={},
    )


def test_fedplane_client_presents_its_certificate(mtls_node: CombinerNode, pki: Pki, tmp_path: Path) -> None:
    config = client_config(tmp_path, pki, pki.alice)
    assert link_heartbeat(config, assignment_for(mtls_node)) == "Heartbeat received"


def test_fedplane_client_without_a_certificate_is_refused(
    mtls_node: CombinerNode, pki: Pki, tmp_path: Path
) -> None:
    config = client_config(tmp_path, pki, None)
    error = refusal(lambda: link_heartbeat(config, assignment_for(mtls_node)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_fedplane_client_pins_the_server_certificate_while_presenting_its_own(
    mtls_node: CombinerNode, pki: Pki, tmp_path: Path
) -> None:
    # No CA given: trust on first use (as FEDn's `secure`), which must present the client
    # certificate as well, or a combiner requiring one could end the handshake first.
    config = client_config(tmp_path, pki, pki.alice, ca=False)
    assert config.tls_required
    assert link_heartbeat(config, assignment_for(mtls_node)) == "Heartbeat received"


def test_ca_option_wins_over_the_certificate_in_the_assignment(
    mtls_node: CombinerNode, pki: Pki, tmp_path: Path
) -> None:
    config = client_config(tmp_path, pki, pki.alice)
    wrong = base64.b64encode(pki.other_ca.cert_pem).decode()
    assert link_heartbeat(config, assignment_for(mtls_node, certificate=wrong)) == ("Heartbeat received")


# --- combiner options --- #


def test_client_ca_option_and_variable(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.server.write(tmp_path, "server")
    ca = pki.ca.write(tmp_path, "ca")
    base = ["--name", "c1", "--store", str(tmp_path), "--no-register", "--cert", str(cert), "--key", str(key)]

    def tls_of(argv: list[str], environ: dict[str, str]) -> TlsConfig | None:
        return settings_from_args(build_parser(environ).parse_args(argv), environ).tls

    with_option = tls_of([*base, "--client-ca", str(ca)], {})
    assert with_option is not None and with_option.client_ca_pem == pki.ca.cert_pem
    with_variable = tls_of(base, {"FEDPLANE_COMBINER_CLIENT_CA": str(ca)})
    assert with_variable is not None and with_variable.client_ca_pem == pki.ca.cert_pem
    without = tls_of(base, {})
    assert without is not None and without.client_ca_pem is None
    with pytest.raises(ValueError, match="--client-ca needs --cert and --key"):
        tls_of(["--name", "c1", "--store", str(tmp_path), "--no-register", "--client-ca", str(ca)], {})
    with pytest.raises(OSError):
        tls_of([*base, "--client-ca", str(tmp_path / "missing.crt")], {})
