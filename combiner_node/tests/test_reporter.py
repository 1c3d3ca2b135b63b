"""ControllerReporter and registration against FakeController."""

from __future__ import annotations

import re
import time

import pytest

from combiner_node.reporter import (
    ControllerReporter,
    RegistrationRefused,
    RegistrationTimeout,
    register_combiner,
    session_for,
)
from combiner_node.tests.conftest import FakeController, wait_for
from tests.ports import free_port


def test_statuses_are_batched_and_carry_the_token(controller: FakeController) -> None:
    reporter = ControllerReporter(controller.url, token="tok", auth_scheme="Bearer")
    for i in range(30):
        reporter.post("/api/v1/statuses/", {"status": f"s{i}"})
    reporter.post("/api/v1/rounds/1/reports", {"status": "Success"})
    reporter.start()
    assert reporter.flush(timeout=5)
    reporter.close()
    statuses = controller.items("/api/v1/statuses/")
    assert [s["status"] for s in statuses] == [f"s{i}" for i in range(30)]
    assert len(controller.bodies("/api/v1/statuses/")) == 1
    assert controller.bodies("/api/v1/rounds/1/reports") == [{"status": "Success"}]
    assert {headers["Authorization"] for _, _, headers in controller.requests} == {"Bearer tok"}


def test_the_environment_is_read_once_for_the_controller_and_honoured(
    controller: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert session_for("http://controller.invalid:8092", {}).proxies["http"] == "http://proxy.invalid:3128"
    assert session_for(controller.url, {}).proxies.get("http") is None
    reporter = ControllerReporter(controller.url)
    # Changed after the reporter was made: not read per report, so the reports still go straight out.
    monkeypatch.setenv("NO_PROXY", "")
    reporter.post("/api/v1/statuses/", {"status": "s"})
    reporter.start()
    assert reporter.flush(timeout=5)
    reporter.close()
    assert [s["status"] for s in controller.items("/api/v1/statuses/")] == ["s"]


def test_interleaved_kinds_are_batched_per_kind(controller: FakeController) -> None:
    reporter = ControllerReporter(controller.url)
    for i in range(30):
        reporter.post("/api/v1/statuses/", {"status": f"s{i}"})
        reporter.post("/api/v1/validations/", {"data": f"v{i}"})
    reporter.start()
    assert reporter.flush(timeout=5)
    reporter.close()
    assert [v["data"] for v in controller.items("/api/v1/validations/")] == [f"v{i}" for i in range(30)]
    assert [s["status"] for s in controller.items("/api/v1/statuses/")] == [f"s{i}" for i in range(30)]
    # Queued before the senders started: one request per kind, not one per report.
    assert len(controller.bodies("/api/v1/validations/")) == 1
    assert len(controller.bodies("/api/v1/statuses/")) == 1


def test_a_failing_kind_does_not_hold_back_the_others(controller: FakeController) -> None:
    controller.script("/api/v1/statuses/", *[(503, {})] * 1000)
    reporter = ControllerReporter(controller.url, initial_backoff=0.05, max_backoff=0.05)
    reporter.start()
    reporter.post("/api/v1/statuses/", {"status": "stuck"})
    wait_for(lambda: len(controller.bodies("/api/v1/statuses/")) >= 2, timeout=5)
    reporter.post("/api/v1/validations/", {"data": "v"})
    reporter.post("/api/v1/rounds/1/reports", {"status": "Success"})
    wait_for(lambda: controller.bodies("/api/v1/rounds/1/reports") == [{"status": "Success"}], timeout=5)
    wait_for(lambda: controller.items("/api/v1/validations/") == [{"data": "v"}], timeout=5)
    assert reporter.pending() == 1  # only the status is still being retried
    reporter.close(timeout=0.1)


def test_server_errors_are_retried_and_refusals_are_not(controller: FakeController) -> None:
    controller.script("/api/v1/rounds/1/reports", (503, {}), (500, {}), (200, {"accepted": True}))
    controller.script("/api/v1/rounds/2/reports", (409, {"message": "round closed"}))
    reporter = ControllerReporter(controller.url, initial_backoff=0.01)
    reporter.start()
    reporter.post("/api/v1/rounds/1/reports", {"n": 1})
    reporter.post("/api/v1/rounds/2/reports", {"n": 2})
    assert reporter.flush(timeout=5)
    reporter.close()
    assert controller.bodies("/api/v1/rounds/1/reports") == [{"n": 1}] * 3
    assert controller.bodies("/api/v1/rounds/2/reports") == [{"n": 2}]


def keys(controller: FakeController, path: str) -> list[str | None]:
    with controller.lock:
        return [headers.get("Idempotency-Key") for sent, _, headers in controller.requests if sent == path]


def test_a_batch_whose_answer_failed_is_sent_again_unchanged_under_its_key(
    controller: FakeController,
) -> None:
    # The first answer is lost (the controller may have stored the batch); the resend must be the
    # same batch under the same key, not the batch plus what was queued meanwhile.
    controller.script("/api/v1/statuses/", (503, {}))
    reporter = ControllerReporter(controller.url, initial_backoff=0.2, max_backoff=0.2)
    for i in range(3):
        reporter.post("/api/v1/statuses/", {"status": f"s{i}"})
    reporter.start()
    wait_for(lambda: len(controller.bodies("/api/v1/statuses/")) >= 1, timeout=5)
    reporter.post("/api/v1/statuses/", {"status": "s3"})
    reporter.post("/api/v1/rounds/1/reports", {"status": "Success"})
    assert reporter.flush(timeout=5)
    reporter.close()
    first = [{"status": f"s{i}"} for i in range(3)]
    assert controller.bodies("/api/v1/statuses/") == [first, first, [{"status": "s3"}]]
    sent_keys = keys(controller, "/api/v1/statuses/")
    assert sent_keys[0] == sent_keys[1] != sent_keys[2]
    assert all(key and re.fullmatch(r"[0-9a-f]{32}", key) for key in sent_keys)
    # A route that takes one report at a time is not a batch: no key.
    assert keys(controller, "/api/v1/rounds/1/reports") == [None]


def test_a_newer_snapshot_replaces_a_failed_one_that_waits_for_its_retry(controller: FakeController) -> None:
    path = "/api/v1/combiners/north/clients"
    controller.script(path, (503, {}))
    reporter = ControllerReporter(controller.url, initial_backoff=0.3, max_backoff=0.3)
    reporter.start()
    reporter.post(path, [{"name": "old"}], replace=True)
    wait_for(lambda: len(controller.bodies(path)) >= 1, timeout=5)
    reporter.post(path, [{"name": "new"}], replace=True)
    assert reporter.flush(timeout=5)
    reporter.close()
    assert controller.bodies(path) == [[{"name": "old"}], [{"name": "new"}]]


def test_outage_never_blocks_posting_and_the_buffer_is_bounded() -> None:
    port = free_port()
    reporter = ControllerReporter(
        f"http://127.0.0.1:{port}", max_buffer=5, initial_backoff=0.01, max_backoff=0.05
    )
    reporter.start()
    started = time.monotonic()
    for i in range(50):
        reporter.post("/api/v1/rounds/1/reports", {"n": i})
    assert time.monotonic() - started < 0.5
    assert reporter.pending() <= 5 and reporter.dropped >= 45
    assert not reporter.flush(timeout=0.2)
    # The controller comes back on the same port: the newest reports get through.
    controller = FakeController(port)
    try:
        assert reporter.flush(timeout=5)
        sent = [body["n"] for body in controller.bodies("/api/v1/rounds/1/reports")]
        assert sent[-1] == 49 and len(sent) <= 6
    finally:
        reporter.close(timeout=1)
        controller.close()


def test_registration_retries_until_added(controller: FakeController) -> None:
    controller.script("/add_combiner", (203, {"status": "retry"}), (200, {"status": "added"}))
    answer = register_combiner(
        controller.url,
        {"combiner_id": "c1", "address": "127.0.0.1", "fqdn": None, "port": 1, "secure_grpc": False},
        token="t",
        retry_interval=0.05,
        deadline=5,
    )
    assert answer == {"status": "added"}
    bodies = controller.bodies("/add_combiner")
    assert len(bodies) == 2 and bodies[0]["combiner_id"] == "c1" and bodies[0]["fqdn"] is None


@pytest.mark.parametrize("status", [400, 401])
def test_registration_refused_is_fatal(controller: FakeController, status: int) -> None:
    controller.script("/add_combiner", (status, {"message": "bad name"}))
    with pytest.raises(RegistrationRefused, match="bad name"):
        register_combiner(controller.url, {}, token=None, retry_interval=0.05, deadline=5)


def test_registration_gives_up_at_its_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(RegistrationTimeout):
        register_combiner(f"http://127.0.0.1:{free_port()}", {}, token=None, retry_interval=0.1, deadline=0.5)
    assert time.monotonic() - started < 3


def test_wait_helper_times_out() -> None:
    with pytest.raises(AssertionError):
        wait_for(lambda: False, timeout=0.1)
