"""Tokens from files and the environment: the shared rules, and the `fedplane` CLI using them."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedplane.cli import EXIT_OK, EXIT_USAGE, main
from fedplane.tests.test_api_client_unit import FakeController
from fedplane.tokenfile import (
    ARGV_TOKEN_WARNING,
    TokenFileError,
    read_token_file,
    resolve_token,
    write_token_file,
)

TOKEN_VARIABLES = ("FEDN_AUTH_TOKEN", "FEDPLANE_TOKEN_FILE", "FEDN_AUTH_SCHEME")


def test_read_token_file_strips_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  eyJ.abc.def \n\n")
    assert read_token_file(path) == "eyJ.abc.def"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "cannot read token file {path}: No such file or directory"),
        (lambda p: p.mkdir(), "cannot read token file {path}: Is a directory"),
        (lambda p: p.write_text(" \n\t\n"), "token file {path} is empty"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "token file {path} is not UTF-8 text"),
    ],
    ids=["missing", "directory", "empty", "binary"],
)
def test_a_bad_token_file_is_an_error_naming_the_path(tmp_path: Path, setup, message: str) -> None:
    path = tmp_path / "token"
    setup(path)
    with pytest.raises(TokenFileError) as error:
        read_token_file(path)
    assert str(error.value) == message.format(path=path)


def test_resolve_order_file_flag_then_token_flag_then_file_variable_then_token_variables(
    tmp_path: Path,
) -> None:
    flag_file, env_file = tmp_path / "flag", tmp_path / "env"
    flag_file.write_text("from-flag-file")
    env_file.write_text("from-env-file")
    environ = {"X_TOKEN_FILE": str(env_file), "X_TOKEN": "from-x", "FEDN_AUTH_TOKEN": "from-fedn"}

    def resolve(token_file: str | None, token: str | None, env: dict[str, str]) -> tuple[str | None, ...]:
        found = resolve_token(
            token_file=token_file,
            token=token,
            environ=env,
            file_variables=("X_TOKEN_FILE",),
            variables=("X_TOKEN", "FEDN_AUTH_TOKEN"),
        )
        return found.token, found.source

    assert resolve(str(flag_file), None, environ) == ("from-flag-file", "--token-file")
    assert resolve(None, "from-argv", environ) == ("from-argv", "--token")
    assert resolve(None, None, environ) == ("from-env-file", "X_TOKEN_FILE")
    del environ["X_TOKEN_FILE"]
    assert resolve(None, None, environ) == ("from-x", "X_TOKEN")
    del environ["X_TOKEN"]
    assert resolve(None, None, environ) == ("from-fedn", "FEDN_AUTH_TOKEN")
    assert resolve(None, None, {}) == (None, None)
    with pytest.raises(TokenFileError, match="either --token or --token-file"):
        resolve(str(flag_file), "from-argv", {})


def test_write_token_file_is_owner_only_and_never_overwrites(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "secrets" / "a.token", "tok")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_token_file(path) == "tok"
    with pytest.raises(FileExistsError):
        write_token_file(path, "other")


# --- the `fedplane` CLI --- #


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeController]:
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    controller = FakeController()
    controller.routes[("GET", "/get_controller_status")] = (200, {"state": "idle"})
    controller.start()
    yield controller
    controller.stop()


def status(fake: FakeController, *argv: str) -> int:
    return main(["--host", f"http://127.0.0.1:{fake.port}", "status", *argv])


def test_cli_reads_the_token_from_token_file(
    fake: FakeController, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "admin.token"
    token.write_text("file-token\n")
    assert status(fake, "--token-file", str(token)) == EXIT_OK
    assert fake.requests[-1].headers["authorization"] == "Bearer file-token"
    assert capsys.readouterr().err == ""


def test_cli_reads_the_token_from_the_environment(
    fake: FakeController, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "admin.token"
    token.write_text("env-file-token")
    monkeypatch.setenv("FEDN_AUTH_TOKEN", "env-token")
    assert status(fake) == EXIT_OK
    assert fake.requests[-1].headers["authorization"] == "Bearer env-token"
    # The file variable wins over the token variable.
    monkeypatch.setenv("FEDPLANE_TOKEN_FILE", str(token))
    assert status(fake) == EXIT_OK
    assert fake.requests[-1].headers["authorization"] == "Bearer env-file-token"


@pytest.mark.parametrize("variable", [False, True])
def test_cli_bad_token_file_is_a_usage_error_naming_the_path(
    fake: FakeController,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: bool,
) -> None:
    missing = tmp_path / "no-such.token"
    if variable:
        monkeypatch.setenv("FEDPLANE_TOKEN_FILE", str(missing))
        assert status(fake) == EXIT_USAGE
    else:
        assert status(fake, "--token-file", str(missing)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"fedplane: error: cannot read token file {missing}: No such file or directory\n"
    assert fake.requests == []


def test_cli_token_on_the_command_line_still_works_with_a_warning(
    fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status(fake, "--token", "argv-token") == EXIT_OK
    assert fake.requests[-1].headers["authorization"] == "Bearer argv-token"
    assert capsys.readouterr().err == f"fedplane: warning: {ARGV_TOKEN_WARNING}\n"
