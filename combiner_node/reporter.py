"""Everything the combiner tells the controller over REST: registration and reports.

Reports go through background senders, one per kind of report, each with a bounded queue, so a
slow or absent controller never blocks a gRPC handler and one kind never waits behind another;
they are retried with backoff and the oldest are dropped when full.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

from fedplane.roundreport import RoundReport, round_report_path

logger = logging.getLogger(__name__)

# Reports of these routes accept a list, so consecutive ones are sent as one request.
BATCHABLE_PATHS = ("/api/v1/statuses/", "/api/v1/validations/")
MAX_BATCH = 100


def auth_headers(token: str | None, scheme: str) -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"} if token else {}


class RegistrationRefused(Exception):
    """The controller answered 400/401/403 to /add_combiner: retrying cannot help."""


class RegistrationTimeout(Exception):
    pass


def register_combiner(
    controller_url: str,
    body: dict[str, Any],
    *,
    token: str | None,
    auth_scheme: str = "Bearer",
    retry_interval: float = 2.0,
    deadline: float | None = None,
    request_timeout: float = 10.0,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """POST /add_combiner until the controller accepts; `deadline` is seconds from now (None: forever)."""
    url = controller_url.rstrip("/") + "/add_combiner"
    give_up_at = None if deadline is None else time.monotonic() + deadline
    stop = stop or threading.Event()
    attempt = 0
    while True:
        attempt += 1
        try:
            response = requests.post(
                url, json=body, headers=auth_headers(token, auth_scheme), timeout=request_timeout
            )
        except requests.RequestException as exc:
            reason = f"controller unreachable: {exc.__class__.__name__}"
        else:
            payload = _json_or_empty(response)
            if response.status_code in (400, 401, 403):
                raise RegistrationRefused(
                    f"controller refused registration ({response.status_code}): "
                    f"{payload.get('message', response.text[:200])}"
                )
            if 200 <= response.status_code <= 203 and payload.get("status") != "retry":
                logger.info("registered with controller url=%s attempt=%d", url, attempt)
                return payload
            reason = f"status={response.status_code} answer={payload.get('status', '')!r}"
        if give_up_at is not None and time.monotonic() + retry_interval > give_up_at:
            raise RegistrationTimeout(f"could not register with {url} before the deadline ({reason})")
        logger.warning("registration not accepted yet, retrying url=%s reason=%s", url, reason)
        if stop.wait(retry_interval):
            raise RegistrationTimeout("registration interrupted by shutdown")


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def session_for(url: str, headers: dict[str, str]) -> requests.Session:
    """A session for the reports to `url`, with what requests reads from the environment (proxies
    and NO_PROXY, the CA bundle, .netrc) read once here: requests would read it again per request,
    which cost a third of each report's CPU in the combiner."""
    session = requests.Session()
    session.headers.update(headers)
    found = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(found["proxies"])
    session.verify = found["verify"]
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session


@dataclass
class _Report:
    path: str
    body: Any


@dataclass(frozen=True)
class _Batch:
    """What one request sends: the first `taken` reports of the queue, under `key` where the route
    takes lists (a resend of the same key stores nothing at the controller)."""

    path: str
    body: Any
    taken: int
    key: str | None


# Each kind of report goes out on its own lane (queue and sender): validations never wait behind a
# backlog of statuses, and a round's report never waits behind either.
LANES = ("statuses", "validations", "rounds", "other")


def lane_of(path: str) -> str:
    if path == "/api/v1/statuses/":
        return "statuses"
    if path == "/api/v1/validations/":
        return "validations"
    if path.startswith("/api/v1/rounds/"):
        return "rounds"
    return "other"


