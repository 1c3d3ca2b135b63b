"""The controller's CombinerClient presents its own certificate to a combiner that requires one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.combiners.grpc_client import CombinerClient, CombinerRejected, CombinerUnreachable, ControlTls
from combiner_node.node import CombinerNode, NodeSettings
from combiner_node.server import TlsConfig
from combiner_node.store import DirectoryStore
from combiner_node.tests.certs import LOCAL_NAMES, CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("fedplane test CA")
    server_cert, server_key = ca.issue("c1", hosts=LOCAL_NAMES).write(folder, "server")
    cert, key = ca.issue("controller").write(folder, "controller")
    return {
        "ca": ca.write(folder, "ca"),
        "server_cert": server_cert,
        "server_key": server_key,
        "cert": cert,
        "key": key,
    }


@pytest.fixture
def mtls_node(tmp_path: Path, pki: dict[str, Path]) -> Iterator[CombinerNode]:
    tls = TlsConfig(
        pki["server_cert"].read_bytes(), pki["server_key"].read_bytes(), client_ca_pem=pki["ca"].read_bytes()
    )
    node = CombinerNode(
        NodeSettings(
            name="c1", store=DirectoryStore(tmp_path / "media"), port=0, workdir=tmp_path / "w", tls=tls
        )
    )
    node.start()
    yield node
    node.stop(grace=1.0)


def test_control_calls_present_the_configured_certificate(
    mtls_node: CombinerNode, pki: dict[str, Path]
) -> None:
    tls = ControlTls(client_cert=str(pki["cert"]), client_key=str(pki["key"]), ca=str(pki["ca"]))
    client = CombinerClient("127.0.0.1", mtls_node.port, secure=True, timeout=5, tls=tls)
    assert client.list_active_clients() == []
    assert client.accepting_clients() is True
    assert client.health() is True


def test_without_a_certificate_the_combiner_is_unavailable(
    mtls_node: CombinerNode, pki: dict[str, Path]
) -> None:
    client = CombinerClient(
        "127.0.0.1", mtls_node.port, secure=True, timeout=3, tls=ControlTls(ca=str(pki["ca"]))
    )
    with pytest.raises(CombinerUnreachable):
        client.list_active_clients()
    assert client.health() is False


def test_settings_name_the_certificate(mtls_node: CombinerNode, pki: dict[str, Path], settings: Any) -> None:
    settings.FEDPLANE_CONTROL_CLIENT_CERT = str(pki["cert"])
    settings.FEDPLANE_CONTROL_CLIENT_KEY = str(pki["key"])
    settings.FEDPLANE_CONTROL_CA = str(pki["ca"])
    assert ControlTls.configured() == ControlTls(str(pki["cert"]), str(pki["key"]), str(pki["ca"]))
    assert CombinerClient("127.0.0.1", mtls_node.port, secure=True, timeout=5).list_active_clients() == []


def test_an_unreadable_certificate_is_a_refusal_naming_the_setting(
    mtls_node: CombinerNode, pki: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.crt"
    tls = ControlTls(client_cert=str(missing), client_key=str(pki["key"]), ca=str(pki["ca"]))
    client = CombinerClient("127.0.0.1", mtls_node.port, secure=True, timeout=3, tls=tls)
    with pytest.raises(CombinerRejected, match=f"cannot read FEDPLANE_CONTROL_CLIENT_CERT {missing}"):
        client.list_active_clients()
    half = ControlTls(client_cert=str(pki["cert"]), ca=str(pki["ca"]))
    with pytest.raises(CombinerRejected, match="go together"):
        CombinerClient("127.0.0.1", mtls_node.port, secure=True, timeout=3, tls=half).list_active_clients()
