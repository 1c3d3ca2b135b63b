"""APIClient and `fedplane` CLI against a tiny scripted HTTP server (no Django needed).

`FakeController` is a stand-in for the controller: it records each request and answers from a
table, so these tests pin down what goes over the wire (paths, query, headers, bodies, TLS).
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from fedplane import APIClient
from fedplane.api_client import APIError
from fedplane.cli import EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, main
from tests.ports import free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, bytes]:
        """multipart/form-data fields by name (file contents included)."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        return {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }


Reply = tuple[int, Any] | Callable[["Recorded"], tuple[int, Any]]


@dataclass
class FakeController:
    """Scripted HTTP(S) server on 127.0.0.1:<free port>; `routes[(METHOD, path)]` gives the reply.

    A reply body that is bytes is sent as-is (application/octet-stream), str as text/html, anything
    else as JSON. Unknown routes answer 404 {"message": "no route"}.
    """

    routes: dict[tuple[str, str], Reply] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    delay_seconds: float = 0.0

    def start(self, tls_context: ssl.SSLContext | None = None) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(
                    method=self.command,
                    path=url.path,
                    query=dict(parse_qsl(url.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                fake.requests.append(recorded)
                if fake.delay_seconds:
                    time.sleep(fake.delay_seconds)
                reply = fake.routes.get((self.command, url.path), (404, {"message": "no route"}))
                status, body = reply(recorded) if callable(reply) else reply
                if isinstance(body, bytes):
                    payload, content_type = body, "application/octet-stream"
                elif isinstance(body, str):
                    payload, content_type = body.encode(), "text/html"
                else:
                    payload, content_type = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = handle_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def client(self, **kwargs: Any) -> APIClient:
        kwargs.setdefault("timeout", 5.0)
        return APIClient("127.0.0.1", port=self.port, **kwargs)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeController]:
    monkeypatch.delenv("FEDN_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("FEDN_AUTH_SCHEME", raising=False)
    controller = FakeController()
    controller.start()
    yield controller
    controller.stop()


LIST = {"count": 2, "result": [{"id": "a"}, {"id": "b"}]}

# method call → (HTTP method, path, query, extra headers) as FEDn 0.9.5's APIClient sends them.
WIRE_CASES: list[tuple[str, Callable[[APIClient], Any], str, str, dict[str, str], dict[str, str]]] = [
    ("get_client", lambda c: c.get_client("c1"), "GET", "/api/v1/clients/c1", {}, {}),
    ("get_clients", lambda c: c.get_clients(), "GET", "/api/v1/clients/", {}, {}),
    ("get_clients n_max", lambda c: c.get_clients(n_max=3), "GET", "/api/v1/clients/", {}, {"x-limit": "3"}),
    ("get_clients_count", lambda c: c.get_clients_count(), "GET", "/api/v1/clients/count", {}, {}),
    (
        "get_client_config",
        lambda c: c.get_client_config(),
        "GET",
        "/get_client_config",
        {"checksum": "true"},
        {},
    ),
    (
        "get_client_config no checksum",
        lambda c: c.get_client_config(checksum=False),
        "GET",
        "/get_client_config",
        {"checksum": "false"},
        {},
    ),
    (
        "get_active_clients",
        lambda c: c.get_active_clients(),
        "GET",
        "/api/v1/clients/",
        {"status": "online"},
        {},
    ),
    (
        "get_active_clients combiner",
        lambda c: c.get_active_clients("comb-1", n_max=2),
        "GET",
        "/api/v1/clients/",
        {"status": "online", "combiner": "comb-1"},
        {"x-limit": "2"},
    ),
    ("get_combiner", lambda c: c.get_combiner("comb-1"), "GET", "/api/v1/combiners/comb-1", {}, {}),
    ("get_combiners", lambda c: c.get_combiners(5), "GET", "/api/v1/combiners/", {}, {"x-limit": "5"}),
    ("get_combiners_count", lambda c: c.get_combiners_count(), "GET", "/api/v1/combiners/count", {}, {}),
    ("get_controller_status", lambda c: c.get_controller_status(), "GET", "/get_controller_status", {}, {}),
    ("get_model", lambda c: c.get_model("m1"), "GET", "/api/v1/models/m1", {}, {}),
    (
        "get_models",
        lambda c: c.get_models(session_id="s1", n_max=4),
        "GET",
        "/api/v1/models/",
        {"session_id": "s1"},
        {"x-limit": "4"},
    ),
    ("get_models_count", lambda c: c.get_models_count(), "GET", "/api/v1/models/count", {}, {}),
    ("get_active_model", lambda c: c.get_active_model(), "GET", "/api/v1/models/", {}, {"x-limit": "1"}),
    ("get_package", lambda c: c.get_package("p1"), "GET", "/api/v1/packages/p1", {}, {}),
    ("get_packages", lambda c: c.get_packages(), "GET", "/api/v1/packages/", {}, {}),
    ("get_packages_count", lambda c: c.get_packages_count(), "GET", "/api/v1/packages/count", {}, {}),
    ("get_active_package", lambda c: c.get_active_package(), "GET", "/api/v1/packages/active", {}, {}),
    ("get_package_checksum", lambda c: c.get_package_checksum(), "GET", "/get_package_checksum", {}, {}),
    ("get_round", lambda c: c.get_round("7"), "GET", "/api/v1/rounds/7", {}, {}),
    ("get_rounds", lambda c: c.get_rounds(1), "GET", "/api/v1/rounds/", {}, {"x-limit": "1"}),
    ("get_rounds_count", lambda c: c.get_rounds_count(), "GET", "/api/v1/rounds/count", {}, {}),
    ("get_session", lambda c: c.get_session("s1"), "GET", "/api/v1/sessions/s1", {}, {}),
    ("get_sessions", lambda c: c.get_sessions(), "GET", "/api/v1/sessions/", {}, {}),
    ("get_sessions_count", lambda c: c.get_sessions_count(), "GET", "/api/v1/sessions/count", {}, {}),
    ("stop_session", lambda c: c.stop_session("s1"), "POST", "/api/v1/sessions/s1/stop", {}, {}),
    ("get_status", lambda c: c.get_status("e1"), "GET", "/api/v1/statuses/e1", {}, {}),
    (
        "get_statuses",
        lambda c: c.get_statuses("s1", "MODEL_UPDATE", "client-1", "WORKER", 9),
        "GET",
        "/api/v1/statuses/",
        {"session_id": "s1", "type": "MODEL_UPDATE", "sender.name": "client-1", "sender.role": "WORKER"},
        {"x-limit": "9"},
    ),
    ("get_statuses_count", lambda c: c.get_statuses_count(), "GET", "/api/v1/statuses/count", {}, {}),
    ("get_validation", lambda c: c.get_validation("v1"), "GET", "/api/v1/validations/v1", {}, {}),
    (
        "get_validations",
        lambda c: c.get_validations("s1", "m1", "corr", "client-1", "WORKER", "comb-1", "COMBINER", 2),
        "GET",
        "/api/v1/validations/",
        {
            "sessionId": "s1",
            "modelId": "m1",
            "correlationId": "corr",
            "sender.name": "client-1",
            "sender.role": "WORKER",
            "receiver.name": "comb-1",
            "receiver.role": "COMBINER",
        },
        {"x-limit": "2"},
    ),
    (
        "get_validations_count",
        lambda c: c.get_validations_count(),
        "GET",
        "/api/v1/validations/count",
        {},
        {},
    ),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "headers"),
    [case[1:] for case in WIRE_CASES],
    ids=[case[0] for case in WIRE_CASES],
)
def test_each_method_sends_fedn_095_request_and_returns_the_json(
    fake: FakeController,
    call: Callable[[APIClient], Any],
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
) -> None:
    answer = {"count": 1, "result": [{"id": "x1", "marker": path}]}
    fake.routes[(method, path)] = (200, answer)

    result = call(fake.client(token="tok"))

    sent = fake.last
    assert (sent.method, sent.path, sent.query) == (method, path, query)
    for name, value in headers.items():
        assert sent.headers[name] == value
    if "x-limit" not in headers and path != "/api/v1/models/":
        assert "x-limit" not in sent.headers
    if method == "POST":
        assert sent.body == b""
    assert sent.headers["authorization"] == "Bearer tok"
    # get_active_model is the one call that unwraps the list answer to its first item.
    unwrapped = headers == {"x-limit": "1"} and path == "/api/v1/models/"
    assert result == (answer["result"][0] if unwrapped else answer)


def test_base_url_forms() -> None:
    assert APIClient("ctl.example.org", 8092)._get_url("health") == "http://ctl.example.org:8092/health"
    assert APIClient("ctl.example.org", secure=True)._get_url_api_v1("models/") == (
        "https://ctl.example.org/api/v1/models/"
    )
    # Without a port the host may carry a path prefix, as in FEDn 0.9.5.
    assert (
        APIClient("ctl.example.org/fedn")._get_url("get_package") == "http://ctl.example.org/fedn/get_package"
    )
    assert APIClient("https://ctl.example.org:9/x/").base_url == "https://ctl.example.org:9/x"


def test_no_authorization_header_without_token(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/clients/count")] = (200, 3)
    assert fake.client().get_clients_count() == 3
    assert "authorization" not in fake.last.headers


def test_token_and_scheme_from_environment(fake: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDN_AUTH_TOKEN", "env-token")
    monkeypatch.setenv("FEDN_AUTH_SCHEME", "Token")
    fake.routes[("GET", "/get_controller_status")] = (200, {"state": "idle"})
    fake.client().get_controller_status()
    assert fake.last.headers["authorization"] == "Token env-token"
    # An explicit token and scheme win over the environment.
    fake.client(token="arg-token", auth_scheme="Bearer").get_controller_status()
    assert fake.last.headers["authorization"] == "Bearer arg-token"


def test_error_status_raises_api_error_with_server_message(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/models/nope")] = (404, {"message": "Model nope not found."})
    with pytest.raises(APIError) as caught:
        fake.client().get_model("nope")
    assert caught.value.status_code == 404
    assert caught.value.message == "Model nope not found."


def test_html_error_page_becomes_api_error_not_decode_error(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/rounds/1")] = (500, "<html><body>Internal Server Error</body></html>")
    with pytest.raises(APIError) as caught:
        fake.client().get_round("1")
    assert caught.value.status_code == 500
    assert "Internal Server Error" in caught.value.message


def test_non_json_success_body_is_an_api_error(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/rounds/count")] = (200, "<p>not json</p>")
    with pytest.raises(APIError, match="expected JSON"):
        fake.client().get_rounds_count()


def test_fedn_logical_failure_with_200_is_returned_like_095(fake: FakeController) -> None:
    refusal = {"success": False, "message": "A session is already running."}
    fake.routes[("POST", "/start_session")] = (200, refusal)
    assert fake.client().start_session(id="s1") == refusal


def test_start_session_sends_the_twelve_keys_with_095_defaults(fake: FakeController) -> None:
    fake.routes[("POST", "/start_session")] = (200, {"success": True, "message": "ok", "config": {}})
    fake.client().start_session()
    assert json.loads(fake.last.body) == {
        "session_id": None,
        "aggregator": "fedavg",
        "aggregator_kwargs": None,
        "model_id": None,
        "round_timeout": 180,
        "rounds": 5,
        "round_buffer_size": -1,
        "delete_models": True,
        "validate": True,
        "helper": "numpyhelper",
        "min_clients": 1,
        "requested_clients": 8,
    }
    fake.client().start_session(
        "s2", "fedopt", {"serveropt": "adam"}, "m1", 30, 2, 4, False, False, "h", 3, 6
    )
    sent = json.loads(fake.last.body)
    assert sent["aggregator_kwargs"] == {"serveropt": "adam"}
    assert (sent["session_id"], sent["rounds"], sent["round_buffer_size"], sent["validate"]) == (
        "s2",
        2,
        4,
        False,
    )


def test_uploads_are_multipart_with_form_fields(fake: FakeController, tmp_path: Path) -> None:
    package = tmp_path / "package.tgz"
    package.write_bytes(b"\x1f\x8bfake-tgz")
    fake.routes[("POST", "/set_package")] = (200, {"success": True, "message": "Compute package set."})
    result = fake.client().set_active_package(package, "numpyhelper", name="digits")
    assert result == {"success": True, "message": "Compute package set."}
    form = fake.last.form()
    assert form == {"file": b"\x1f\x8bfake-tgz", "helper": b"numpyhelper", "name": b"digits"}

    seed = tmp_path / "seed.npz"
    seed.write_bytes(b"PK-npz")
    fake.routes[("POST", "/set_initial_model")] = (200, {"success": True, "message": "Initial model added."})
    assert fake.client().set_active_model(str(seed))["success"] is True
    assert fake.last.form() == {"file": b"PK-npz"}


def test_downloads_stream_to_disk_and_report_like_095(fake: FakeController, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 9000  # > 2 MiB, several chunks
    fake.routes[("GET", "/api/v1/models/m1/download")] = (200, blob)
    target = tmp_path / "sub" / "model.npz"
    assert fake.client().download_model("m1", target) == {
        "success": True,
        "message": "Model downloaded successfully.",
    }
    assert target.read_bytes() == blob

    fake.routes[("GET", "/download_package")] = (200, b"tgz-bytes")
    assert fake.client().download_package(tmp_path / "p.tgz")["success"] is True
    assert (tmp_path / "p.tgz").read_bytes() == b"tgz-bytes"


def test_failed_download_returns_failure_and_writes_nothing(fake: FakeController, tmp_path: Path) -> None:
    fake.routes[("GET", "/download_package")] = (404, {"message": "No compute package found."})
    result = fake.client().download_package(tmp_path / "p.tgz")
    assert result["success"] is False
    assert "No compute package found." in result["message"]
    assert list(tmp_path.iterdir()) == []


def test_get_active_model_without_models_returns_the_list_answer(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/models/")] = (200, {"count": 0, "result": []})
    assert fake.client().get_active_model() == {"count": 0, "result": []}


def test_model_trail_uses_active_model_and_count_like_095(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/models/")] = (200, {"count": 3, "result": [{"id": "oid3", "model": "m3"}]})
    fake.routes[("GET", "/api/v1/models/count")] = (200, 3)
    trail = [{"model": "m1"}, {"model": "m2"}, {"model": "m3"}]
    fake.routes[("GET", "/api/v1/models/oid3/ancestors")] = (200, trail)

    assert fake.client().get_model_trail() == trail
    sent = fake.last
    assert sent.query == {"include_self": "true"}
    assert (sent.headers["x-limit"], sent.headers["x-reverse"]) == ("3", "true")
    assert [r.path for r in fake.requests] == [
        "/api/v1/models/",
        "/api/v1/models/count",
        "/api/v1/models/oid3/ancestors",
    ]

    fake.client().get_model_trail("oid3", include_self=False, reverse=False, n_max=2)
    assert fake.last.query == {"include_self": "false"}
    assert (fake.last.headers["x-limit"], fake.last.headers["x-reverse"]) == ("2", "false")


def test_session_status_helpers(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/sessions/s1")] = (200, {"session_id": "s1", "status": "Finished"})
    fake.routes[("GET", "/api/v1/sessions/s2")] = (200, {"session_id": "s2", "status": "Started"})
    client = fake.client()
    assert client.get_session_status("s1") == "Finished"
    assert client.session_is_finished("s1") is True
    assert client.session_is_finished("s2") is False


def test_timeout_applies_to_every_request(fake: FakeController) -> None:
    fake.delay_seconds = 2.0
    fake.routes[("GET", "/get_controller_status")] = (200, {"state": "idle"})
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        fake.client(timeout=0.3).get_controller_status()
    assert time.monotonic() - started < 1.5


def session_script(statuses: list[str], rounds: list[list[dict[str, Any]]]) -> tuple[Reply, Reply]:
    """Replies for a session whose status and rounds advance one step per poll."""
    step = {"n": 0}

    def session(_: Recorded) -> tuple[int, Any]:
        index = min(step["n"], len(statuses) - 1)
        step["n"] += 1
        return 200, {"session_id": "s1", "status": statuses[index], "session_config": {"rounds": 2}}

    def round_list(_: Recorded) -> tuple[int, Any]:
        index = min(step["n"] - 1, len(rounds) - 1)
        return 200, {"count": len(rounds[index]), "result": rounds[index]}

    return session, round_list


def test_wait_for_session_reports_each_closed_round_once_in_order(fake: FakeController) -> None:
    r1 = {"round_id": "1", "status": "Success", "round_config": {"session_id": "s1"}}
    r2_pending = {"round_id": "2", "status": "Pending", "round_config": {"session_id": "s1"}}
    r2 = {**r2_pending, "status": "Success"}
    other = {"round_id": "9", "status": "Success", "round_config": {"session_id": "other"}}
    session, round_list = session_script(
        ["Started", "Started", "Started", "Finished"], [[other], [r2_pending, r1, other], [r2, r1], [r2, r1]]
    )
    fake.routes[("GET", "/api/v1/sessions/s1")] = session
    fake.routes[("GET", "/api/v1/rounds/")] = round_list
    seen: list[str] = []

    final = fake.client().wait_for_session(
        "s1", timeout=10, poll_interval=0.01, on_round=lambda r: seen.append(r["round_id"])
    )

    assert final["status"] == "Finished"
    assert seen == ["1", "2"]


def test_wait_for_session_times_out(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/sessions/s1")] = (200, {"session_id": "s1", "status": "Started"})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="s1"):
        fake.client().wait_for_session("s1", timeout=0.3, poll_interval=0.05)
    assert time.monotonic() - started < 2


# --- TLS: `verify` must reach every request (FEDn 0.9.5's get_session dropped it) --- #


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_fake(self_signed: tuple[Path, Path]) -> Iterator[FakeController]:
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    controller = FakeController()
    # Any route answers: the point is whether the TLS handshake is accepted.
    controller.routes = {
        (m, p): (200, {"status": "Started", "result": []}) for _, _, m, p, _, _ in WIRE_CASES
    }
    controller.start(tls_context=context)
    yield controller
    controller.stop()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize(("call"), [case[1] for case in WIRE_CASES], ids=[case[0] for case in WIRE_CASES])
def test_verify_is_honoured_by_every_method(
    tls_fake: FakeController, self_signed: tuple[Path, Path], call: Callable[[APIClient], Any]
) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        call(tls_fake.client(secure=True, verify=True))
    call(tls_fake.client(secure=True, verify=False))
    call(tls_fake.client(secure=True, verify=str(self_signed[0])))


# --- the `fedplane` command against the fake --- #


def run_cli(fake: FakeController, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--host", f"http://127.0.0.1:{fake.port}", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_list_prints_aligned_table(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("GET", "/api/v1/clients/")] = (
        200,
        {
            "count": 5,
            "result": [
                {"id": "1", "name": "client-a", "combiner": "comb", "status": "online", "ip": "10.0.0.1"},
                {"id": "22", "name": "b", "combiner": "comb", "status": "offline", "ip": "10.0.0.2"},
            ],
        },
    )
    code, out, _ = run_cli(fake, capsys, "clients", "list", "--n-max", "2")
    assert code == EXIT_OK
    assert fake.last.headers["x-limit"] == "2"
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "COMBINER", "STATUS", "IP", "LAST_SEEN"]
    assert lines[1].split() == ["1", "client-a", "comb", "online", "10.0.0.1", "-"]
    # Columns line up: every row's second column starts where the header's does.
    assert {line.index(cell) for line, cell in zip(lines[:3], ["NAME", "client-a", "b "], strict=True)} == {4}
    assert lines[-1] == "(2 of 5 clients)"


def test_cli_json_output_and_global_options_after_subcommand(
    fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.routes[("GET", "/api/v1/sessions/s1")] = (200, {"session_id": "s1", "status": "Started"})
    code = main(["sessions", "show", "s1", "--json", "--host", f"127.0.0.1:{fake.port}", "--token", "t"])
    assert code == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"session_id": "s1", "status": "Started"}
    assert fake.last.headers["authorization"] == "Bearer t"


def test_cli_exit_codes(fake: FakeController, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake.routes[("GET", "/api/v1/models/zz")] = (404, {"message": "Model zz not found."})
    code, _, err = run_cli(fake, capsys, "models", "show", "zz")
    assert (code, err.strip()) == (EXIT_SERVER_ERROR, "error: Model zz not found. (HTTP 404)")

    fake.routes[("POST", "/start_session")] = (200, {"success": False, "message": "Not enough clients."})
    code, _, err = run_cli(fake, capsys, "session", "start", "--rounds", "1")
    assert (code, err.strip()) == (EXIT_SERVER_ERROR, "Not enough clients.")

    assert run_cli(fake, capsys, "session", "start", "--aggregator-kwargs", "{nope")[0] == EXIT_USAGE
    assert run_cli(fake, capsys, "model", "upload", str(tmp_path / "missing.npz"))[0] == EXIT_USAGE
    assert run_cli(fake, capsys, "rounds", "list", "--n-max", "0")[0] == EXIT_USAGE
    assert run_cli(fake, capsys, "no-such-command")[0] == EXIT_USAGE
    assert run_cli(fake, capsys, "--help")[0] == EXIT_OK

    code = main(["--host", f"http://127.0.0.1:{free_port()}", "status"])
    assert code == EXIT_UNREACHABLE
    assert "cannot reach the controller" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_cli_tls_verification_options(
    tls_fake: FakeController, self_signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tls_fake.routes[("GET", "/get_controller_status")] = (200, {"state": "idle"})
    url = f"https://127.0.0.1:{tls_fake.port}"

    assert main(["--host", url, "status"]) == EXIT_UNREACHABLE  # verified by default: self-signed fails
    assert "--ca-bundle" in capsys.readouterr().err
    assert main(["--host", url, "--insecure", "status"]) == EXIT_OK
    assert main(["--host", url, "status", "--ca-bundle", str(self_signed[0])]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [f"controller {url}: idle"] * 2


def test_cli_client_start_delegates_to_the_edge_client(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fedplane.client.cli", reason="the edge client is not in this checkout")
    assert main(["client", "start", "--help"]) == EXIT_OK
    assert "start" in capsys.readouterr().out
    assert main(["client", "start", "--no-such-option"]) == EXIT_USAGE


def test_cli_session_start_watch_follows_rounds_to_the_end(
    fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.routes[("POST", "/start_session")] = (
        200,
        {"success": True, "message": "Session started successfully.", "config": {"session_id": "s1"}},
    )
    r1 = {"round_id": "1", "status": "Success", "session_id": "s1", "model_id": "m1", "combiners": []}
    r1["combiners"] = [{"name": "comb", "participants": ["a", "b", "c"]}]
    r2 = {"round_id": "2", "status": "Failed", "session_id": "s1", "model_id": None, "combiners": []}
    session, round_list = session_script(["Started", "Started", "Failed"], [[], [r1], [r2, r1]])
    fake.routes[("GET", "/api/v1/sessions/s1")] = session
    fake.routes[("GET", "/api/v1/rounds/")] = round_list
    validations = [{"data": json.dumps({"test_accuracy": a, "test_loss": 1 - a})} for a in (0.5, 0.7, 0.9)]
    fake.routes[("GET", "/api/v1/validations/")] = lambda sent: (
        200,
        {"count": 3, "result": validations}
        if sent.query == {"modelId": "m1"}
        else {"count": 0, "result": []},
    )

    code, out, _ = run_cli(
        fake, capsys, "session", "start", "--rounds", "2", "--watch", "--poll-interval", "0.01"
    )

    assert code == EXIT_SERVER_ERROR  # the session failed
    assert out.splitlines() == [
        "Session started successfully. session_id: s1",
        "round 1  Success  participants=3  test_accuracy=0.7000  test_loss=0.3000",
        "round 2  Failed  participants=0",
        "session s1: Failed",
    ]


def test_cli_list_filters_become_the_apiclient_query(
    fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.routes[("GET", "/api/v1/statuses/")] = (200, {"count": 0, "result": []})
    code, _, _ = run_cli(fake, capsys, "statuses", "list", "--session-id", "s1", "--type", "MODEL_UPDATE")
    assert code == EXIT_OK
    assert fake.last.query == {"session_id": "s1", "type": "MODEL_UPDATE"}
    fake.routes[("GET", "/api/v1/validations/")] = (200, {"count": 0, "result": []})
    code, _, _ = run_cli(fake, capsys, "validations", "list", "--model-id", "m1", "--sender", "alice")
    assert code == EXIT_OK
    assert fake.last.query == {"modelId": "m1", "sender.name": "alice"}
