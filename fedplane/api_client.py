"""APIClient: the controller's REST API from Python, call-compatible with FEDn 0.9.5's.

Every method of `fedn.network.api.client.APIClient` (0.9.5) exists here with the same name,
parameters, defaults, HTTP calls and return values. On top of that: one pooled HTTP session,
a timeout on every request, `APIError` with the server's message for error responses, TLS
verification honoured everywhere, downloads streamed to disk, and `stop_session` /
`wait_for_session`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

__all__ = ["TERMINAL_ROUND_STATUSES", "TERMINAL_SESSION_STATUSES", "APIClient", "APIError"]

DEFAULT_TIMEOUT_SECONDS = 30.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

# Lower-cased so a controller answering "finished" or "Finished" is treated alike.
TERMINAL_SESSION_STATUSES = frozenset({"finished", "stopped", "failed"})
TERMINAL_ROUND_STATUSES = frozenset({"success", "finished", "failed", "stopped"})

Json = Any
RoundCallback = Callable[[dict[str, Any]], None]


@functools.cache
def current_umask() -> int:
    """The process's umask; reading it means setting it, so it is read once and put back at once."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class APIError(Exception):
    """The controller answered with an error status; `message` is the server's own text."""

    def __init__(self, status_code: int, message: str, body: Json = None) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.body = body


def _error_message(response: requests.Response) -> tuple[str, Json]:
    try:
        body = response.json()
    except ValueError:
        # An HTML error page or plain text: keep it short enough to print.
        text = response.text.strip()
        return (text[:300] or response.reason or "no message"), None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if key in body:
                return str(body[key]), body
    return str(body)[:300], body


