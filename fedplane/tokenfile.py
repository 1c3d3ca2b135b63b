"""Tokens from a file or the environment, so that they stay off the command line.

Every local user can read a process's argv (`ps`, /proc/<pid>/cmdline); its environment and a file
of mode 0600 only its owner can. The edge client, the combiner node and the `fedplane` CLI all pick
their token here, in the same order: --token-file, --token, the *_TOKEN_FILE variable, the token
variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ARGV_TOKEN_WARNING = (
    "--token puts the token on the command line, where every local user can read it (ps); "
    "use --token-file PATH or an environment variable instead"
)


class TokenFileError(ValueError):
    """A token file that is missing, unreadable or empty."""


@dataclass(frozen=True)
class ResolvedToken:
    token: str | None
    # Where it came from ("--token-file", "--token", a variable's name) or None when there is none.
    source: str | None

    @property
    def from_argv(self) -> bool:
        return self.source == "--token"


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The file's content without surrounding whitespace; TokenFileError naming the path otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"token file {path} is not UTF-8 text") from exc
    token = text.strip()
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    return token


def resolve_token(
    *,
    token_file: str | None,
    token: str | None,
    environ: Mapping[str, str],
    file_variables: Sequence[str] = (),
    variables: Sequence[str] = (),
) -> ResolvedToken:
    """The first of: --token-file, --token, the first set file variable, the first set token variable."""
    if token_file and token:
        raise TokenFileError("give either --token or --token-file, not both")
    if token_file:
        return ResolvedToken(read_token_file(token_file), "--token-file")
    if token:
        return ResolvedToken(token, "--token")
    for name in file_variables:
        path = environ.get(name)
        if path:
            return ResolvedToken(read_token_file(path), name)
    for name in variables:
        value = environ.get(name, "").strip()
        if value:
            return ResolvedToken(value, name)
    return ResolvedToken(None, None)


def write_token_file(path: str | os.PathLike[str], token: str) -> Path:
    """Write `token` to a new file only its owner can read (mode 0600) and return its path."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL: never write a secret into a file someone else may have made (and may read).
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return target
