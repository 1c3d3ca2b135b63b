"""`python -m fedplane.client start ...` and the `fedplane client start` subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from fedplane.chunkmemory import keep_freed_chunk_memory
from fedplane.client.client import EdgeClient
from fedplane.client.config import ClientConfig, ConfigError, build_config, read_settings_yaml
from fedplane.client.logs import log_event, setup_logging
from fedplane.tokenfile import ARGV_TOKEN_WARNING, resolve_token

logger = logging.getLogger("fedplane.client")

TOKEN_FILE_VARIABLE = "FEDPLANE_CLIENT_TOKEN_FILE"
CLIENT_CERT_VARIABLE = "FEDPLANE_CLIENT_CERT"
CLIENT_KEY_VARIABLE = "FEDPLANE_CLIENT_KEY"
# FEDn 0.9.5's variable for the CA (or certificate) that the combiner's certificate is checked against.
ROOT_CERT_VARIABLE = "FEDN_GRPC_ROOT_CERT_PATH"


def _add_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", help="controller base URL, e.g. http://127.0.0.1:8092")
    parser.add_argument("-n", "--name", help="client name (letters, digits, _ and -); default client<8 hex>")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the auth token (role client) for the controller and the combiner "
        f"(default ${TOKEN_FILE_VARIABLE}, else $FEDN_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--token",
        help="the auth token itself; visible to every local user in ps, prefer --token-file",
    )
    parser.add_argument("-c", "--preferred-combiner", help="ask the controller for this combiner")
    parser.add_argument("--secure", action="store_true", default=None, help="TLS to the combiner")
    parser.add_argument("--verify", action="store_true", default=None, help="verify TLS certificates")
    parser.add_argument(
        "--ca",
        metavar="PATH",
        help="CA bundle (PEM) to check the combiner's certificate against; switches TLS on "
        f"(${ROOT_CERT_VARIABLE} works as in FEDn)",
    )
    parser.add_argument(
        "--client-cert",
        metavar="PATH",
        help=f"certificate (PEM) to present to the combiner (mTLS; default ${CLIENT_CERT_VARIABLE})",
    )
    parser.add_argument(
        "--client-key",
        metavar="PATH",
        help=f"private key (PEM) of --client-cert (default ${CLIENT_KEY_VARIABLE})",
    )
    parser.add_argument("--checksum", help="expected sha256 of the compute package")
    parser.add_argument("--init", metavar="SETTINGS_YAML", help="FEDn-style client settings; its values win")
    parser.add_argument("--workdir", help="where packages are unpacked (default ./package)")
    parser.add_argument(
        "--trainer", action=argparse.BooleanOptionalAction, default=None, help="take training tasks"
    )
    parser.add_argument(
        "--validator", action=argparse.BooleanOptionalAction, default=None, help="take validation tasks"
    )
    parser.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats (default 2)")
    parser.add_argument(
        "--reconnect-after-missed-heartbeat",
        type=int,
        help="missed heartbeats before re-assignment (default 30)",
    )
    parser.add_argument(
        "--task-timeout", type=float, help="seconds a train/validate run may take (default 3600)"
    )
    parser.add_argument(
        "--transfer-timeout", type=float, help="seconds a model transfer may take (default 600)"
    )
    parser.add_argument("--verbosity", default="INFO", help="log level (default INFO)")
    parser.set_defaults(func=run_start)


def add_client_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `client start` to a parent CLI's subparsers; the chosen command's `func(args)` runs it."""
    client = subparsers.add_parser("client", help="run an edge client")
    commands = client.add_subparsers(dest="client_command", required=True)
    _add_start_options(commands.add_parser("start", help="connect to a controller and take tasks"))
    return client


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ClientConfig:
    """The client's settings from its options, the --init yaml and the environment (ConfigError)."""
    environ = os.environ if environ is None else environ
    settings = read_settings_yaml(args.init) if args.init else {}
    # A token in the settings yaml wins, as every yaml value does; the environment comes last.
    resolved = resolve_token(
        token_file=args.token_file,
        token=args.token,
        environ={} if settings.get("token") else environ,
        file_variables=(TOKEN_FILE_VARIABLE,),
        variables=("FEDN_AUTH_TOKEN",),
    )
    if resolved.from_argv:
        log_event(logger, logging.WARNING, "token_on_command_line", hint=ARGV_TOKEN_WARNING)
    config = build_config(
        {
            "controller_url": args.controller,
            "name": args.name,
            "token": resolved.token,
            "preferred_combiner": args.preferred_combiner,
            "secure": args.secure,
            "verify": args.verify,
            "ca": args.ca,
            "client_cert": args.client_cert or environ.get(CLIENT_CERT_VARIABLE) or None,
            "client_key": args.client_key or environ.get(CLIENT_KEY_VARIABLE) or None,
            "checksum": args.checksum,
            "workdir": args.workdir,
            "trainer": args.trainer,
            "validator": args.validator,
            "heartbeat_interval": args.heartbeat_interval,
            "reconnect_after_missed_heartbeat": args.reconnect_after_missed_heartbeat,
            "task_timeout": args.task_timeout,
            "transfer_timeout": args.transfer_timeout,
        },
        settings,
    )
    # Read the certificate files now, so that a wrong path stops the client at once.
    config.client_identity()
    config.ca_certificates()
    return config


def run_start(args: argparse.Namespace) -> int:
    try:
        setup_logging(args.verbosity)
        config = config_from_args(args)
    except (ConfigError, ValueError) as exc:
        print(f"fedplane client: {exc}", file=sys.stderr)
        return 2
    client = EdgeClient(config)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        client.stop()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return client.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedplane.client", description="fedplane edge client")
    commands = parser.add_subparsers(dest="client_command", required=True)
    _add_start_options(commands.add_parser("start", help="connect to a controller and take tasks"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_chunk_memory()
    return int(args.func(args))
