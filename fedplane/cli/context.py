"""What every command handler shares: its Context, the exit codes, usage errors and small helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedplane.api_client import APIClient
from fedplane.cli.output import print_json

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """Bad input from the command line that argparse cannot catch by itself."""


@dataclass
class Context:
    api: APIClient
    as_json: bool
    out: TextIO
    err: TextIO


def require_file(path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no such file: {path}")
    return file


def report_result(ctx: Context, result: Mapping[str, Any]) -> int:
    """Print a FEDn `{success, message}` answer; a refusal (success false) is exit code 1."""
    if ctx.as_json:
        print_json(result, ctx.out)
    ok = result.get("success", True) is not False
    if not ctx.as_json:
        print(result.get("message", "done"), file=ctx.out if ok else ctx.err)
    return EXIT_OK if ok else EXIT_SERVER_ERROR


def parse_json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f'{option} must be a JSON object, e.g. \'{{"serveropt": "adam"}}\'')
    return value
