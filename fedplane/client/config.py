"""Edge client settings: CLI options and FEDn-style settings yaml merged into one typed object."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

VALID_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


class ConfigError(ValueError):
    """Settings that cannot work (missing controller, bad name, unreadable yaml)."""


def default_name() -> str:
    return "client" + uuid.uuid4().hex[:8]


def default_workdir() -> Path:
    # FEDn 0.9.5 unpacks into <cwd>/<FEDN_PACKAGE_EXTRACT_DIR>, "package" by default.
    return Path.cwd() / os.environ.get("FEDN_PACKAGE_EXTRACT_DIR", "package")


@dataclass(frozen=True)
class ClientConfig:
    controller_url: str
    name: str = field(default_factory=default_name)
    token: str | None = None
    preferred_combiner: str | None = None
    secure: bool = False
    verify: bool = False
    checksum: str | None = None
    workdir: Path = field(default_factory=default_workdir)
    trainer: bool = True
    validator: bool = True
    heartbeat_interval: float = 2.0
    # Consecutive failed heartbeats before the combiner counts as gone and the client asks the
    # controller for a (possibly new) assignment.
    reconnect_after_missed_heartbeat: int = 30
    task_timeout: float = 3600.0
    transfer_timeout: float = 600.0
    request_timeout: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    auth_scheme: str = field(default_factory=lambda: os.environ.get("FEDN_AUTH_SCHEME", "Bearer"))
    url_prefix: str = field(default_factory=lambda: os.environ.get("FEDN_CUSTOM_URL_PREFIX", ""))
    # mTLS to the combiner: the certificate and key this client presents, and the CA it trusts for
    # the combiner's certificate. Each one alone switches TLS on.
    client_cert: Path | None = None
    client_key: Path | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if not self.controller_url:
            raise ConfigError("no controller given: use --controller URL or discover_host in the --init yaml")
        if not self.controller_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"controller URL must start with http:// or https://, got {self.controller_url!r}"
            )
        if not VALID_NAME.match(self.name):
            raise ConfigError(f"client name {self.name!r} may only contain letters, digits, '_' and '-'")
        if self.heartbeat_interval <= 0 or self.task_timeout <= 0 or self.transfer_timeout <= 0:
            raise ConfigError("heartbeat interval and timeouts must be positive")
        if self.reconnect_after_missed_heartbeat < 1:
            raise ConfigError("reconnect_after_missed_heartbeat must be at least 1")
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError("a client certificate needs its key: give both client_cert and client_key")

    @property
    def base_url(self) -> str:
        return self.controller_url.rstrip("/") + self.url_prefix

    def with_token(self, token: str) -> ClientConfig:
        return replace(self, token=token)

    @property
    def tls_required(self) -> bool:
        return self.secure or self.ca is not None or self.client_cert is not None

    def client_identity(self) -> tuple[bytes, bytes] | None:
        """(private key, certificate chain) PEM to present to the combiner, read now."""
        if self.client_cert is None or self.client_key is None:
            return None
        return read_pem(self.client_key, "client key"), read_pem(self.client_cert, "client certificate")

    def ca_certificates(self) -> bytes | None:
        return read_pem(self.ca, "CA bundle") if self.ca is not None else None


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise ConfigError(f"the {what} {path} is empty")
    return data


def controller_url_from(host: str, port: int | str | None, *, force_ssl: bool = False) -> str:
    """FEDn's discover_host/discover_port/force_ssl as one base URL."""
    base = host.rstrip("/") if "://" in host else f"{'https' if force_ssl else 'http'}://{host}"
    return f"{base}:{port}" if port not in (None, "") else base


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if value is None:
        return False
    raise ConfigError(f"setting {key!r} must be true or false, got {value!r}")


def read_settings_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must be a mapping")
    return data


_BOOL_KEYS = {"secure", "verify", "trainer", "validator"}
_FLOAT_KEYS = {"heartbeat_interval", "task_timeout", "transfer_timeout", "request_timeout"}
_PATH_KEYS = {"workdir", "client_cert", "client_key", "ca"}


def build_config(cli: dict[str, Any], settings: dict[str, Any] | None = None) -> ClientConfig:
    """Merge CLI values with a FEDn-style settings yaml; as in FEDn, yaml values win."""
    values = {k: v for k, v in cli.items() if v is not None}
    settings = dict(settings or {})
    if settings.get("discover_host"):
        values["controller_url"] = controller_url_from(
            str(settings["discover_host"]),
            settings.get("discover_port"),
            force_ssl=_as_bool(settings.get("force_ssl", False), "force_ssl"),
        )
    known = {f.name for f in fields(ClientConfig)}
    for key, value in settings.items():
        if key in ("discover_host", "discover_port", "force_ssl"):
            continue
        if key == "preferred_combiner":
            values[key] = value if value not in (False, None, "", "False", "false") else None
        elif key in _BOOL_KEYS:
            values[key] = _as_bool(value, key)
        elif key in _FLOAT_KEYS:
            values[key] = float(value)
        elif key == "reconnect_after_missed_heartbeat":
            values[key] = int(value)
        elif key in _PATH_KEYS:
            values[key] = Path(value) if value not in (None, "") else None
        elif key in ("name", "token", "checksum") and value is not None:
            values[key] = str(value)
        elif key in known:
            values[key] = value
        # Other FEDn keys (network_id, client_id, verbosity, logfile, ...) carry no meaning here.
    if "controller_url" not in values:
        raise ConfigError("no controller given: use --controller URL or discover_host in the --init yaml")
    for key in _PATH_KEYS:
        if values.get(key) is not None:
            values[key] = Path(values[key]).absolute()
        else:
            values.pop(key, None)
    try:
        return ClientConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
