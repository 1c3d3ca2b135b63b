"""The combiner's token for the controller comes from a file or the environment; --token still
works but warns; a token file it cannot use stops it at start with the path in the message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from combiner_node.cli import build_parser, main, settings_from_args
from fedplane.tokenfile import ARGV_TOKEN_WARNING, TokenFileError


def token_for(tmp_path: Path, environ: dict[str, str], *argv: str) -> str | None:
    args = build_parser(environ).parse_args(
        ["--name", "c1", "--store", str(tmp_path), "--no-register", *argv]
    )
    return settings_from_args(args, environ).token


def test_token_from_token_file(tmp_path: Path) -> None:
    path = tmp_path / "c1.token"
    path.write_text("file-token\n")
    assert token_for(tmp_path, {}, "--token-file", str(path)) == "file-token"
    # The option wins over every variable.
    assert token_for(tmp_path, {"FEDPLANE_COMBINER_TOKEN": "env"}, "--token-file", str(path)) == "file-token"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"FEDN_AUTH_TOKEN": "fedn"}, "fedn"),
        ({"FEDN_AUTH_TOKEN": "fedn", "FEDPLANE_COMBINER_TOKEN": "own"}, "own"),
        ({"FEDPLANE_COMBINER_TOKEN": "own", "FEDPLANE_COMBINER_TOKEN_FILE": "{file}"}, "from-file"),
        ({}, None),
    ],
)
def test_token_from_the_environment(tmp_path: Path, environ: dict[str, str], expected: str | None) -> None:
    path = tmp_path / "c1.token"
    path.write_text("from-file")
    environ = {key: value.format(file=path) for key, value in environ.items()}
    assert token_for(tmp_path, environ) == expected


def test_token_on_the_command_line_works_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="combiner_node"):
        assert token_for(tmp_path, {}, "--token", "argv-token") == "argv-token"
    assert ARGV_TOKEN_WARNING in caplog.text


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c1.token"
    path.write_text("   \n")
    with pytest.raises(TokenFileError, match=f"token file {path} is empty"):
        token_for(tmp_path, {}, "--token-file", str(path))


@pytest.mark.parametrize("how", ["option", "variable"])
def test_bad_token_file_exits_2_naming_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # main() calls logging.basicConfig, which does nothing while pytest's handler is installed.
    missing = tmp_path / "no-such.token"
    argv = ["--name", "c1", "--store", str(tmp_path), "--no-register", "--port", "0"]
    environ: dict[str, str] = {}
    if how == "option":
        argv += ["--token-file", str(missing)]
    else:
        environ["FEDPLANE_COMBINER_TOKEN_FILE"] = str(missing)
    with caplog.at_level(logging.ERROR, logger="combiner_node"):
        assert main(argv, environ) == 2
    assert f"cannot start the combiner: cannot read token file {missing}: No such file or directory" in (
        caplog.text
    )
