"""The client's token reaches the combiner on plain channels too (0.9.5 sends it on TLS only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedplane.client.config import ClientConfig
from fedplane.client.controller import ControllerClient, ControllerRejected
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


@pytest.mark.parametrize(("token", "hint_given"), [(None, True), ("tok", False)])
def test_refused_client_without_a_token_is_told_to_give_one(
    monkeypatch: pytest.MonkeyPatch, token: str | None, hint_given: bool
) -> None:
    monkeypatch.delenv("FEDN_AUTH_SCHEME", raising=False)
    controller = FakeController(package=TINY_PACKAGE, combiner_port=1).start()
    controller.scripted_assign = [(401, {"message": "Invalid token"})]
    client = ControllerClient(ClientConfig(controller_url=controller.url, name="c1", token=token))
    try:
        with pytest.raises(ControllerRejected, match=r"refused the token \(401\): Invalid token") as refused:
            client.assign()
    finally:
        controller.stop()
    assert (
        "give --token-file (a token of role client naming this client)" in str(refused.value)
    ) is hint_given
    # FEDn's header even without a token: the literal "None".
    assert controller.assign_requests[0]["authorization"] == f"Bearer {token}"