class APIClient:
    """Client for the fedplane controller (and any FEDn 0.9.5 controller).

    :param host: host name, optionally with a path prefix; ``http://`` or ``https://`` in front
        selects the scheme (then ``secure`` is ignored).
    :param port: port of the controller, or None to use the scheme's default.
    :param secure: use https.
    :param verify: verify the server's TLS certificate (``True``, ``False`` or a CA bundle path).
    :param token: auth token; falls back to ``FEDN_AUTH_TOKEN``.
    :param auth_scheme: token scheme; falls back to ``FEDN_AUTH_SCHEME``, then ``Bearer``.
    :param timeout: seconds to wait for the server on each request (connect and each read).
    """

    def __init__(
        self,
        host: str,
        port: int | str | None = None,
        secure: bool = False,
        verify: bool | str = False,
        token: str | None = None,
        auth_scheme: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.secure = secure
        self.verify = verify
        self.timeout = timeout
        if not auth_scheme:
            auth_scheme = os.environ.get("FEDN_AUTH_SCHEME", "Bearer")
        if not token:
            token = os.environ.get("FEDN_AUTH_TOKEN") or None
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"{auth_scheme} {token}"
        self._http = requests.Session()
        self._http.headers.update(self.headers)
        self._http.verify = verify

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> APIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing --- #

    @property
    def base_url(self) -> str:
        """``http[s]://host[:port][/prefix]``, without a trailing slash."""
        host = self.host.rstrip("/")
        base = (
            host
            if host.startswith(("http://", "https://"))
            else f"{'https' if self.secure else 'http'}://{host}"
        )
        return f"{base}:{self.port}" if self.port else base

    def _get_url(self, endpoint: str) -> str:
        return f"{self.base_url}/{endpoint}"

    def _get_url_api_v1(self, endpoint: str) -> str:
        return self._get_url(f"api/v1/{endpoint}")

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        return self._http.request(
            method,
            url,
            params=params,
            headers=dict(headers) if headers else None,
            verify=self.verify,
            timeout=self.timeout,
            stream=stream,
            **kwargs,
        )

    def _json(self, response: requests.Response) -> Json:
        if response.status_code >= 400:
            message, body = _error_message(response)
            raise APIError(response.status_code, message, body)
        try:
            return response.json()
        except ValueError as exc:
            snippet = response.text.strip()[:200]
            raise APIError(
                response.status_code, f"expected JSON from {response.url}, got: {snippet!r}"
            ) from exc

    def _get(
        self, endpoint: str, *, params: Mapping[str, str] | None = None, n_max: int | None = None
    ) -> Json:
        headers = {"X-Limit": str(n_max)} if n_max else None
        return self._json(self._send("GET", self._get_url_api_v1(endpoint), params=params, headers=headers))

    def _get_legacy(self, endpoint: str, *, params: Mapping[str, str] | None = None) -> Json:
        return self._json(self._send("GET", self._get_url(endpoint), params=params))

    def _download(self, url: str, path: str | os.PathLike[str], what: str) -> dict[str, Any]:
        target = Path(path)
        with self._send("GET", url, stream=True) as response:
            if response.status_code != 200:
                message, _ = _error_message(response)
                return {"success": False, "message": f"Failed to download {what}: {message}"}
            # Written next to the target and renamed at the end, so a broken transfer
            # never leaves a truncated file under the requested name.
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
                        file.write(chunk)
                # mkstemp makes the file private (0600); a download gets the mode any new file would.
                os.chmod(partial, 0o666 & ~current_umask())
                os.replace(partial, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
        return {"success": True, "message": f"{what.capitalize()} downloaded successfully."}

    # --- Clients --- #

    def get_client(self, id: str) -> dict[str, Any]:
        """Get a client by id."""
        return self._get(f"clients/{id}")

    def get_clients(self, n_max: int | None = None) -> dict[str, Any]:
        """Get clients as ``{"count", "result"}``; at most ``n_max`` of them if given."""
        return self._get("clients/", n_max=n_max)

    def get_clients_count(self) -> int:
        """Get the number of clients."""
        return self._get("clients/count")

    def get_client_config(self, checksum: bool = True) -> dict[str, Any]:
        """Get the config clients use to reach the controller, optionally with the package checksum."""
        return self._get_legacy("get_client_config", params={"checksum": "true" if checksum else "false"})

    def get_active_clients(self, combiner_id: str | None = None, n_max: int | None = None) -> dict[str, Any]:
        """Get online clients, optionally only those of one combiner."""
        params = {"status": "online"}
        if combiner_id:
            params["combiner"] = combiner_id
        return self._get("clients/", params=params, n_max=n_max)

    # --- Combiners --- #

    def get_combiner(self, id: str) -> dict[str, Any]:
        """Get a combiner by id or name."""
        return self._get(f"combiners/{id}")

    def get_combiners(self, n_max: int | None = None) -> dict[str, Any]:
        """Get combiners as ``{"count", "result"}``."""
        return self._get("combiners/", n_max=n_max)

    def get_combiners_count(self) -> int:
        """Get the number of combiners."""
        return self._get("combiners/count")

    # --- Controller --- #

    def get_controller_status(self) -> dict[str, Any]:
        """Get the controller state: ``{"state": "idle" | "instructing" | ...}``."""
        return self._get_legacy("get_controller_status")

    # --- Models --- #

    def get_model(self, id: str) -> dict[str, Any]:
        """Get a model by id or model uuid."""
        return self._get(f"models/{id}")

    def get_models(self, session_id: str | None = None, n_max: int | None = None) -> dict[str, Any]:
        """Get models, newest first, optionally of one session."""
        params = {"session_id": session_id} if session_id else None
        return self._get("models/", params=params, n_max=n_max)

    def get_models_count(self) -> int:
        """Get the number of models."""
        return self._get("models/count")

    def get_active_model(self) -> dict[str, Any]:
        """Get the latest model; without models, the (empty) list answer as FEDn 0.9.5 does."""
        answer = self._get("models/", n_max=1)
        if isinstance(answer, dict) and answer.get("result"):
            return answer["result"][0]
        return answer

    def get_model_trail(
        self, id: str | None = None, include_self: bool = True, reverse: bool = True, n_max: int | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """Get the ancestors of a model (default: the active one), oldest first unless ``reverse=False``."""
        if not id:
            model = self.get_active_model()
            if "id" not in model:
                return model
            id = model["id"]
        count = n_max if n_max else self.get_models_count()
        headers = {"X-Limit": str(count), "X-Reverse": "true" if reverse else "false"}
        params = {"include_self": "true" if include_self else "false"}
        trail = self._json(
            self._send("GET", self._get_url_api_v1(f"models/{id}/ancestors"), params=params, headers=headers)
        )
        if n_max and isinstance(trail, list) and len(trail) > n_max:
            # The server's limit counts parents only (FEDn 0.9.5), so include_self can add one more;
            # n_max here caps the models returned, keeping the ones nearest to the model.
            trail = trail[-n_max:] if reverse else trail[:n_max]
        return trail

    def download_model(self, id: str, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Download the model file to ``path``; returns ``{"success", "message"}``."""
        return self._download(self._get_url_api_v1(f"models/{id}/download"), path, "model")

    def set_active_model(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload a seed model (``.npz``) and make it the active model."""
        with open(path, "rb") as file:
            response = self._send("POST", self._get_url("set_initial_model"), files={"file": file})
        return self._json(response)

    # --- Packages --- #

    def get_package(self, id: str) -> dict[str, Any]:
        """Get a compute package by its id."""
        return self._get(f"packages/{id}")

    def get_packages(self, n_max: int | None = None) -> dict[str, Any]:
        """Get compute packages as ``{"count", "result"}``."""
        return self._get("packages/", n_max=n_max)

    def get_packages_count(self) -> int:
        """Get the number of compute packages."""
        return self._get("packages/count")

    def get_active_package(self) -> dict[str, Any]:
        """Get the active compute package."""
        return self._get("packages/active")

    def get_package_checksum(self) -> dict[str, Any]:
        """Get the sha256 of the active package: ``{"checksum": hex}``."""
        return self._get_legacy("get_package_checksum")

    def download_package(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Download the active compute package to ``path``; returns ``{"success", "message"}``."""
        return self._download(self._get_url("download_package"), path, "package")

    def set_active_package(
        self,
        path: str | os.PathLike[str],
        helper: str,
        name: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Upload a compute package (``.tgz``/``.tar.gz``/``.tar.bz2`` with fedn.yaml) and activate it."""
        form = {"helper": helper, "name": name, "description": description}
        with open(path, "rb") as file:
            response = self._send(
                "POST",
                self._get_url("set_package"),
                files={"file": file},
                data={key: value for key, value in form.items() if value is not None},
            )
        return self._json(response)

    # --- Rounds --- #

    def get_round(self, id: str) -> dict[str, Any]:
        """Get a round by id."""
        return self._get(f"rounds/{id}")

    def get_rounds(self, n_max: int | None = None) -> dict[str, Any]:
        """Get rounds as ``{"count", "result"}``."""
        return self._get("rounds/", n_max=n_max)

    def get_rounds_count(self) -> int:
        """Get the number of rounds."""
        return self._get("rounds/count")

    # --- Sessions --- #

    def get_session(self, id: str) -> dict[str, Any]:
        """Get a session by id or session_id."""
        return self._get(f"sessions/{id}")

    def get_sessions(self, n_max: int | None = None) -> dict[str, Any]:
        """Get sessions as ``{"count", "result"}``."""
        return self._get("sessions/", n_max=n_max)

    def get_sessions_count(self) -> int:
        """Get the number of sessions."""
        return self._get("sessions/count")

    def get_session_status(self, id: str) -> str:
        """Get the status of a session, e.g. ``"Started"`` or ``"Finished"``."""
        session = self.get_session(id)
        if session and "status" in session:
            return session["status"]
        return "Could not retrieve session status."

    def session_is_finished(self, id: str) -> bool:
        """True once the session's status is ``Finished``."""
        status = self.get_session_status(id)
        return bool(status) and status.lower() == "finished"

    def start_session(
        self,
        id: str | None = None,
        aggregator: str = "fedavg",
        aggregator_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
        round_timeout: int = 180,
        rounds: int = 5,
        round_buffer_size: int = -1,
        delete_models: bool = True,
        validate: bool = True,
        helper: str = "numpyhelper",
        min_clients: int = 1,
        requested_clients: int = 8,
        *,
        dp: dict[str, Any] | None = None,
        mode: str | None = None,
        fedbuff: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a session; returns ``{"success", "message", "config"}`` (``success`` false on refusal).

        The arguments before ``*`` are FEDn 0.9.5's. After it, fedplane extensions, sent only when
        given (a FEDn controller would refuse them):

        - ``dp``: central differential privacy at the combiners (DP-FedAvg), e.g.
          ``{"noise_multiplier": 1.1, "clip_norm": 1.0, "delta": 1e-5, "target_epsilon": 8.0}``;
          adaptive clipping with ``target_quantile`` (and ``clip_learning_rate``,
          ``count_noise_std``); ``noise_multiplier`` may be left out when ``target_epsilon`` is
          given, ``sampling_rate`` and ``expected_clients`` default to 1 and ``requested_clients``
          (K in an asynchronous session).
          The ε spent is in each round's ``round_data.privacy`` and the session's ``privacy``.
        - ``mode="async"``: buffered asynchronous aggregation (FedBuff); ``rounds`` is the number
          of model versions, each committed as a round. ``fedbuff`` holds its parameters, e.g.
          ``{"buffer_size": 4, "max_staleness": 3, "staleness": "polynomial",
          "server_learning_rate": 1.0}`` (``buffer_size`` K defaults to ``round_buffer_size``).
        """
        body = {
            "session_id": id,
            "aggregator": aggregator,
            "aggregator_kwargs": aggregator_kwargs,
            "model_id": model_id,
            "round_timeout": round_timeout,
            "rounds": rounds,
            "round_buffer_size": round_buffer_size,
            "delete_models": delete_models,
            "validate": validate,
            "helper": helper,
            "min_clients": min_clients,
            "requested_clients": requested_clients,
        }
        extensions = {"dp": dp, "mode": mode, "fedbuff": fedbuff}
        body.update({key: value for key, value in extensions.items() if value is not None})
        return self._json(self._send("POST", self._get_url("start_session"), json=body))

    def stop_session(self, id: str) -> dict[str, Any]:
        """Ask a running session to stop after its current round; returns ``{"message"}``."""
        return self._json(self._send("POST", self._get_url_api_v1(f"sessions/{id}/stop")))

    def wait_for_session(
        self,
        id: str,
        timeout: float = 3600.0,
        poll_interval: float = 2.0,
        on_round: RoundCallback | None = None,
    ) -> dict[str, Any]:
        """Poll until the session is Finished, Stopped or Failed and return its final document.

        ``on_round`` is called once per round of the session as the round closes, in round order.
        Raises ``TimeoutError`` if the session is still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        reported: set[str] = set()
        while True:
            session = self.get_session(id)
            finished = str(session.get("status", "")).lower() in TERMINAL_SESSION_STATUSES
            if on_round is not None:
                for round_doc in self.iter_session_rounds(session.get("session_id", id)):
                    round_id = str(round_doc.get("round_id"))
                    if round_id in reported:
                        continue
                    if str(round_doc.get("status", "")).lower() in TERMINAL_ROUND_STATUSES:
                        reported.add(round_id)
                        on_round(round_doc)
            if finished:
                return session
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"session {id} still {session.get('status', 'unknown')!r} after {timeout:g} s"
                )
            time.sleep(min(poll_interval, remaining))

    def iter_session_rounds(self, session_id: str, n_max: int = 1000) -> Iterator[dict[str, Any]]:
        """Yield the rounds of one session, oldest first (from the newest ``n_max`` rounds)."""
        answer = self._get("rounds/", params={"session_id": session_id}, n_max=n_max)
        rounds = [r for r in answer.get("result", []) if round_session_id(r) == session_id]
        yield from sorted(rounds, key=_round_order)

    # --- Statuses --- #

    def get_status(self, id: str) -> dict[str, Any]:
        """Get a status (event) by id."""
        return self._get(f"statuses/{id}")

    def get_statuses(
        self,
        session_id: str | None = None,
        event_type: str | None = None,
        sender_name: str | None = None,
        sender_role: str | None = None,
        n_max: int | None = None,
    ) -> dict[str, Any]:
        """Get statuses (events), newest first, filtered by the given fields."""
        filters = {
            "session_id": session_id,
            "type": event_type,
            "sender.name": sender_name,
            "sender.role": sender_role,
        }
        params = {key: value for key, value in filters.items() if value}
        return self._get("statuses/", params=params, n_max=n_max)

    def get_statuses_count(self) -> int:
        """Get the number of statuses."""
        return self._get("statuses/count")

    # --- Validations --- #

    def get_validation(self, id: str) -> dict[str, Any]:
        """Get a validation by id."""
        return self._get(f"validations/{id}")

    def get_validations(
        self,
        session_id: str | None = None,
        model_id: str | None = None,
        correlation_id: str | None = None,
        sender_name: str | None = None,
        sender_role: str | None = None,
        receiver_name: str | None = None,
        receiver_role: str | None = None,
        n_max: int | None = None,
    ) -> dict[str, Any]:
        """Get validations, newest first, filtered by the given fields."""
        # FEDn 0.9.5 sends these three camelCase, as they are stored.
        filters = {
            "sessionId": session_id,
            "modelId": model_id,
            "correlationId": correlation_id,
            "sender.name": sender_name,
            "sender.role": sender_role,
            "receiver.name": receiver_name,
            "receiver.role": receiver_role,
        }
        params = {key: value for key, value in filters.items() if value}
        return self._get("validations/", params=params, n_max=n_max)

    def get_validations_count(self) -> int:
        """Get the number of validations."""
        return self._get("validations/count")


def round_session_id(round_doc: Mapping[str, Any]) -> str | None:
    """The session a round belongs to: top-level ``session_id`` or FEDn's ``round_config``."""
    if round_doc.get("session_id"):
        return str(round_doc["session_id"])
    config = round_doc.get("round_config") or {}
    session_id = config.get("session_id") if isinstance(config, Mapping) else None
    return str(session_id) if session_id else None


def _round_order(round_doc: Mapping[str, Any]) -> tuple[int, str]:
    round_id = str(round_doc.get("round_id", ""))
    return (int(round_id), "") if round_id.isdigit() else (0, round_id)
