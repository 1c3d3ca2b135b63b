"""An asynchronous buffered session (FedBuff) on one combiner: no rounds, a stream of model versions.

Every idle online client is given a training task on the latest version. Each update's delta from
the version it was trained on goes into the buffer, weighted by its examples and its staleness
(versions behind the latest); an update more than ``max_staleness`` behind is refused with a
status saying so. Once K updates are in, they become the next version: stored as a model,
reported to the controller as the round the controller named for that version, and sent out at
once to the clients that are idle. The run ends after its number of versions, on stop, or when no
version is made within the round timeout.

Memory: FedBuff's one accumulator; the version files the buffer may still need as bases (the last
``max_staleness + 1``) stay on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from combiner_node.clients import ClientRegistry
from combiner_node.modelfiles import ModelFiles
from combiner_node.reporter import ControllerReporter
from combiner_node.roundconfig import RoundConfig
from combiner_node.store import ArtifactStore, StoreError, model_key
from fedplane.aggregators.base import InvalidUpdate
from fedplane.aggregators.dpfedbuff import DpFedBuff
from fedplane.aggregators.fedbuff import BufferFull, FedBuff, StaleUpdate
from fedplane.proto import fedn_pb2
from fedplane.roundreport import ReportStatus, RoundReport, RoundReportError


class Host(Protocol):
    """What the run uses of the combiner's round handler."""

    combiner_name: str
    registry: ClientRegistry
    files: ModelFiles
    store: ArtifactStore
    reporter: ControllerReporter
    max_clients: int

    def _stage(self, model_id: str) -> Path: ...
    def _dispatch(self, task: fedn_pb2.TaskRequest) -> None: ...
    def _refuse(self, update: fedn_pb2.ModelUpdate, why: str) -> str: ...


logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class AsyncFailed(Exception):
    pass


@dataclass
class Task:
    client: str
    version: int
    model_id: str
    sent_at: float


