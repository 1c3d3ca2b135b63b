"""`python -m combiner_node`: options (each also from the environment), registration, serving."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from combiner_node.auth import AuthSettings
from combiner_node.gcpacing import CollectorPacing
from combiner_node.node import CombinerNode, NodeSettings
from combiner_node.reporter import RegistrationRefused, RegistrationTimeout, register_combiner
from combiner_node.server import TlsConfig
from combiner_node.store import StoreError, store_from_spec
from fedplane.chunkmemory import keep_freed_chunk_memory
from fedplane.tokenfile import ARGV_TOKEN_WARNING, resolve_token

logger = logging.getLogger("combiner_node")

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
ENV_PREFIX = "FEDPLANE_COMBINER_"


def _name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"invalid combiner name {value!r}: use letters, digits, _ and -")
    return value


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


BYTE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _byte_size(value: str) -> int:
    """A size in bytes, with an optional binary unit: 4294967296, 4G, 512M."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", value, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {value!r} (e.g. 4G, 512M, 1048576)")
    return int(match.group(1)) * BYTE_UNITS[match.group(2).upper()]


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(key: str, default: str | None = None) -> str | None:
        return environ.get(ENV_PREFIX + key, default)

    parser = argparse.ArgumentParser(
        prog="python -m combiner_node",
        description="Run a fedplane combiner node. Every option can also be set with "
        f"{ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}NAME).",
    )
    parser.add_argument("--name", type=_name, default=env("NAME"), required=env("NAME") is None)
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"), help="address clients are told to use")
    parser.add_argument("--bind", default=env("BIND"), help="address to listen on (default: --host)")
    parser.add_argument(
        "--port", type=int, default=int(env("PORT", "12080") or 12080), help="0 = any free port"
    )
    parser.add_argument(
        "--controller", default=env("CONTROLLER"), help="controller URL, e.g. http://127.0.0.1:8092"
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        default=env("TOKEN_FILE"),
        help=f"file holding the token for the controller (default {ENV_PREFIX}TOKEN_FILE)",
    )
    parser.add_argument(
        "--token",
        help=f"token for the controller; visible in ps, prefer --token-file, {ENV_PREFIX}TOKEN "
        "or FEDN_AUTH_TOKEN",
    )
    parser.add_argument(
        "--store",
        default=env("STORE", "var/media"),
        help="s3://<bucket> (S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION) or a directory",
    )
    parser.add_argument("--cert", default=env("CERT"), help="TLS certificate (PEM)")
    parser.add_argument("--key", default=env("KEY"), help="TLS private key (PEM)")
    parser.add_argument(
        "--client-ca",
        metavar="PATH",
        default=env("CLIENT_CA"),
        help="CA bundle (PEM) for client certificates: every caller must present one it signed (mTLS; "
        "needs --cert and --key)",
    )
    parser.add_argument("--max-clients", type=int, default=int(env("MAX_CLIENTS", "30") or 30))
    parser.add_argument(
        "--online-window",
        type=_positive_float,
        default=float(env("ONLINE_WINDOW", "10") or 10),
        help="seconds a client stays online after its last sign of life",
    )
    parser.add_argument("--workdir", default=env("WORKDIR"), help="spool folder (default: a temp dir)")
    parser.add_argument(
        "--update-size-factor",
        type=_positive_float,
        default=env("UPDATE_SIZE_FACTOR", "2"),
        help="a model update may be this many times the round's global model, plus the margin",
    )
    parser.add_argument(
        "--update-size-margin",
        type=_byte_size,
        default=env("UPDATE_SIZE_MARGIN", "16M"),
        help="bytes an update may exceed factor x global model by (default 16M)",
    )
    parser.add_argument(
        "--max-upload-bytes",
        type=_byte_size,
        default=env("MAX_UPLOAD_BYTES"),
        help="cap on any model update whatever the global model (default: what the disk holds)",
    )
    parser.add_argument(
        "--disk-reserve",
        type=_byte_size,
        default=env("DISK_RESERVE", "1G"),
        help="free space an upload never takes on the workdir's disk (default 1G)",
    )
    parser.add_argument(
        "--register-deadline",
        type=_positive_float,
        default=float(env("REGISTER_DEADLINE")) if env("REGISTER_DEADLINE") else None,
        help="give up registering after this many seconds (default: keep trying)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        default=env("NO_REGISTER", "") in ("1", "true"),
        help="do not announce to the controller (tests)",
    )
    parser.add_argument("--grace", type=_positive_float, default=5.0, help="shutdown grace period (s)")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> NodeSettings:
    tls = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise ValueError("--cert and --key must be given together")
        client_ca = Path(args.client_ca).read_bytes() if args.client_ca else None
        tls = TlsConfig(Path(args.cert).read_bytes(), Path(args.key).read_bytes(), client_ca)
    elif args.client_ca:
        raise ValueError("--client-ca needs --cert and --key: client certificates need TLS")
    resolved = resolve_token(
        token_file=args.token_file,
        token=args.token,
        environ=environ,
        file_variables=(ENV_PREFIX + "TOKEN_FILE",),
        variables=(ENV_PREFIX + "TOKEN", "FEDN_AUTH_TOKEN"),
    )
    if resolved.from_argv:
        logger.warning("%s", ARGV_TOKEN_WARNING)
    if args.max_clients < 1:
        raise ValueError("--max-clients must be at least 1")
    return NodeSettings(
        name=args.name,
        store=store_from_spec(args.store, dict(environ)),
        bind=args.bind or args.host,
        port=args.port,
        controller_url=args.controller,
        token=resolved.token,
        auth_scheme=environ.get("FEDN_AUTH_SCHEME", "Bearer"),
        auth=AuthSettings.from_env(environ),
        tls=tls,
        max_clients=args.max_clients,
        online_window=args.online_window,
        workdir=Path(args.workdir) if args.workdir else None,
        update_size_factor=args.update_size_factor,
        update_size_margin=args.update_size_margin,
        max_upload_bytes=args.max_upload_bytes,
        disk_reserve_bytes=args.disk_reserve,
    )


