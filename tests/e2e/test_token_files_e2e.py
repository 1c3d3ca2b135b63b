"""Tokens stay off the command line: a combiner process and a client process started as the demo
and the harness start them (token in a file of mode 0600) work with auth on, and neither token
appears in /proc/<pid>/cmdline, which every local user can read."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedplane.api_client import APIClient
from tests.e2e.conftest import CLIENT_ENV
from tests.e2e.harness import Federation, prepare_backend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "e2e-token-file-secret-of-at-least-thirty-two-bytes"
COMBINER = "combiner-t"
CLIENT = "client-t"


@pytest.fixture(scope="module")
def online(e2e_dir: Path) -> Iterator[tuple[Federation, dict[str, str]]]:
    backend = prepare_backend(e2e_dir)
    federation = Federation(backend, client_env=CLIENT_ENV, env={"FEDN_JWT_SECRET_KEY": SECRET})
    try:
        # The controller keeps the tokens it mints, so its database comes first.
        migrated = federation.manage("migrate", "-v0")
        assert migrated.returncode == 0, migrated.stderr
        tokens = {
            "admin": federation.mint("admin", "operator"),
            COMBINER: federation.mint("combiner", COMBINER),
            CLIENT: federation.mint("client", CLIENT),
        }
        federation.api.close()
        federation.api = APIClient("127.0.0.1", federation.port, timeout=30, token=tokens["admin"])
        federation.start_controller()
        federation.start_combiner(COMBINER, token=tokens[COMBINER])
        federation.upload_digits()
        federation.start_client(CLIENT, 0, 1, combiner=COMBINER, token=tokens[CLIENT])
        federation.wait_clients_online(1, timeout=90)
        yield federation, tokens
    finally:
        federation.stop()
        backend.close()


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


@pytest.mark.parametrize("name", [COMBINER, CLIENT])
def test_no_token_on_the_command_line(online: tuple[Federation, dict[str, str]], name: str) -> None:
    federation, tokens = online
    process = federation.processes[name]
    assert process.alive(), process.tail()
    argv = cmdline(process.popen.pid)
    assert argv[1:3] == ["-m", "combiner_node" if name == COMBINER else "fedplane.client"]
    for token in tokens.values():
        assert not any(token in arg for arg in argv), argv
    assert "--token" not in argv
    token_file = Path(argv[argv.index("--token-file") + 1])
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == tokens[name]
