"""The combiner's live table of clients: last seen, online state and pending tasks.

The controller learns presence from snapshots of this table (`snapshot`), not from a log of
events: a snapshot states the whole online set, so a lost, repeated or late one is healed by the
next (docs/combiner-controller.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fedplane.proto import fedn_pb2


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


class TaskQueue:
    """A client's pending TaskRequests; unlike queue.Queue it can drop a finished round's tasks.

    Rounds put from their thread; task streams take with `next_task`, a coroutine on the gRPC loop,
    woken through that loop.
    """

    def __init__(self) -> None:
        self._items: collections.deque[fedn_pb2.TaskRequest] = collections.deque()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def _notify(self) -> None:
        """Wake every waiter; called with the lock held."""
        for loop, woken in self._waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its server stopped
                loop.call_soon_threadsafe(_resolve, woken)

    def put(self, task: fedn_pb2.TaskRequest) -> None:
        with self._lock:
            self._items.append(task)
            self._notify()

    async def next_task(self, timeout: float) -> fedn_pb2.TaskRequest | None:
        """The next task, waiting at most `timeout` s; None when none came or on `wake`."""
        loop = asyncio.get_running_loop()
        # A bare future and a timer: thousands of streams wait here, and asyncio.wait_for would
        # cost each wait a task of its own.
        woken: asyncio.Future[None] = loop.create_future()
        waiter = (loop, woken)
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._waiters.append(waiter)
        timer = loop.call_later(timeout, _resolve, woken)
        try:
            await woken
        finally:
            timer.cancel()
            with self._lock:
                self._waiters.remove(waiter)
        with self._lock:
            return self._items.popleft() if self._items else None

    def wake(self) -> None:
        """Release waiting takers early (stream closed, credentials revoked or server stopping)."""
        with self._lock:
            self._notify()

    def discard(self, correlation_ids: set[str]) -> int:
        with self._lock:
            kept = [task for task in self._items if task.correlation_id not in correlation_ids]
            dropped = len(self._items) - len(kept)
            self._items = collections.deque(kept)
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# A snapshot still names a client this long after it went offline, with its last sign of life, so
# that the controller learns when it was last seen even if one snapshot is lost.
OFFLINE_REPORT_SECONDS = 60.0


@dataclass
class ClientState:
    name: str
    last_seen: float
    last_seen_at: datetime
    reported_online: bool = False
    # Open task streams: a client holding one is online whatever its last heartbeat.
    open_streams: int = 0
    tasks: TaskQueue = field(default_factory=TaskQueue)


@dataclass(frozen=True)
class ClientTransition:
    name: str
    status: str  # "online" | "offline"
    last_seen: datetime

    def as_report(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "last_seen": self.last_seen.isoformat()}


def snapshot_body(entries: list[ClientTransition]) -> dict[str, object]:
    """The body of a presence snapshot: every online client listed, `complete` says so."""
    return {"clients": [entry.as_report() for entry in entries], "complete": True}


class ClientRegistry:
    def __init__(self, online_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        if online_window <= 0:
            raise ValueError("online_window must be positive")
        self.online_window = online_window
        self._clock = clock
        self._clients: dict[str, ClientState] = {}
        self._lock = threading.Lock()
        self._streaming = 0  # clients with at least one open task stream
        # Bumped whenever a client appears, or starts or stops holding a stream: answers built
        # from the online set may be reused while it stands (and the online window allows).
        self.generation = 0

    def touch(self, name: str) -> ClientState:
        now = self._clock()
        with self._lock:
            state = self._clients.get(name)
            if state is None:
                state = ClientState(name=name, last_seen=now, last_seen_at=datetime.now(UTC))
                self._clients[name] = state
                self.generation += 1
            else:
                state.last_seen = now
                state.last_seen_at = datetime.now(UTC)
            return state

    def _is_online(self, state: ClientState, now: float) -> bool:
        return state.open_streams > 0 or now - state.last_seen <= self.online_window

    def open_stream(self, name: str, capacity: int | None = None) -> ClientState | None:
        """Count a task stream opened by `name`; None (nothing counted) when `capacity` clients
        other than `name` already hold one."""
        now = self._clock()
        with self._lock:
            state = self._clients.get(name)
            if state is None:
                if capacity is not None and self._streaming >= capacity:
                    return None
                state = ClientState(name=name, last_seen=now, last_seen_at=datetime.now(UTC))
                self._clients[name] = state
            elif state.open_streams == 0 and capacity is not None and self._streaming >= capacity:
                return None
            if state.open_streams == 0:
                self._streaming += 1
                self.generation += 1
            state.open_streams += 1
            state.last_seen = now
            state.last_seen_at = datetime.now(UTC)
            return state

    def close_stream(self, name: str) -> None:
        """A task stream of `name` ended: online for the online window from now, as after a heartbeat."""
        now = self._clock()
        with self._lock:
            state = self._clients.get(name)
            if state is None or state.open_streams == 0:
                return
            state.open_streams -= 1
            if state.open_streams == 0:
                self._streaming -= 1
                self.generation += 1
            state.last_seen = now
            state.last_seen_at = datetime.now(UTC)

    def streaming_count(self) -> int:
        """Clients holding an open task stream: the load that counts against capacity."""
        with self._lock:
            return self._streaming

    def is_online(self, name: str) -> bool:
        with self._lock:
            state = self._clients.get(name)
            return state is not None and self._is_online(state, self._clock())

    def _states(self) -> list[ClientState]:
        # Copied under the lock, read outside it: heartbeats on the event loop take this lock, so
        # it is never held for a walk over thousands of clients.
        with self._lock:
            return list(self._clients.values())

    def online_names(self) -> list[str]:
        now = self._clock()
        return sorted(state.name for state in self._states() if self._is_online(state, now))

    def tasks_of(self, name: str) -> TaskQueue:
        with self._lock:
            state = self._clients.get(name)
        if state is None:
            state = self.touch(name)
        return state.tasks

    def discard_tasks(self, correlation_ids: set[str]) -> int:
        with self._lock:
            queues = [state.tasks for state in self._clients.values()]
        return sum(tasks.discard(correlation_ids) for tasks in queues)

    def wake_all(self) -> None:
        with self._lock:
            queues = [state.tasks for state in self._clients.values()]
        for tasks in queues:
            tasks.wake()

    def mark_offline(self, name: str) -> None:
        """The client's credentials no longer hold: offline now, not after the online window."""
        with self._lock:
            state = self._clients.get(name)
            if state is not None:
                state.last_seen = self._clock() - self.online_window - 1
                if state.open_streams:
                    state.open_streams = 0
                    self._streaming -= 1
                self.generation += 1

    def snapshot(self) -> list[ClientTransition]:
        """Every online client, then those offline for less than OFFLINE_REPORT_SECONDS, by name."""
        now = self._clock()
        now_at = datetime.now(UTC)
        entries: list[ClientTransition] = []
        for state in sorted(self._states(), key=lambda state: state.name):
            if state.open_streams:
                entries.append(ClientTransition(state.name, "online", now_at))
            elif self._is_online(state, now):
                entries.append(ClientTransition(state.name, "online", state.last_seen_at))
            elif now - state.last_seen <= self.online_window + OFFLINE_REPORT_SECONDS:
                entries.append(ClientTransition(state.name, "offline", state.last_seen_at))
        return entries

    def all_offline(self) -> list[ClientTransition]:
        """At shutdown: the snapshot's clients, all offline, since this combiner leaves."""
        entries = [ClientTransition(e.name, "offline", e.last_seen) for e in self.snapshot()]
        for state in self._states():
            state.reported_online = False
        return entries

    def transitions(self) -> list[ClientTransition]:
        """Online/offline changes since the last call; each change is returned once (one caller:
        the presence monitor, the only writer of `reported_online`)."""
        now = self._clock()
        changes: list[ClientTransition] = []
        for state in self._states():
            online = self._is_online(state, now)
            if online != state.reported_online:
                state.reported_online = online
                changes.append(
                    ClientTransition(state.name, "online" if online else "offline", state.last_seen_at)
                )
        return changes