def auth_summary(settings: NodeSettings) -> tuple[int, str]:
    """The log level and line that tell an operator how this node treats tokens."""
    if settings.auth is None:
        return logging.INFO, "grpc auth off (FEDN_JWT_SECRET_KEY unset)"
    if settings.auth.allow_tokenless_clients:
        return logging.WARNING, (
            "grpc auth on; client rpcs without a token are let in and their sender names go unchecked "
            "(FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS): use it only on a trusted network"
        )
    return (
        logging.INFO,
        "grpc auth on: client rpcs need a client token naming their sender, control rpcs an admin "
        "token or this combiner's own",
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    keep_freed_chunk_memory()
    if not args.no_register and not args.controller:
        logger.error("--controller is required unless --no-register is given")
        return 2
    try:
        settings = settings_from_args(args, environ)
        node = CombinerNode(settings)
    except (ValueError, OSError, StoreError) as exc:
        logger.error("cannot start the combiner: %s", exc)
        return 2

    logger.log(*auth_summary(settings))
    if settings.tls is not None:
        logger.info(
            "grpc tls on; %s",
            "client certificates required (--client-ca)"
            if settings.tls.client_ca_pem
            else "no client certificates asked for",
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal received, stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    # This process is the combiner alone: its collector can be paced for its thousands of streams.
    pacing = CollectorPacing()
    pacing.start()
    try:
        if not args.no_register:
            register_combiner(
                args.controller,
                {
                    "combiner_id": settings.name,
                    "address": args.host,
                    "fqdn": None,
                    "port": node.port,
                    "secure_grpc": settings.tls is not None,
                    # The controller sends new clients elsewhere once this combiner is full.
                    "max_clients": settings.max_clients,
                },
                token=settings.token,
                auth_scheme=settings.auth_scheme,
                deadline=args.register_deadline,
                stop=stop,
            )
        print(f"combiner {settings.name} listening on {settings.bind}:{node.port}", flush=True)
        stop.wait()
    except RegistrationRefused as exc:
        logger.error("%s", exc)
        return 1
    except RegistrationTimeout as exc:
        if not stop.is_set():
            logger.error("%s", exc)
            return 1
    finally:
        pacing.stop()
        node.stop(grace=args.grace)
    return 0
