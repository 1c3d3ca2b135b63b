"""The combiner's live table of clients: last seen, online state and pending tasks.

The controller learns presence from snapshots of this table (`snapshot`), not from a log of
events: a snapshot states the whole online set, so a lost, repeated or late one is healed by the
next (docs/combiner-controller.md).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fedplane.proto import fedn_pb2


class TaskQueue:
    """A client's pending TaskRequests; unlike queue.Queue it can drop a finished round's tasks."""

    def __init__(self) -> None:
        self._items: collections.deque[fedn_pb2.TaskRequest] = collections.deque()
        self._ready = threading.Condition()

    def put(self, task: fedn_pb2.TaskRequest) -> None:
        with self._ready:
            self._items.append(task)
            self._ready.notify()

    def get(self, timeout: float) -> fedn_pb2.TaskRequest | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def wake(self) -> None:
        """Release a waiting get() early (stream closed or server stopping)."""
        with self._ready:
            self._ready.notify_all()

    def discard(self, correlation_ids: set[str]) -> int:
        with self._ready:
            kept = [task for task in self._items if task.correlation_id not in correlation_ids]
            dropped = len(self._items) - len(kept)
            self._items = collections.deque(kept)
            return dropped

    def __len__(self) -> int:
        with self._ready:
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

    def touch(self, name: str) -> ClientState:
        now = self._clock()
        with self._lock:
            state = self._clients.get(name)
            if state is None:
                state = ClientState(name=name, last_seen=now, last_seen_at=datetime.now(UTC))
                self._clients[name] = state
            else:
                state.last_seen = now
                state.last_seen_at = datetime.now(UTC)
            return state

    def _is_online(self, state: ClientState, now: float) -> bool:
        return now - state.last_seen <= self.online_window

    def is_online(self, name: str) -> bool:
        with self._lock:
            state = self._clients.get(name)
            return state is not None and self._is_online(state, self._clock())

    def online_names(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return sorted(name for name, state in self._clients.items() if self._is_online(state, now))

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

    def snapshot(self) -> list[ClientTransition]:
        """Every online client, then those offline for less than OFFLINE_REPORT_SECONDS, by name."""
        now = self._clock()
        entries: list[ClientTransition] = []
        with self._lock:
            for name in sorted(self._clients):
                state = self._clients[name]
                if self._is_online(state, now):
                    entries.append(ClientTransition(name, "online", state.last_seen_at))
                elif now - state.last_seen <= self.online_window + OFFLINE_REPORT_SECONDS:
                    entries.append(ClientTransition(name, "offline", state.last_seen_at))
        return entries

    def all_offline(self) -> list[ClientTransition]:
        """At shutdown: the snapshot's clients, all offline, since this combiner leaves."""
        entries = [ClientTransition(e.name, "offline", e.last_seen) for e in self.snapshot()]
        with self._lock:
            for state in self._clients.values():
                state.reported_online = False
        return entries

    def transitions(self) -> list[ClientTransition]:
        """Online/offline changes since the last call; each change is returned once."""
        now = self._clock()
        changes: list[ClientTransition] = []
        with self._lock:
            for state in self._clients.values():
                online = self._is_online(state, now)
                if online != state.reported_online:
                    state.reported_online = online
                    changes.append(
                        ClientTransition(state.name, "online" if online else "offline", state.last_seen_at)
                    )
        return changes
