"""The edge client takes its token from a file or the environment, and its certificate paths from
options, variables or the settings yaml; bad paths stop it at once with the path in the message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedplane.client.cli import build_parser, config_from_args, main
from fedplane.client.config import ClientConfig, ConfigError
from fedplane.tokenfile import ARGV_TOKEN_WARNING

CONTROLLER = "http://127.0.0.1:1"


def config(*argv: str, environ: dict[str, str] | None = None) -> ClientConfig:
    args = build_parser().parse_args(["start", "--controller", CONTROLLER, "--name", "alice", *argv])
    return config_from_args(args, environ or {})


def test_token_from_token_file(tmp_path: Path) -> None:
    path = tmp_path / "alice.token"
    path.write_text("\n  file-token  \n")
    assert config("--token-file", str(path)).token == "file-token"


def test_token_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "alice.token"
    path.write_text("env-file-token")
    assert config(environ={"FEDN_AUTH_TOKEN": "env-token"}).token == "env-token"
    environ = {"FEDN_AUTH_TOKEN": "env-token", "FEDPLANE_CLIENT_TOKEN_FILE": str(path)}
    assert config(environ=environ).token == "env-file-token"
    assert config(environ={}).token is None


def test_options_win_over_the_environment_and_the_yaml_wins_over_both(tmp_path: Path) -> None:
    path = tmp_path / "alice.token"
    path.write_text("file-token")
    environ = {"FEDN_AUTH_TOKEN": "env-token"}
    assert config("--token-file", str(path), environ=environ).token == "file-token"
    settings = tmp_path / "client.yaml"
    settings.write_text("token: yaml-token\n")
    assert config("--init", str(settings), "--token-file", str(path), environ=environ).token == "yaml-token"
    # With a yaml token the environment is not looked at, so a stale variable cannot stop the client.
    stale = {"FEDPLANE_CLIENT_TOKEN_FILE": str(tmp_path / "gone")}
    assert config("--init", str(settings), environ=stale).token == "yaml-token"


def test_token_on_the_command_line_works_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedplane.client"):
        assert config("--token", "argv-token").token == "argv-token"
    assert "event=token_on_command_line" in caplog.text
    assert "--token-file" in ARGV_TOKEN_WARNING and "--token-file" in caplog.text


@pytest.mark.parametrize("how", ["option", "variable"])
def test_bad_token_file_exits_2_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    missing = tmp_path / "no-such.token"
    monkeypatch.delenv("FEDN_AUTH_TOKEN", raising=False)
    # main() would replace the root logger's handlers, pytest's capture among them.
    monkeypatch.setattr("fedplane.client.cli.setup_logging", lambda verbosity: None)
    argv = ["start", "--controller", CONTROLLER, "--name", "alice", "--workdir", str(tmp_path / "w")]
    if how == "option":
        argv += ["--token-file", str(missing)]
    else:
        monkeypatch.setenv("FEDPLANE_CLIENT_TOKEN_FILE", str(missing))
    assert main(argv) == 2
    assert (
        capsys.readouterr().err
        == f"fedplane client: cannot read token file {missing}: No such file or directory\n"
    )


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.token"
    path.write_text("\n")
    with pytest.raises(ValueError, match=f"token file {path} is empty"):
        config("--token-file", str(path))


def test_both_token_options_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("x")
    with pytest.raises(ValueError, match="either --token or --token-file"):
        config("--token", "y", "--token-file", str(path))


# --- certificate paths (mTLS) --- #


def test_certificate_paths_from_options_variables_and_yaml(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem", "yaml-cert.pem", "yaml-key.pem"):
        (tmp_path / name).write_text(f"-----{name}-----\n")
    found = config(
        "--client-cert",
        str(tmp_path / "cert.pem"),
        "--client-key",
        str(tmp_path / "key.pem"),
        "--ca",
        str(tmp_path / "ca.pem"),
    )
    assert (found.client_cert, found.client_key, found.ca) == (
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
        tmp_path / "ca.pem",
    )
    assert found.tls_required
    assert found.client_identity() == (b"-----key.pem-----\n", b"-----cert.pem-----\n")
    assert found.ca_certificates() == b"-----ca.pem-----\n"

    environ = {
        "FEDPLANE_CLIENT_CERT": str(tmp_path / "cert.pem"),
        "FEDPLANE_CLIENT_KEY": str(tmp_path / "key.pem"),
    }
    from_env = config(environ=environ)
    assert (from_env.client_cert, from_env.client_key, from_env.ca) == (
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
        None,
    )

    settings = tmp_path / "client.yaml"
    settings.write_text(
        f"client_cert: {tmp_path / 'yaml-cert.pem'}\nclient_key: {tmp_path / 'yaml-key.pem'}\n"
        f"ca: {tmp_path / 'ca.pem'}\n"
    )
    from_yaml = config("--init", str(settings), environ=environ)
    assert (from_yaml.client_cert, from_yaml.client_key, from_yaml.ca) == (
        tmp_path / "yaml-cert.pem",
        tmp_path / "yaml-key.pem",
        tmp_path / "ca.pem",
    )
    assert not config().tls_required


def test_certificate_without_key_and_missing_files_are_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("pem")
    with pytest.raises(ConfigError, match="needs its key"):
        config("--client-cert", str(cert))
    with pytest.raises(ConfigError, match=f"cannot read the client key {tmp_path / 'nokey.pem'}"):
        config("--client-cert", str(cert), "--client-key", str(tmp_path / "nokey.pem"))
    with pytest.raises(ConfigError, match=f"cannot read the CA bundle {tmp_path / 'noca.pem'}"):
        config("--ca", str(tmp_path / "noca.pem"))
