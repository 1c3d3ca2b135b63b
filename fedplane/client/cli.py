"""`python -m fedplane.client start ...` and the `fedplane client start` subcommand."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from fedplane.client.client import EdgeClient
from fedplane.client.config import ConfigError, build_config, read_settings_yaml
from fedplane.client.logs import setup_logging


def _add_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", help="controller base URL, e.g. http://127.0.0.1:8092")
    parser.add_argument("-n", "--name", help="client name (letters, digits, _ and -); default client<8 hex>")
    parser.add_argument(
        "--token",
        help="auth token (role client) for the controller and the combiner, sent as '<FEDN_AUTH_SCHEME> <token>'",
    )
    parser.add_argument("-c", "--preferred-combiner", help="ask the controller for this combiner")
    parser.add_argument("--secure", action="store_true", default=None, help="TLS to the combiner")
    parser.add_argument("--verify", action="store_true", default=None, help="verify TLS certificates")
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


def run_start(args: argparse.Namespace) -> int:
    try:
        setup_logging(args.verbosity)
        settings = read_settings_yaml(args.init) if args.init else {}
        config = build_config(
            {
                "controller_url": args.controller,
                "name": args.name,
                "token": args.token,
                "preferred_combiner": args.preferred_combiner,
                "secure": args.secure,
                "verify": args.verify,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedplane.client", description="fedplane edge client")
    commands = parser.add_subparsers(dest="client_command", required=True)
    _add_start_options(commands.add_parser("start", help="connect to a controller and take tasks"))
    args = parser.parse_args(argv)
    return int(args.func(args))
