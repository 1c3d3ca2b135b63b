"""The client's token reaches the combiner on plain channels too (0.9.5 sends it on TLS only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedplane.client.tests.fakes import FakeCombiner, FakeController, wait_until
from fedplane.client.tests.test_client_integration import TINY_PACKAGE, RunningClient, _config


@pytest.mark.parametrize(
    ("token", "scheme", "expected"), [("tok", "Token", "Token tok"), (None, "Bearer", None)]
)
def test_plain_channel_carries_the_token_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str | None, scheme: str, expected: str | None
) -> None:
    monkeypatch.setenv("FEDN_AUTH_SCHEME", scheme)
    combiner = FakeCombiner().start()
    controller = FakeController(package=TINY_PACKAGE, combiner_port=combiner.port).start()
    client = RunningClient(_config(controller.url, tmp_path / "work", token=token))
    try:
        wait_until(lambda: combiner.connected("client-1"), 15, "task stream on a plain channel")
        metadata = combiner.record.stream_metadata[0]
        assert metadata.get("authorization") == expected
        # FEDn's own metadata stays as it was.
        assert metadata["client"] == "client-1"
        assert metadata["grpc-server"] == "127.0.0.1"
    finally:
        client.stop()
        controller.stop()
        combiner.stop()
