"""FEDn 0.9.5's own client, unmodified, in a fedplane federation with auth on.

FEDn 0.9.5 sends its token to the combiner only over TLS (`secure: True`, with the certificate it
fetches from the combiner). Its token, minted by `manage.py fedplane_token`, names the client, so
the combiner binds every message it sends to that name. The token reaches FEDn through its
`--init` settings file, never its command line.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.compat.fedn_client import FEDN, spawn_fedn_client
from tests.e2e.harness import Federation, prepare_backend

CLIENT_NAME = "fedn-secure-1"
COMBINER = "combiner-tls"
SECRET = "compat-auth-secret-of-at-least-thirty-two-bytes"

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh"),
]


def self_signed_server_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own root: FEDn trusts what the server presents."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "combiner.crt", folder / "combiner.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    var_dir = tmp_path_factory.mktemp("fedn_client_auth")
    backend = prepare_backend(var_dir)
    running = Federation(backend, client_env={"FEDPLANE_EPOCHS": "1"}, env={"FEDN_JWT_SECRET_KEY": SECRET})
    try:
        migrated = running.manage("migrate", "-v0")
        assert migrated.returncode == 0, migrated.stderr
        admin = running.mint("admin", "operator")
        cert, key = self_signed_server_certificate(var_dir / "pki")
        # The worker checks the combiner's certificate against this CA on its Control calls.
        running.env.update({"FEDPLANE_CONTROL_TOKEN": admin, "FEDPLANE_CONTROL_CA": str(cert)})
        running.api.close()
        running.api = type(running.api)("127.0.0.1", running.port, timeout=30, token=admin)
        running.start_controller()
        running.start_worker()
        running.start_combiner(
            COMBINER,
            token=running.mint("combiner", COMBINER),
            extra_args=["--cert", str(cert), "--key", str(key)],
        )
        running.upload_digits()
        workdir = running.var_dir / "client1"
        workdir.mkdir()
        settings = workdir / "client.yaml"
        settings.write_text(
            yaml.safe_dump(
                {
                    "discover_host": "127.0.0.1",
                    "discover_port": running.port,
                    "name": CLIENT_NAME,
                    "token": running.mint("client", CLIENT_NAME),
                    "secure": True,
                }
            )
        )
        settings.chmod(0o600)
        spawn_fedn_client(running, CLIENT_NAME, ["--init", str(settings)], workdir)
        running.wait_clients_online(1, timeout=120)
        yield running
    finally:
        running.stop()
        backend.close()


def test_fedn_095_client_over_tls_with_its_own_token_trains(federation: Federation) -> None:
    session_id = "fedn-client-auth"
    started = time.monotonic()
    federation.start_session(session_id, rounds=1, round_timeout=60, min_clients=1, requested_clients=1)
    session = federation.wait_session_end(session_id, timeout=150)
    print(f"\nFEDn client round with auth and TLS in {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", f"{session}\n{federation.diagnostics()}"
    (only,) = federation.session_rounds(session_id)
    assert only["round_data"]["participants_clients"] == [CLIENT_NAME]
    validations = federation.api.get_validations(session_id=session_id, model_id=only["model_id"])["result"]
    assert [v["sender"]["name"] for v in validations] == [CLIENT_NAME]
    assert "secure connection" in federation.processes[CLIENT_NAME].tail(10**6)
