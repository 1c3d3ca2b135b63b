"""The argument parser, and the controller connection its options describe."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from fedplane.api_client import APIClient
from fedplane.cli.commands import (
    cmd_entity_list,
    cmd_entity_show,
    cmd_model_download,
    cmd_model_trail,
    cmd_model_upload,
    cmd_package_active,
    cmd_package_download,
    cmd_package_upload,
    cmd_status,
)
from fedplane.cli.entities import ENTITIES
from fedplane.cli.sessions import cmd_session_start, cmd_session_stop, cmd_session_watch
from fedplane.tokenfile import ARGV_TOKEN_WARNING, resolve_token

DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8092"


def connection_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand.

    After the subcommand their defaults are SUPPRESSed so they never overwrite a value given
    before it; `resolve_connection` fills in the real defaults.
    """
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("controller connection")
    group.add_argument(
        "--host",
        default=default,
        metavar="URL",
        help="controller URL (default: $FEDPLANE_CONTROLLER, $FEDN_CONTROLLER_URL or "
        + DEFAULT_CONTROLLER_URL
        + ")",
    )
    group.add_argument(
        "--token-file",
        default=default,
        metavar="PATH",
        help="file holding the auth token (default: $FEDPLANE_TOKEN_FILE, else $FEDN_AUTH_TOKEN)",
    )
    group.add_argument(
        "--token", default=default, help="the auth token itself; visible in ps, prefer --token-file"
    )
    group.add_argument(
        "--json", action="store_true", default=default if suppress else False, help="print raw JSON answers"
    )
    group.add_argument(
        "--timeout", type=float, default=default, metavar="SECONDS", help="per-request timeout (30)"
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--insecure",
        dest="verify",
        action="store_false",
        default=default,
        help="do not verify TLS certificates",
    )
    tls.add_argument(
        "--verify",
        dest="verify",
        action="store_true",
        default=default,
        help="verify TLS certificates (the default)",
    )
    group.add_argument(
        "--ca-bundle", default=default, metavar="PATH", help="verify TLS certificates against this CA bundle"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = connection_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="fedplane",
        description="Command line for the fedplane federated-learning control plane "
        "(also works against a FEDn 0.9.5 controller).",
        epilog="Exit codes: 0 ok, 1 server or logical error, 2 usage error, 3 controller unreachable.",
        parents=[connection_options(suppress=False)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", parents=[common], help="show the controller state")
    status.set_defaults(handler=cmd_status)

    more_actions = {
        "clients": "start",
        "models": "upload, download, trail",
        "packages": "upload, download, active",
        "sessions": "start, watch, stop",
    }
    entity_parsers: dict[str, argparse._SubParsersAction] = {}
    for entity in ENTITIES:
        actions_help = ", ".join(["list", "show", *filter(None, [more_actions.get(entity.name)])])
        entity_parser = commands.add_parser(
            entity.name,
            aliases=list(entity.aliases),
            help=f"{entity.name}: {actions_help}",
            description=f"Work with {entity.name}.",
        )
        actions = entity_parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = actions.add_parser("list", parents=[common], help=f"list {entity.name}, newest first")
        listing.add_argument("--n-max", type=positive_int, metavar="N", help="show at most N")
        for option, keyword, help_text in entity.filters:
            listing.add_argument(option, dest=keyword, metavar="VALUE", help=help_text)
        listing.set_defaults(handler=cmd_entity_list, entity=entity)
        show = actions.add_parser("show", parents=[common], help=f"show one {entity.noun}")
        show.add_argument("id", metavar="ID")
        show.set_defaults(handler=cmd_entity_show, entity=entity)
        entity_parsers[entity.name] = actions

    packages = entity_parsers["packages"]
    upload = packages.add_parser(
        "upload", parents=[common], help="upload a compute package and make it active"
    )
    upload.add_argument("path", metavar="PATH", help=".tgz, .tar.gz or .tar.bz2 holding fedn.yaml")
    upload.add_argument("--helper", default="numpyhelper", help="model helper of the package (numpyhelper)")
    upload.add_argument("--name", help="a name to tell packages apart")
    upload.add_argument("--description", help="free text shown with the package")
    upload.set_defaults(handler=cmd_package_upload)
    download = packages.add_parser("download", parents=[common], help="download the active compute package")
    download.add_argument("path", metavar="PATH", help="file to write")
    download.set_defaults(handler=cmd_package_download)
    active = packages.add_parser("active", parents=[common], help="show the active compute package")
    active.set_defaults(handler=cmd_package_active)

    models = entity_parsers["models"]
    upload = models.add_parser(
        "upload", parents=[common], help="upload a seed model (.npz) and make it active"
    )
    upload.add_argument("path", metavar="PATH")
    upload.set_defaults(handler=cmd_model_upload)
    download = models.add_parser("download", parents=[common], help="download a model file")
    download.add_argument("id", metavar="ID", help='model id or uuid, or "active" for the active model')
    download.add_argument("path", metavar="PATH", help="file to write")
    download.set_defaults(handler=cmd_model_download)
    trail = models.add_parser("trail", parents=[common], help="show a model's ancestors, oldest first")
    trail.add_argument("id", metavar="ID", nargs="?", help="model id (default: the active model)")
    trail.add_argument("--n-max", type=positive_int, metavar="N")
    trail.set_defaults(handler=cmd_model_trail)

    sessions = entity_parsers["sessions"]
    start = sessions.add_parser("start", parents=[common], help="start a training session")
    start.add_argument("--id", help="session id (default: one is generated)")
    start.add_argument("--rounds", type=positive_int, default=5, help="number of rounds (5)")
    start.add_argument("--aggregator", default="fedavg", help="fedavg, fedopt, ... (fedavg)")
    start.add_argument(
        "--aggregator-kwargs", metavar="JSON", help='aggregator options, e.g. \'{"serveropt": "adam"}\''
    )
    start.add_argument("--model-id", help="seed model (default: the active model)")
    start.add_argument("--round-timeout", type=positive_int, default=180, metavar="SECONDS", help="(180)")
    start.add_argument(
        "--round-buffer-size", type=int, default=-1, metavar="N", help="-1: all selected clients"
    )
    start.add_argument("--min-clients", type=positive_int, default=1, metavar="N", help="(1)")
    start.add_argument("--requested-clients", type=positive_int, default=8, metavar="N", help="(8)")
    start.add_argument("--helper", default="numpyhelper", help="(numpyhelper)")
    start.add_argument("--no-validate", action="store_true", help="skip validation after each round")
    start.add_argument("--keep-models", action="store_true", help="keep combiners' intermediate models")
    start.add_argument(
        "--dp",
        metavar="JSON",
        help="central differential privacy (fedplane), e.g. "
        '\'{"noise_multiplier": 1.1, "clip_norm": 1.0, "target_epsilon": 8}\'',
    )
    start.add_argument(
        "--mode",
        choices=["sync", "async"],
        help="async: buffered asynchronous aggregation (fedplane); --rounds counts model versions",
    )
    start.add_argument(
        "--fedbuff",
        metavar="JSON",
        help='async parameters, e.g. \'{"buffer_size": 4, "max_staleness": 3}\'',
    )
    add_watch_options(start)
    start.add_argument("--watch", action="store_true", help="follow the session until it ends")
    start.set_defaults(handler=cmd_session_start)
    watch = sessions.add_parser("watch", parents=[common], help="follow a session round by round")
    watch.add_argument("id", metavar="ID")
    add_watch_options(watch)
    watch.set_defaults(handler=cmd_session_watch)
    stop = sessions.add_parser("stop", parents=[common], help="ask a running session to stop")
    stop.add_argument("id", metavar="ID")
    stop.set_defaults(handler=cmd_session_stop)

    # Everything after `client start` belongs to the edge client's own parser, --help included.
    client_start = entity_parsers["clients"].add_parser(
        "start", add_help=False, help="start an edge client (see `fedplane client start --help`)"
    )
    client_start.set_defaults(handler=None, delegate_to_client=True)
    return parser


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch-timeout",
        dest="timeout_watch",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="give up watching after this long (one day)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS", help="(2)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def resolve_connection(args: argparse.Namespace, err: TextIO = sys.stderr) -> APIClient:
    """The APIClient the options describe; TokenFileError for a token file that cannot be used."""
    token = resolve_token(
        token_file=getattr(args, "token_file", None),
        token=getattr(args, "token", None),
        environ=os.environ,
        file_variables=("FEDPLANE_TOKEN_FILE",),
        variables=("FEDN_AUTH_TOKEN",),
    )
    if token.from_argv:
        print(f"fedplane: warning: {ARGV_TOKEN_WARNING}", file=err)
    host = (
        getattr(args, "host", None)
        or os.environ.get("FEDPLANE_CONTROLLER")
        or os.environ.get("FEDN_CONTROLLER_URL")
        or DEFAULT_CONTROLLER_URL
    )
    if "://" not in host:
        host = f"http://{host}"
    verify: bool | str = getattr(args, "verify", None) is not False
    ca_bundle = getattr(args, "ca_bundle", None)
    if ca_bundle:
        verify = ca_bundle
    timeout = getattr(args, "timeout", None) or 30.0
    return APIClient(host, verify=verify, token=token.token, timeout=timeout)
