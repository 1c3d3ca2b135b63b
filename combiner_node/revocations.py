"""Keeps the combiner's list of revoked tokens in step with the controller.

The combiner asks the controller every second, with its own token. A failed fetch keeps the
last list: a revoked token stays refused while the controller is unreachable.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests

from combiner_node.auth import RevocationList
from combiner_node.reporter import auth_headers, session_for

logger = logging.getLogger(__name__)

REVOKED_PATH = "/api/v1/tokens/revoked/"
# A revoked token stops working on the combiners about this long after the controller refuses it.
POLL_SECONDS = 1.0


class RevocationPoller:
    def __init__(
        self,
        controller_url: str,
        revoked: RevocationList,
        *,
        token: str | None,
        auth_scheme: str = "Bearer",
        interval: float = POLL_SECONDS,
        request_timeout: float = 5.0,
    ) -> None:
        self.url = controller_url.rstrip("/") + REVOKED_PATH
        self.revoked = revoked
        self.interval = interval
        self._request_timeout = request_timeout
        self._session = session_for(self.url, auth_headers(token, auth_scheme))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self.fetch()
        self._thread = threading.Thread(target=self._run, name="revocation-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._request_timeout + 1)
        self._session.close()

    def fetch(self) -> bool:
        """One fetch; True when the list was replaced."""
        try:
            response = self._session.get(self.url, timeout=self._request_timeout)
        except requests.RequestException as exc:
            return self._failed(f"controller unreachable: {exc.__class__.__name__}")
        if response.status_code != 200:
            return self._failed(f"status {response.status_code}: {response.text[:200]}")
        jtis = _jti_list(response)
        if jtis is None:
            return self._failed("answer is not {'jti': [...]}")
        self.revoked.replace(jtis)
        self.failures = 0
        return True

    def _failed(self, reason: str) -> bool:
        self.failures += 1
        # Say it once, then every minute or so, not every poll.
        if self.failures == 1 or self.failures % 12 == 0:
            logger.warning("revoked tokens not fetched, keeping the last list reason=%s", reason)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.fetch()


def _jti_list(response: requests.Response) -> list[str] | None:
    try:
        payload: Any = response.json()
    except ValueError:
        return None
    jtis = payload.get("jti") if isinstance(payload, dict) else None
    if not isinstance(jtis, list) or not all(isinstance(jti, str) for jti in jtis):
        return None
    return jtis
