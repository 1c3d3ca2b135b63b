"""The three controller routes a client uses: /add_client, /download_package, /get_package_checksum."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import Any

import requests

from fedplane.client.config import ClientConfig
from fedplane.client.logs import log_event
from fedplane.packages.archive import DEFAULT_MAX_BYTES, archive_kind

logger = logging.getLogger(__name__)

PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2")


class ControllerRejected(RuntimeError):
    """A definitive no from the controller (400, 401): retrying cannot help."""


class ControllerUnavailable(RuntimeError):
    """The controller is unreachable, busy or not ready yet: retry later."""


@dataclass(frozen=True)
class Assignment:
    """The combiner the controller assigned this client to (FEDn's /add_client answer)."""

    host: str
    port: int
    fqdn: str | None
    certificate: str | None
    helper_type: str | None
    package: str
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Assignment:
        try:
            host = str(body["host"])
            port = int(body["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ControllerUnavailable(f"assignment without a usable host/port: {body!r}") from exc
        if not host:
            raise ControllerUnavailable("assignment with an empty combiner host")
        fqdn = body.get("fqdn")
        return cls(
            host=host,
            port=port,
            fqdn=str(fqdn) if fqdn is not None else None,
            certificate=body.get("certificate") or None,
            helper_type=body.get("helper_type"),
            package=str(body.get("package", "remote")),
            raw=body,
        )


class ControllerClient:
    def __init__(self, config: ClientConfig, session: requests.Session | None = None):
        self.config = config
        self._session = session or requests.Session()
        self._token = config.token

    @property
    def token(self) -> str | None:
        return self._token

    def _headers(self) -> dict[str, str]:
        # FEDn sends the header even without a token (the literal "None"); so do we.
        return {"Authorization": f"{self.config.auth_scheme} {self._token}"}

    def _url(self, route: str) -> str:
        return f"{self.config.base_url}/{route}"

    def _timeout(self) -> tuple[float, float]:
        return (min(10.0, self.config.request_timeout), self.config.request_timeout)

    # -- /add_client --------------------------------------------------------------------------

    def assign(self) -> Assignment:
        """One assignment attempt. Raises ControllerUnavailable (retry) or ControllerRejected."""
        payload = {
            "client_id": self.config.name,
            "preferred_combiner": self.config.preferred_combiner or False,
        }
        try:
            response = self._session.post(
                self._url("add_client"),
                json=payload,
                headers=self._headers(),
                timeout=self._timeout(),
                verify=self.config.verify,
            )
        except requests.RequestException as exc:
            raise ControllerUnavailable(f"controller unreachable: {exc.__class__.__name__}") from exc
        body = _json_or_empty(response)
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        if response.status_code == 400:
            raise ControllerRejected(f"controller refused the client (400): {message or response.text[:200]}")
        if response.status_code == 401:
            if message == "Token expired" and self._refresh_token():
                raise ControllerUnavailable("token refreshed; retrying")
            hint = (
                ""
                if self._token
                else "; auth is on and this client has no token: give --token-file (a token of role client naming this client)"
            )
            raise ControllerRejected(f"controller refused the token (401): {message or 'unauthorized'}{hint}")
        if not 200 <= response.status_code < 204:
            raise ControllerUnavailable(f"controller answered HTTP {response.status_code}")
        if not isinstance(body, dict):
            raise ControllerUnavailable("controller answered without a JSON object")
        if body.get("status") == "retry":
            raise ControllerUnavailable(f"controller asks to retry: {message or 'not ready'}")
        assignment = Assignment.from_response(body)
        if assignment.package != "remote":
            raise ControllerRejected(
                f"controller uses a '{assignment.package}' package; this client needs 'remote'"
            )
        return assignment

    def _refresh_token(self) -> bool:
        uri = os.environ.get("FEDN_AUTH_REFRESH_TOKEN_URI")
        refresh = os.environ.get("FEDN_AUTH_REFRESH_TOKEN")
        if not uri or not refresh:
            log_event(
                logger, logging.ERROR, "token_expired", detail="no FEDN_AUTH_REFRESH_TOKEN_URI/TOKEN set"
            )
            return False
        try:
            response = self._session.post(
                uri, json={"refresh": refresh}, timeout=self._timeout(), verify=self.config.verify
            )
            access = response.json()["access"] if 200 <= response.status_code < 204 else None
        except (requests.RequestException, ValueError, KeyError, TypeError):
            access = None
        if not access:
            log_event(logger, logging.ERROR, "token_refresh_failed", uri=uri)
            return False
        self._token = str(access)
        log_event(logger, logging.INFO, "token_refreshed")
        return True

    # -- package --------------------------------------------------------------------------------

    def download_package(self, dest_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
        """Stream the active package to `dest_dir`; returns its path."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        try:
            with self._session.get(
                self._url("download_package"),
                headers=self._headers(),
                timeout=(min(10.0, self.config.request_timeout), max(60.0, self.config.request_timeout)),
                verify=self.config.verify,
                stream=True,
            ) as response:
                if response.status_code == 401:
                    raise ControllerRejected("controller refused the token for /download_package (401)")
                if not 200 <= response.status_code < 204:
                    raise ControllerUnavailable(f"no package yet (HTTP {response.status_code})")
                filename = package_filename(response.headers.get("Content-Disposition", ""))
                target = dest_dir / filename
                partial = target.with_name(target.name + ".part")
                written = 0
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(chunk_size=256 * 1024):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ControllerRejected(f"package is larger than {max_bytes} bytes")
                        out.write(chunk)
                os.replace(partial, target)
        except requests.RequestException as exc:
            raise ControllerUnavailable(f"package download failed: {exc.__class__.__name__}") from exc
        finally:
            for leftover in dest_dir.glob("*.part"):
                leftover.unlink(missing_ok=True)
        log_event(logger, logging.INFO, "package_downloaded", file=target.name, bytes=written)
        return target

    def package_checksum(self) -> str | None:
        """The controller's sha256 of the active package, or None when it offers none."""
        try:
            response = self._session.get(
                self._url("get_package_checksum"),
                headers=self._headers(),
                timeout=self._timeout(),
                verify=self.config.verify,
            )
        except requests.RequestException as exc:
            raise ControllerUnavailable(f"checksum request failed: {exc.__class__.__name__}") from exc
        if response.status_code == 401:
            raise ControllerRejected("controller refused the token for /get_package_checksum (401)")
        body = _json_or_empty(response)
        if not 200 <= response.status_code < 204 or not isinstance(body, dict) or not body.get("checksum"):
            return None
        return str(body["checksum"]).lower()


def package_filename(content_disposition: str) -> str:
    """The package file name from Content-Disposition, reduced to a safe base name."""
    message = Message()
    message["content-disposition"] = content_disposition
    raw = message.get_param("filename", header="content-disposition")
    if isinstance(raw, tuple):  # RFC 2231 form: filename*=utf-8''name
        raw = collapse_rfc2231_value(raw)
    name = os.path.basename(raw.replace("\\", "/")).strip() if isinstance(raw, str) else ""
    if not name:
        # FEDn treats a download without a file name as "no package set yet".
        raise ControllerUnavailable("controller returned no package (no file name in Content-Disposition)")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "package.tgz"
    if not name.lower().endswith(PACKAGE_SUFFIXES):
        raise ControllerRejected(
            f"controller sent a package named {raw!r}; expected .tar.gz, .tgz or .tar.bz2"
        )
    archive_kind(name)
    return name


def _json_or_empty(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
