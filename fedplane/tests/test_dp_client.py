"""fedplane's differential privacy extension on the user's side: APIClient's ``dp`` keyword and the CLI."""

from __future__ import annotations

import json

import pytest

from fedplane.cli import main
from fedplane.cli.sessions import format_round_summary, round_epsilon
from fedplane.tests.test_api_client_unit import FakeController, fake  # noqa: F401 (fixture)

DP = {"noise_multiplier": 1.1, "clip_norm": 1.0, "target_epsilon": 8.0}


def test_start_session_sends_dp_only_when_given(fake: FakeController) -> None:  # noqa: F811
    fake.routes[("POST", "/start_session")] = (200, {"success": True, "message": "ok", "config": {}})
    fake.client().start_session(id="s1", rounds=3, dp=DP)
    sent = json.loads(fake.last.body)
    assert sent["dp"] == DP and sent["rounds"] == 3
    fake.client().start_session(id="s2")
    assert "dp" not in json.loads(fake.last.body)


def test_dp_is_keyword_only() -> None:
    from fedplane.api_client import APIClient

    with pytest.raises(TypeError):
        APIClient("localhost").start_session("s", "fedavg", None, None, 180, 5, -1, True, True, "h", 1, 8, DP)


def test_session_start_dp_option(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    fake.routes[("POST", "/start_session")] = (
        200,
        {"success": True, "message": "Session started", "config": {"session_id": "s"}},
    )
    code = main(
        ["--host", f"http://127.0.0.1:{fake.port}", "session", "start", "--id", "s", "--dp", json.dumps(DP)]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(fake.last.body)["dp"] == DP
    code = main(["--host", f"http://127.0.0.1:{fake.port}", "session", "start", "--id", "s", "--dp", "[1]"])
    assert code != 0
    assert "--dp must be a JSON object" in capsys.readouterr().err


def test_a_round_line_shows_the_epsilon_spent() -> None:
    round_doc = {"round_id": "2", "round_data": {"privacy": {"epsilon": 1.23456, "delta": 1e-5}}}
    assert round_epsilon(round_doc) == 1.23456
    assert round_epsilon({"round_id": "1", "round_data": {}}) is None
    summary = {
        "round_id": "2",
        "status": "Finished",
        "participants": 2,
        "test_accuracy": 0.9,
        "test_loss": None,
        "epsilon": 1.23456,
    }
    assert (
        format_round_summary(summary)
        == "round 2  Finished  participants=2  test_accuracy=0.9000  epsilon=1.235"
    )
