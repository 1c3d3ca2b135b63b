"""fedn.yaml: parsing and checking it, finding it in a folder, and checking an archive's without extracting it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedplane.packages.archive import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    PackageError,
    _checked,
    _normalise_member_name,
    _OpenArchive,
)

FEDN_YAML = "fedn.yaml"


class InvalidPackage(PackageError):
    """A well-formed archive that is not a compute package (no or bad fedn.yaml)."""


@dataclass(frozen=True)
class PackageInfo:
    """What `inspect_archive` learned about a package without extracting it."""

    kind: str
    root: str  # "" when fedn.yaml is at the archive root, else the single top folder
    config: dict[str, Any]
    entry_points: dict[str, str | list[str]]
    member_count: int
    total_bytes: int
    python_env: str | None = None
    files: list[str] = field(default_factory=list)


def parse_fedn_yaml(text: str | bytes, *, source: str = FEDN_YAML) -> dict[str, Any]:
    """Parse and validate fedn.yaml content: a mapping with an `entry_points` mapping."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidPackage(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidPackage(f"{source} must be a mapping")
    entry_points = config.get("entry_points")
    if not isinstance(entry_points, dict) or not entry_points:
        raise InvalidPackage(f"{source} has no 'entry_points' mapping")
    for name, spec in entry_points.items():
        _command_of(name, spec, source)
    python_env = config.get("python_env")
    if python_env is not None:
        if not isinstance(python_env, str) or not python_env:
            raise InvalidPackage(f"{source}: python_env must be a file name")
        _normalise_member_name(python_env)
    return config


def _command_of(name: object, spec: object, source: str = FEDN_YAML) -> str | list[str]:
    if not isinstance(name, str) or not name:
        raise InvalidPackage(f"{source}: entry point names must be strings")
    command = spec.get("command") if isinstance(spec, dict) else None
    if isinstance(command, str) and command.strip():
        return command
    if isinstance(command, list) and command and all(isinstance(part, str) for part in command):
        return list(command)
    raise InvalidPackage(f"{source}: entry point '{name}' needs a 'command' (a string or a list of strings)")


def entry_points_of(config: Mapping[str, Any]) -> dict[str, str | list[str]]:
    return {name: _command_of(name, spec) for name, spec in config.get("entry_points", {}).items()}


def read_fedn_yaml(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / FEDN_YAML
    if not path.is_file():
        raise InvalidPackage(f"no {FEDN_YAML} in {directory}")
    return parse_fedn_yaml(path.read_bytes(), source=str(path))


def find_package_root(directory: str | os.PathLike[str]) -> Path:
    """The first folder (breadth-first, sorted) under `directory` holding a fedn.yaml."""
    base = Path(directory)
    queue = [base]
    while queue:
        current = queue.pop(0)
        if (current / FEDN_YAML).is_file():
            return current
        queue.extend(sorted(p for p in current.iterdir() if p.is_dir() and not p.is_symlink()))
    raise InvalidPackage(f"no {FEDN_YAML} found under {directory}")


def inspect_archive(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> PackageInfo:
    """Validate a package archive without extracting it (the controller's upload check)."""
    with _OpenArchive(Path(path)) as opened:
        members = list(_checked(opened.members(), max_bytes, max_members))
        files = [m.name for m in members if not m.is_dir]
        if FEDN_YAML in files:
            root = ""
        else:
            tops = {name.split("/")[0] for name in (m.name for m in members)}
            candidate = f"{next(iter(tops))}/{FEDN_YAML}" if len(tops) == 1 else ""
            if not candidate or candidate not in files:
                raise InvalidPackage(f"{FEDN_YAML} must be at the archive root or in its single top folder")
            root = next(iter(tops))
        yaml_name = f"{root}/{FEDN_YAML}" if root else FEDN_YAML
        with opened.open_member(yaml_name) as handle:
            raw = handle.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise InvalidPackage(f"{FEDN_YAML} is larger than 1 MiB")
        config = parse_fedn_yaml(raw)
        python_env = config.get("python_env")
        if python_env:
            env_name = f"{root}/{python_env}" if root else python_env
            if _normalise_member_name(env_name) not in files:
                raise InvalidPackage(
                    f"{FEDN_YAML} names python_env '{python_env}', which is not in the package"
                )
        return PackageInfo(
            kind=opened.kind,
            root=root,
            config=config,
            entry_points=entry_points_of(config),
            member_count=len(members),
            total_bytes=sum(m.size for m in members),
            python_env=python_env,
            files=files,
        )