class _Lane:
    """One kind of report: a bounded queue sent in order by one thread, batched where the route takes
    lists, retried with backoff; the oldest are dropped when full."""

    def __init__(
        self,
        name: str,
        controller_url: str,
        headers: dict[str, str],
        *,
        max_buffer: int,
        request_timeout: float,
        initial_backoff: float,
        max_backoff: float,
    ) -> None:
        self.name = name
        self.controller_url = controller_url
        self._session = session_for(controller_url, headers)
        self._queue: collections.deque[_Report] = collections.deque()
        self._max_buffer = max_buffer
        self._request_timeout = request_timeout
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._changed = threading.Condition()
        self._in_flight = 0
        # The batch whose send failed: sent again unchanged, more reports queued meanwhile or not.
        self._retrying: _Batch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.sent = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"controller-reporter-{self.name}", daemon=True
            )
            self._thread.start()

    def post(self, path: str, body: Any, *, replace: bool) -> None:
        with self._changed:
            if replace:
                waiting = [i for i in range(self._in_flight, len(self._queue)) if self._queue[i].path == path]
                if waiting:
                    # Two can wait here: one put back after a failed send and one queued meanwhile.
                    for index in reversed(waiting[1:]):
                        del self._queue[index]
                    self._queue[waiting[0]] = _Report(path, body)
                    self._changed.notify_all()
                    return
            if len(self._queue) >= self._max_buffer and len(self._queue) > self._in_flight:
                # Drop the oldest report that is not being sent right now.
                del self._queue[self._in_flight]
                self.dropped += 1
                logger.warning(
                    "report buffer full, oldest report dropped lane=%s dropped_total=%d",
                    self.name,
                    self.dropped,
                )
            self._queue.append(_Report(path, body))
            self._changed.notify_all()

    def pending(self) -> int:
        with self._changed:
            return len(self._queue)

    def flush(self, deadline: float) -> bool:
        with self._changed:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._changed.wait(remaining)
        return True

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self._request_timeout))
        self._session.close()

    def _next_batch(self) -> _Batch | None:
        with self._changed:
            if self._retrying is not None:
                # Sent again as it was, under its key: the controller may have stored it already.
                self._in_flight = self._retrying.taken
                return self._retrying
            while not self._queue:
                if self._stop.is_set():
                    return None
                self._changed.wait(0.5)
            first = self._queue[0]
            if first.path in BATCHABLE_PATHS:
                reports = _prefix(self._queue, first.path)
                batch = _Batch(
                    first.path,
                    [item for report in reports for item in _as_list(report.body)],
                    len(reports),
                    uuid.uuid4().hex,
                )
            else:
                batch = _Batch(first.path, first.body, 1, None)
            self._in_flight = batch.taken
            return batch

    def _run(self) -> None:
        backoff = self._initial_backoff
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch is None:
                return
            outcome = self._send(batch)
            with self._changed:
                if outcome == "retry" and batch.key is not None:
                    # Its reports stay in flight: neither replaced nor dropped while it is retried.
                    self._retrying = batch
                elif outcome == "retry":
                    # Taken again from the queue, where a newer report may have replaced it.
                    self._in_flight = 0
                else:
                    self._retrying = None
                    for _ in range(batch.taken):
                        self._queue.popleft()
                    if outcome == "sent":
                        self.sent += 1
                    self._in_flight = 0
                self._changed.notify_all()
            if outcome == "retry":
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = self._initial_backoff

    def _send(self, batch: _Batch) -> str:
        path = batch.path
        headers = {"Idempotency-Key": batch.key} if batch.key else None
        try:
            response = self._session.post(
                self.controller_url + path, json=batch.body, headers=headers, timeout=self._request_timeout
            )
        except requests.RequestException as exc:
            logger.warning(
                "controller report failed, will retry path=%s error=%s", path, exc.__class__.__name__
            )
            return "retry"
        if response.status_code >= 500 or response.status_code in (408, 429):
            logger.warning(
                "controller report failed, will retry path=%s status=%d", path, response.status_code
            )
            return "retry"
        if response.status_code >= 400:
            # The controller judged the report itself (unknown round, round closed): resending cannot help.
            logger.error(
                "controller refused report path=%s status=%d body=%s",
                path,
                response.status_code,
                response.text[:300],
            )
            return "refused"
        return "sent"


class ControllerReporter:
    """The combiner's reports to the controller, one lane per kind (LANES); never blocks a caller."""

    def __init__(
        self,
        controller_url: str | None,
        *,
        token: str | None = None,
        auth_scheme: str = "Bearer",
        max_buffer: int = 10_000,
        request_timeout: float = 10.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.controller_url = controller_url.rstrip("/") if controller_url else None
        self._started = False
        self._lanes: dict[str, _Lane] = {}
        if self.controller_url is not None:
            headers = auth_headers(token, auth_scheme)
            self._lanes = {
                name: _Lane(
                    name,
                    self.controller_url,
                    headers,
                    max_buffer=max_buffer,
                    request_timeout=request_timeout,
                    initial_backoff=initial_backoff,
                    max_backoff=max_backoff,
                )
                for name in LANES
            }

    @property
    def dropped(self) -> int:
        return sum(lane.dropped for lane in self._lanes.values())

    @property
    def sent(self) -> int:
        return sum(lane.sent for lane in self._lanes.values())

    def start(self) -> None:
        if self.controller_url is None or self._started:
            return
        self._started = True
        for lane in self._lanes.values():
            lane.start()

    def post(self, path: str, body: Any, *, replace: bool = False) -> None:
        """Queue one report; never blocks on the network.

        With `replace`, the report supersedes a queued one to the same path that is not being sent
        (a presence snapshot: only the newest matters), keeping that one's place in the queue.
        """
        if self.controller_url is None:
            logger.debug("no controller configured, report dropped path=%s", path)
            return
        self._lanes[lane_of(path)].post(path, body, replace=replace)

    def post_round_report(self, round_id: str, report: RoundReport) -> None:
        """Queue the report of a training round (fedplane.roundreport); never batched nor replaced."""
        self.post(round_report_path(round_id), report.to_json())

    def pending(self) -> int:
        """Reports not yet delivered, including the batches being sent."""
        return sum(lane.pending() for lane in self._lanes.values())

    def flush(self, timeout: float) -> bool:
        """Wait until every queued report was sent (or dropped); False on deadline."""
        deadline = time.monotonic() + timeout
        return all([lane.flush(deadline) for lane in self._lanes.values()])

    def close(self, timeout: float = 5.0) -> None:
        flushed = self.flush(timeout)
        if not flushed:
            logger.warning("controller reports not delivered at shutdown pending=%d", self.pending())
        for lane in self._lanes.values():
            lane.stop()
        for lane in self._lanes.values():
            lane.join()


def _prefix(queue: collections.deque[_Report], path: str) -> list[_Report]:
    """The leading reports of `queue` that go to `path`, bounded by MAX_BATCH items."""
    prefix: list[_Report] = []
    count = 0
    for report in queue:
        size = len(_as_list(report.body))
        if report.path != path or (prefix and count + size > MAX_BATCH):
            break
        prefix.append(report)
        count += size
    return prefix


def _as_list(body: Any) -> list[Any]:
    return body if isinstance(body, list) else [body]
