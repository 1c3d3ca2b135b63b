"""Unit tests of the client's pieces: settings, backoff, REST client, link target, transfers."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedplane.client.backoff import Backoff
from fedplane.client.config import ClientConfig, ConfigError, build_config, read_settings_yaml
from fedplane.client.connection import CombinerLink, resolve_target
from fedplane.client.controller import (
    Assignment,
    ControllerClient,
    ControllerRejected,
    ControllerUnavailable,
    package_filename,
)
from fedplane.client.logs import kv, log_event
from fedplane.client.tests.fakes import FakeCombiner, FakeController, make_package
from fedplane.client.transfer import CHUNK_SIZE, TransferFailed, download_model, upload_model
from tests.ports import free_port

# --------------------------------------------------------------------------- settings


def test_settings_yaml_builds_the_controller_url_and_wins_over_cli(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "network_id: fedn-network\ndiscover_host: api-server\ndiscover_port: 8092\n"
        "name: edge-7\ntoken: abc\nsecure: 'False'\npreferred_combiner: false\ntrainer: no\n"
        "checksum: ABCDEF\nheartbeat_interval: 5\n"
    )
    config = build_config({"name": "from-cli", "validator": False, "token": None}, read_settings_yaml(path))
    assert config.controller_url == "http://api-server:8092"
    assert config.name == "edge-7"
    assert config.token == "abc"
    assert config.secure is False
    assert config.preferred_combiner is None
    assert config.trainer is False and config.validator is False
    assert config.checksum == "ABCDEF"
    assert config.heartbeat_interval == 5.0


def test_force_ssl_and_schemes_in_discover_host() -> None:
    assert build_config({}, {"discover_host": "h", "force_ssl": True}).controller_url == "https://h"
    assert build_config({}, {"discover_host": "http://h:1"}).controller_url == "http://h:1"


def test_cli_only_config_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDN_CUSTOM_URL_PREFIX", "/internal")
    config = build_config({"controller_url": "http://127.0.0.1:8092/", "name": "a"})
    assert config.base_url == "http://127.0.0.1:8092/internal"
    assert config.workdir.name == "package"


@pytest.mark.parametrize(
    ("cli", "settings", "message"),
    [
        ({}, {}, "no controller"),
        ({"controller_url": "ftp://x"}, {}, "http"),
        ({"controller_url": "http://x", "name": "bad name!"}, {}, "may only contain"),
        ({"controller_url": "http://x"}, {"secure": "maybe"}, "true or false"),
        ({"controller_url": "http://x", "heartbeat_interval": 0}, {}, "positive"),
    ],
)
def test_bad_settings_are_clear_errors(cli: dict, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(cli, settings)


def test_unreadable_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_settings_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_settings_yaml(tmp_path / "list.yaml")


# --------------------------------------------------------------------------- small helpers


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    jittered = Backoff(1.0, 30.0)
    assert all(0.9 <= jittered.next_delay() <= 1.1 for _ in range(1))


def test_kv_quotes_only_when_needed() -> None:
    assert kv("assigned", host="h", port=1, reason="a b", empty="", skipped=None) == (
        'event=assigned host=h port=1 reason="a b" empty=""'
    )


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("attachment; filename=package.tgz", "package.tgz"),
        ('attachment; filename="../../etc/x.tar.gz"', "x.tar.gz"),
        ("attachment; filename*=utf-8''my%20pkg.tar.bz2", "my_pkg.tar.bz2"),
    ],
)
def test_package_filename_is_reduced_to_a_safe_base_name(header: str, name: str) -> None:
    assert package_filename(header) == name


def test_package_filename_refusals() -> None:
    with pytest.raises(ControllerUnavailable, match="no package"):
        package_filename("")
    with pytest.raises(ControllerRejected, match="expected"):
        package_filename("attachment; filename=evil.sh")


# --------------------------------------------------------------------------- REST client


@pytest.fixture
def controller() -> Iterator[FakeController]:
    fake = FakeController(
        package=make_package({"fedn.yaml": "entry_points: {}\n"}), combiner_port=12080
    ).start()
    yield fake
    fake.stop()


def _client(url: str, **extra: object) -> ControllerClient:
    return ControllerClient(ClientConfig(controller_url=url, name="c1", request_timeout=2.0, **extra))  # type: ignore[arg-type]


def test_assign_sends_fedn_payload_and_header(
    controller: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDN_AUTH_SCHEME", "Token")
    assignment = _client(controller.url, token="t0k", preferred_combiner="comb-a").assign()
    assert (assignment.host, assignment.port, assignment.fqdn) == ("127.0.0.1", 12080, None)
    assert controller.assign_requests == [
        {"body": {"client_id": "c1", "preferred_combiner": "comb-a"}, "authorization": "Token t0k"}
    ]


def test_assign_outcomes(controller: FakeController) -> None:
    client = _client(controller.url)
    controller.scripted_assign = [
        (200, {"status": "retry", "message": "busy"}),
        (500, {}),
        (400, {"message": "bad config"}),
        (401, {"message": "Invalid token"}),
        (200, {"status": "assigned", "package": "local", "host": "h", "port": 1}),
        (200, {"status": "assigned", "package": "remote"}),
    ]
    with pytest.raises(ControllerUnavailable, match="busy"):
        client.assign()
    with pytest.raises(ControllerUnavailable, match="500"):
        client.assign()
    with pytest.raises(ControllerRejected, match="bad config"):
        client.assign()
    with pytest.raises(ControllerRejected, match="Invalid token"):
        client.assign()
    with pytest.raises(ControllerRejected, match="local"):
        client.assign()
    with pytest.raises(ControllerUnavailable, match="host/port"):
        client.assign()


def test_unreachable_controller_is_transient() -> None:
    with pytest.raises(ControllerUnavailable, match="unreachable"):
        _client(f"http://127.0.0.1:{free_port()}").assign()


def test_expired_token_is_refreshed(controller: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    refresher = FakeController(package=b"")
    refresher.scripted_assign = [(200, {"access": "fresh"})]
    refresher.start()
    try:
        monkeypatch.setenv("FEDN_AUTH_REFRESH_TOKEN_URI", f"{refresher.url}/add_client")
        monkeypatch.setenv("FEDN_AUTH_REFRESH_TOKEN", "r")
        controller.scripted_assign = [(401, {"message": "Token expired"})]
        client = _client(controller.url, token="old")
        with pytest.raises(ControllerUnavailable, match="refreshed"):
            client.assign()
        client.assign()
        assert controller.assign_requests[-1]["authorization"] == "Bearer fresh"
        assert refresher.assign_requests[0]["body"] == {"refresh": "r"}
    finally:
        refresher.stop()


def test_download_package_streams_to_disk(controller: FakeController, tmp_path: Path) -> None:
    client = _client(controller.url)
    path = client.download_package(tmp_path)
    assert path == tmp_path / "package.tgz"
    assert path.read_bytes() == controller.package
    assert client.package_checksum() is not None
    with pytest.raises(ControllerRejected, match="larger"):
        client.download_package(tmp_path / "small", max_bytes=10)
    assert list((tmp_path / "small").iterdir()) == []


# --------------------------------------------------------------------------- link target


def _assignment(**overrides: object) -> Assignment:
    body = {
        "host": "combiner",
        "port": 12080,
        "fqdn": None,
        "certificate": None,
        "helper_type": "numpyhelper",
    }
    body.update(overrides)
    return Assignment.from_response(body)


def test_target_follows_fedn_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDN_GRPC_ROOT_CERT_PATH", raising=False)
    config = ClientConfig(controller_url="http://x", name="c")
    plain = resolve_target(_assignment(), config)
    assert (plain.host, plain.port, plain.tls) == ("combiner", 12080, False)
    ingress = resolve_target(_assignment(fqdn="comb.example"), config)
    assert (ingress.host, ingress.port, ingress.tls) == ("comb.example", 80, False)
    pem = b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
    pinned = resolve_target(_assignment(certificate=base64.b64encode(pem).decode()), config)
    assert pinned.tls and pinned.root_certificates == pem
    system = resolve_target(
        _assignment(fqdn="comb.example"),
        ClientConfig(controller_url="http://x", name="c", secure=True, verify=True),
    )
    assert (system.port, system.tls, system.root_certificates) == (443, True, None)
    with pytest.raises(ValueError, match="base64"):
        resolve_target(_assignment(certificate="not base64!"), config)


def test_link_metadata_is_fedn_style() -> None:
    link = CombinerLink(
        _assignment(host="127.0.0.1", port=free_port()), ClientConfig(controller_url="http://x", name="c9")
    )
    try:
        assert link.metadata == (("grpc-server", "127.0.0.1"), ("client", "c9"))
    finally:
        link.close()


# --------------------------------------------------------------------------- transfers


@pytest.fixture
def combiner() -> Iterator[FakeCombiner]:
    fake = FakeCombiner().start()
    yield fake
    fake.stop()


def test_transfers_round_trip_in_one_mib_chunks(combiner: FakeCombiner, tmp_path: Path) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{combiner.port}")
    try:
        payload = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 7)  # a bit over two chunks
        source = tmp_path / "m.npz"
        source.write_bytes(payload)
        assert upload_model(channel, source, "m-1", metadata=(), timeout=10) == len(payload)
        assert combiner.record.models["m-1"] == payload
        dest = tmp_path / "back.npz"
        assert download_model(channel, "m-1", dest, sender_name="c", metadata=(), timeout=10) == len(payload)
        assert dest.read_bytes() == payload
        with pytest.raises(TransferFailed, match="unknown model"):
            download_model(channel, "nope", dest, sender_name="c", metadata=(), timeout=10)
    finally:
        channel.close()


def test_download_from_a_dead_combiner_fails_within_its_deadline(tmp_path: Path) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TransferFailed, match=r"UNAVAILABLE|DEADLINE"):
            download_model(
                channel,
                "m",
                tmp_path / "x",
                sender_name="c",
                metadata=(),
                timeout=2,
            )
    finally:
        channel.close()


def test_logs_are_key_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        log_event(logging.getLogger("t"), logging.INFO, "task_done", kind="training", seconds="1.00")
    assert caplog.records[0].getMessage() == "event=task_done kind=training seconds=1.00"