class AsyncRun:
    """One asynchronous session's run on this combiner, driven by the round handler's worker."""

    def __init__(self, handler: Host, job_id: str, config: RoundConfig, workdir: Path) -> None:
        self.handler = handler
        self.job_id = job_id
        self.config = config
        self.workdir = workdir
        self.versions = len(config.async_round_ids)
        self._lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self._wake = threading.Event()
        self._outstanding: dict[str, Task] = {}
        self._models: dict[int, tuple[str, Path]] = {}
        self._latest: tuple[int, str] = (0, config.model_id)
        self._participants: list[str] = []
        self._staleness: list[int] = []
        self._examples = 0
        self._failed: str | None = None
        self._stop_reason: str | None = None
        self._last_version_at = time.monotonic()
        self.fedbuff: FedBuff | None = None

    # The handler's hooks ------------------------------------------------------------------------

    @property
    def latest_model_id(self) -> str:
        with self._lock:
            return self._latest[1]

    def upload_quota(self, client: str | None) -> int:
        with self._lock:
            owners = [task.client for task in self._outstanding.values()]
        if client is None:
            return 2 * len(owners)
        return owners.count(client)

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._wake.set()

    def on_model_update(
        self, update: fedn_pb2.ModelUpdate, update_path: Path, examples: Callable[[], int]
    ) -> str:
        """Fold an update into the buffer, making a version when K are in; returns the Response text.

        ``examples`` reads the update's number of examples (raising the handler's refusal when
        its meta has none). A file that cannot be taken raises InvalidUpdate; an update that is
        not wanted (unknown task, too stale) is answered with the reason and a WARNING status.
        """
        with self._lock:
            task = self._outstanding.get(update.correlation_id)
            refusal = self._check(task, update)
            if refusal is None:
                del self._outstanding[update.correlation_id]
        if refusal is not None:
            return self.handler._refuse(update, refusal)
        assert task is not None
        try:
            return self._fold(update, update_path, task, examples)
        finally:
            self._wake.set()  # the client is idle again: it gets the latest version

    def _fold(
        self, update: fedn_pb2.ModelUpdate, update_path: Path, task: Task, examples: Callable[[], int]
    ) -> str:
        num_examples = examples()
        if not update_path.is_file():
            raise InvalidUpdate(f"model update {update.model_update_id!r} was not uploaded to this combiner")
        with self._fold_lock:
            fedbuff = self.fedbuff
            if fedbuff is None or self._done() or self._failed is not None:
                return self.handler._refuse(update, "the asynchronous session takes no more updates")
            try:
                fedbuff.staleness_weight(task.version)
            except StaleUpdate as exc:
                return self.handler._refuse(update, f"it is too stale: {exc}")
            base = self._models.get(task.version)
            if base is None:
                return self.handler._refuse(
                    update, f"it is too stale: version {task.version} it was trained on is no longer kept"
                )
            try:
                fedbuff.add(update_path, num_examples, task.version, base[1])
            except StaleUpdate as exc:
                return self.handler._refuse(update, f"it is too stale: {exc}")
            except BufferFull:
                return self.handler._refuse(update, "the buffer could not be made into a version")
            except InvalidUpdate as exc:
                self.handler._refuse(update, f"the model file is refused: {exc}")
                raise
            self._participants.append(task.client)
            self._staleness.append(fedbuff.version - task.version)
            self._examples += num_examples
            if fedbuff.ready:
                self._flush(fedbuff)
        logger.info(
            "async update accepted client=%s trained_on=%d buffered=%d",
            task.client,
            task.version,
            fedbuff.count,
        )
        return "Model update accepted."

    def _check(self, task: Task | None, update: fedn_pb2.ModelUpdate) -> str | None:
        if task is None:
            return "its correlation id is not an open task of the asynchronous session"
        if task.client != update.sender.name:
            return f"the task was given to {task.client!r}, not {update.sender.name!r}"
        if update.model_id != task.model_id:
            return f"it was trained from model {update.model_id!r}, not {task.model_id!r}"
        return None

    # The run ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            try:
                staged = self.handler._stage(self.config.model_id)
                first = self.workdir / "v0.npz"
                shutil.copyfile(staged, first)
                fedbuff = (
                    DpFedBuff.create_private(dict(self.config.fedbuff), self.config.dp)
                    if self.config.dp is not None
                    else FedBuff.create(dict(self.config.fedbuff))
                )
                fedbuff.start(first, 0)
            except Exception as exc:  # the model not in the store, a bad FedBuff parameter, no disk
                raise AsyncFailed(f"the asynchronous session cannot start: {exc}") from exc
            with self._fold_lock:
                self._models[0] = (self.config.model_id, first)
                self.fedbuff = fedbuff
            logger.info(
                "async session started session_id=%s versions=%d buffer=%d",
                self.config.session_id,
                self.versions,
                fedbuff.buffer_size,
            )
            while True:
                if self._failed is not None:
                    raise AsyncFailed(self._failed)
                if self._stop_reason is not None:
                    raise AsyncFailed(self._stop_reason)
                if self._done():
                    return
                if time.monotonic() - self._last_version_at > self.config.round_timeout:
                    raise AsyncFailed(
                        f"no model version was made within the round timeout ({self.config.round_timeout:g} s)"
                    )
                self._feed()
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()
        except AsyncFailed as exc:
            self._report_failed(str(exc))
        finally:
            with self._lock:
                open_tasks = set(self._outstanding)
                self._outstanding.clear()
            self.handler.registry.discard_tasks(open_tasks)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _done(self) -> bool:
        return self._latest[0] >= self.versions

    def _feed(self) -> None:
        """Give every idle online client a task on the latest version; forget tasks of clients gone."""
        online = set(self.handler.registry.online_names())
        now = time.monotonic()
        with self._lock:
            gone = {
                cid
                for cid, task in self._outstanding.items()
                if task.client not in online or now - task.sent_at > self.config.round_timeout
            }
            for cid in gone:
                del self._outstanding[cid]
            busy = {task.client for task in self._outstanding.values()}
            room = max(self.handler.max_clients - len(busy), 0)
            idle = sorted(online - busy)[:room]
            version, model_id = self._latest
            tasks = [self._task(client, model_id) for client in idle]
            for task in tasks:
                self._outstanding[task.correlation_id] = Task(task.receiver.name, version, model_id, now)
        if gone:
            self.handler.registry.discard_tasks(gone)
        for task in tasks:
            self.handler._dispatch(task)

    def _task(self, client: str, model_id: str) -> fedn_pb2.TaskRequest:
        task = fedn_pb2.TaskRequest(
            sender=fedn_pb2.Client(name=self.handler.combiner_name, role=fedn_pb2.COMBINER),
            receiver=fedn_pb2.Client(name=client, role=fedn_pb2.WORKER),
            model_id=model_id,
            correlation_id=str(uuid.uuid4()),
            timestamp=str(datetime.now()),
            session_id=self.config.session_id,
            type=fedn_pb2.MODEL_UPDATE,
        )
        task.data = json.dumps({**self.config.raw, "model_id": model_id, "_job_id": self.job_id})
        return task

    def _flush(self, fedbuff: FedBuff) -> None:
        """K updates are in: make, store and report the next version (under the fold lock)."""
        started = time.monotonic()
        model_id = str(uuid.uuid4())
        out = self.workdir / f"v{fedbuff.version + 1}.npz"
        try:
            version = fedbuff.flush(out)
            with out.open("rb") as combined:
                self.handler.store.write(model_key(model_id), combined)
            with out.open("rb") as combined:
                self.handler.files.stage(model_id, combined)
        except (ValueError, OSError, StoreError) as exc:
            logger.exception("async version failed session_id=%s", self.config.session_id)
            self._failed = f"making version {fedbuff.version + 1} failed: {exc}"
            self._wake.set()
            return
        self._models[version] = (model_id, out)
        for old in [v for v in self._models if v < version - fedbuff.max_staleness]:
            _, path = self._models.pop(old)
            path.unlink(missing_ok=True)
        participants, staleness, examples = self._participants, self._staleness, self._examples
        self._participants, self._staleness, self._examples = [], [], 0
        with self._lock:
            self._latest = (version, model_id)
        self._last_version_at = time.monotonic()
        logger.info(
            "async version made session_id=%s version=%d model_id=%s updates=%d",
            self.config.session_id,
            version,
            model_id,
            len(participants),
        )
        self._post(
            self.config.async_round_ids[version - 1],
            status=ReportStatus.SUCCESS,
            reason="",
            model_id=model_id,
            num_examples=examples,
            participants=participants,
            data={
                "version": version,
                "staleness": staleness,
                "nr_aggregated_models": len(participants),
                "nr_required_updates": fedbuff.buffer_size,
                "timeout": self.config.round_timeout,
                # With differential privacy: what the version's release was made of.
                **(
                    {"dp": dict(fedbuff.last_release)}
                    if isinstance(fedbuff, DpFedBuff) and fedbuff.last_release
                    else {}
                ),
            },
            timings={"time_model_aggregation": time.monotonic() - started},
        )
        self._wake.set()

    def _report_failed(self, reason: str) -> None:
        logger.warning("async session ended early session_id=%s reason=%s", self.config.session_id, reason)
        version = self._latest[0]
        if version >= self.versions:
            return
        self._post(
            self.config.async_round_ids[version],
            status=ReportStatus.FAILED,
            reason=reason,
            model_id=None,
            num_examples=0,
            participants=[],
            data={},
            timings={},
        )

    def _post(
        self,
        round_id: str,
        *,
        status: ReportStatus,
        reason: str,
        model_id: str | None,
        num_examples: int,
        participants: list[str],
        data: dict,
        timings: dict,
    ) -> None:
        try:
            report = RoundReport(
                combiner=self.handler.combiner_name,
                status=status,
                reason=reason,
                model_id=model_id,
                num_examples=num_examples,
                participants=tuple(participants),
                timings=timings,
                data=data,
                config={**self.config.raw, "round_id": round_id},
            )
        except RoundReportError:
            logger.exception("async report breaks the contract, not sent round_id=%s", round_id)
            return
        self.handler.reporter.post_round_report(round_id, report)
