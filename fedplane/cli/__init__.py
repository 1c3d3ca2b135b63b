"""The `fedplane` command: drive a fedplane (or FEDn 0.9.5) controller from a shell.

Exit codes: 0 ok, 1 the server refused or failed, 2 usage error, 3 controller unreachable.

`parser` builds the options and the controller connection, `commands` and `sessions` hold the
handlers, `entities` what `list`/`show` know of each entity, `output` the tables and JSON,
`context` what every handler shares (its Context, the exit codes, UsageError).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import requests

from fedplane.api_client import APIError
from fedplane.cli.commands import run_client
from fedplane.cli.context import (
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Context,
    UsageError,
)
from fedplane.cli.parser import DEFAULT_CONTROLLER_URL, build_parser, resolve_connection
from fedplane.tokenfile import TokenFileError

__all__ = [
    "DEFAULT_CONTROLLER_URL",
    "EXIT_OK",
    "EXIT_SERVER_ERROR",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "resolve_connection",
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "delegate_to_client", False):
            return run_client(extra, err)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        api = resolve_connection(args, err)
    except TokenFileError as exc:
        print(f"fedplane: error: {exc}", file=err)
        return EXIT_USAGE
    ctx = Context(api=api, as_json=bool(getattr(args, "json", False)), out=out, err=err)
    try:
        return args.handler(ctx, args)
    except UsageError as exc:
        print(f"fedplane: error: {exc}", file=err)
        return EXIT_USAGE
    except APIError as exc:
        print(f"error: {exc.message} (HTTP {exc.status_code})", file=err)
        return EXIT_SERVER_ERROR
    except requests.exceptions.SSLError as exc:
        print(
            f"error: TLS with {api.base_url} failed ({exc}); pass --ca-bundle PATH, or --insecure to skip verification",
            file=err,
        )
        return EXIT_UNREACHABLE
    except (requests.ConnectionError, requests.Timeout) as exc:
        print(f"error: cannot reach the controller at {api.base_url}: {exc}", file=err)
        return EXIT_UNREACHABLE
    except OSError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_SERVER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    finally:
        api.close()
