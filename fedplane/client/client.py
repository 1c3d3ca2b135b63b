"""The edge client's life cycle: assignment, package, combiner link, heartbeats, task stream.

Wire-compatible with FEDn 0.9.5's client, with what it lacks: reconnects with capped backoff
when the controller or the combiner goes away, a re-assignment when the combiner stays away,
bounded tasks whose failures are reported instead of ending the client, and a clean stop.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from fedplane.client.backoff import Backoff
from fedplane.client.config import ClientConfig
from fedplane.client.connection import CombinerLink
from fedplane.client.controller import (
    Assignment,
    ControllerClient,
    ControllerRejected,
    ControllerUnavailable,
)
from fedplane.client.logs import log_event
from fedplane.client.tasks import TaskRunner, send_status, worker
from fedplane.numpyhelper import sha256_of
from fedplane.packages.archive import PackageError, safe_extract
from fedplane.packages.dispatcher import Dispatcher, EntryPointFailed
from fedplane.packages.manifest import find_package_root, read_fedn_yaml
from fedplane.proto import fedn_pb2

logger = logging.getLogger(__name__)

T = TypeVar("T")

STABLE_STREAM_SECONDS = 10.0


# Answers about the caller's credentials: retrying on the same combiner cannot change them.
REFUSED_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class ClientFatal(RuntimeError):
    """An error that retrying cannot fix: the client stops with a non-zero exit code."""


@dataclass(frozen=True)
class PreparedPackage:
    root: Path
    checksum: str


class EdgeClient:
    def __init__(self, config: ClientConfig, *, controller: ControllerClient | None = None):
        self.config = config
        self.controller = controller or ControllerClient(config)
        self.stop_event = threading.Event()
        self.package: PreparedPackage | None = None
        self.dispatcher: Dispatcher | None = None
        self.link: CombinerLink | None = None
        self._link_lock = threading.Lock()
        self._inbox: queue.Queue[tuple[fedn_pb2.TaskRequest, CombinerLink]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        # Counters the tests and logs read; written from several threads, read as plain ints.
        self.assignments = 0
        self.tasks_done = 0
        self.tasks_failed = 0

    # -- public ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stop() or a fatal error; returns the process exit code."""
        log_event(
            logger, logging.INFO, "client_start", name=self.config.name, controller=self.config.base_url
        )
        try:
            self._run()
        except ClientFatal as exc:
            log_event(logger, logging.CRITICAL, "client_fatal", error=str(exc))
            return 1
        except Exception as exc:  # a bug or an unusable machine: say so plainly, exit non-zero
            logger.exception("event=client_crashed error=%s", exc.__class__.__name__)
            return 1
        finally:
            self.stop_event.set()
            self._close_link()
            for thread in (self._worker, self._heartbeat):
                if thread is not None:
                    thread.join(timeout=10)
        log_event(logger, logging.INFO, "client_stopped", name=self.config.name)
        return 0

    def stop(self) -> None:
        """Ask the client to stop; safe from signal handlers and other threads."""
        self.stop_event.set()
        with self._link_lock:
            link = self.link
        if link is not None:
            link.mark_lost("client stopping")

    # -- life cycle ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stop_event.is_set():
            assignment = self._retry("assignment", self.controller.assign)
            if assignment is None:
                return
            self.assignments += 1
            log_event(
                logger,
                logging.INFO,
                "assigned",
                host=assignment.host,
                port=assignment.port,
                fqdn=assignment.fqdn,
                helper=assignment.helper_type,
            )
            if self.package is None:
                package = self._retry("package", self._prepare_package)
                if package is None:
                    return
                self.package = package
                self._start_worker()
            self._serve(assignment)
            # A short pause before asking again, so a combiner that drops us at once is no hot loop.
            self.stop_event.wait(self.config.backoff_initial)

    def _retry(self, what: str, attempt: Callable[[], T]) -> T | None:
        """Call `attempt` until it succeeds, backing off on transient errors; None when stopping."""
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        while not self.stop_event.is_set():
            try:
                return attempt()
            except ControllerRejected as exc:
                raise ClientFatal(str(exc)) from exc
            except ControllerUnavailable as exc:
                delay = backoff.next_delay()
                log_event(
                    logger,
                    logging.WARNING,
                    f"{what}_retry",
                    reason=str(exc),
                    attempt=backoff.attempts,
                    retry_in=f"{delay:.1f}",
                )
                self.stop_event.wait(delay)
        return None

    def _prepare_package(self) -> PreparedPackage:
        """Download, verify, unpack (once per checksum), build python_env, run startup."""
        workdir = self.config.workdir
        downloads = workdir / "downloads"
        try:
            archive = self.controller.download_package(downloads)
        except OSError as exc:  # e.g. a full disk: worth another try later
            raise ControllerUnavailable(f"cannot store the package: {exc}") from exc
        try:
            local = sha256_of(archive)
            expected = self.controller.package_checksum()
            if expected is not None and expected != local:
                raise ClientFatal(
                    f"package checksum mismatch: controller says {expected}, downloaded file is {local}"
                )
            if self.config.checksum and self.config.checksum.lower() != local:
                raise ClientFatal(
                    f"package checksum mismatch: settings say {self.config.checksum}, downloaded file is {local}"
                )
            # Content-addressed folder: a restart with the same package reuses it and its venv.
            target = workdir / f"pkg-{local[:16]}"
            if not target.is_dir():
                try:
                    safe_extract(archive, target)
                except (PackageError, FileExistsError) as exc:
                    raise ClientFatal(f"compute package refused: {exc}") from exc
        finally:
            archive.unlink(missing_ok=True)
        try:
            root = find_package_root(target)
            dispatcher = Dispatcher(
                root, read_fedn_yaml(root), extra_env={"FEDPLANE_CLIENT_NAME": self.config.name}
            )
            dispatcher.prepare_python_env()
            if dispatcher.has("startup"):
                dispatcher.run("startup", timeout=self.config.task_timeout, cancel=self.stop_event)
        except PackageError as exc:
            raise ClientFatal(f"compute package unusable: {exc}") from exc
        except EntryPointFailed as exc:
            if self.stop_event.is_set():
                raise ControllerUnavailable("stopping") from exc
            raise ClientFatal(f"package startup failed: {exc}") from exc
        self.dispatcher = dispatcher
        log_event(logger, logging.INFO, "package_ready", root=root, sha256=local[:16])
        return PreparedPackage(root, local)

    # -- combiner -------------------------------------------------------------------------------

    def _serve(self, assignment: Assignment) -> None:
        """Stay on the assigned combiner until it is lost for good or the client stops."""
        try:
            link = CombinerLink(assignment, self.config, token=self.controller.token)
        except (ValueError, OSError) as exc:
            log_event(logger, logging.ERROR, "combiner_link_failed", error=str(exc))
            self.stop_event.wait(self.config.backoff_initial)
            return
        with self._link_lock:
            self.link = link
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(link,), name="heartbeat", daemon=True
        )
        self._heartbeat.start()
        try:
            self._task_stream_loop(link)
        finally:
            self._close_link()
            self._heartbeat.join(timeout=self.config.heartbeat_interval + 15)

    def _close_link(self) -> None:
        with self._link_lock:
            link, self.link = self.link, None
        if link is not None:
            link.close()

    def _heartbeat_loop(self, link: CombinerLink) -> None:
        """Heartbeats double as the liveness check: too many misses in a row means lost."""
        missed = 0
        heartbeat = fedn_pb2.Heartbeat(sender=worker(self.config.name))
        timeout = max(2.0, min(10.0, self.config.heartbeat_interval * 2))
        while not link.lost.is_set():
            try:
                link.connector.SendHeartbeat(heartbeat, metadata=link.metadata, timeout=timeout)
                if missed:
                    log_event(logger, logging.INFO, "heartbeat_restored", after_missed=missed)
                missed = 0
            except grpc.RpcError as exc:
                if exc.code() in REFUSED_CODES:
                    # The combiner refuses this token (revoked, expired, another name): waiting
                    # cannot help; the controller says why on the next assignment.
                    link.mark_lost(f"combiner refused the client: {exc.code().name} {exc.details() or ''}")
                    return
                missed += 1
                log_event(
                    logger,
                    logging.WARNING,
                    "heartbeat_missed",
                    code=exc.code().name,
                    missed=missed,
                    limit=self.config.reconnect_after_missed_heartbeat,
                )
                if missed > self.config.reconnect_after_missed_heartbeat:
                    link.mark_lost(f"{missed} heartbeats missed")
                    return
            except ValueError:  # channel closed
                return
            link.lost.wait(self.config.heartbeat_interval)

    def _task_stream_loop(self, link: CombinerLink) -> None:
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        subscribe = fedn_pb2.ClientAvailableMessage(sender=worker(self.config.name))
        while not link.lost.is_set() and not self.stop_event.is_set():
            call = link.combiner.TaskStream(subscribe, metadata=link.metadata)
            link.track(call)
            opened = time.monotonic()
            log_event(logger, logging.INFO, "task_stream_open", address=link.address)
            try:
                for request in call:
                    backoff.reset()
                    self._on_task_request(request, link)
                reason = "stream ended by combiner"
            except grpc.RpcError as exc:
                reason = f"{exc.code().name} {exc.details() or ''}".strip()
                if exc.code() in REFUSED_CODES:
                    link.mark_lost(f"combiner refused the client: {reason}")
            finally:
                link.untrack(call)
            if link.lost.is_set() or self.stop_event.is_set():
                return
            if time.monotonic() - opened > STABLE_STREAM_SECONDS:
                backoff.reset()  # it was healthy for a while: this is a fresh outage
            delay = backoff.next_delay()
            log_event(logger, logging.WARNING, "task_stream_lost", reason=reason, retry_in=f"{delay:.1f}")
            link.lost.wait(delay)

    def _on_task_request(self, request: fedn_pb2.TaskRequest, link: CombinerLink) -> None:
        if request.sender.role != fedn_pb2.COMBINER:
            log_event(logger, logging.WARNING, "task_ignored", reason="sender is not a combiner")
            return
        send_status(
            link,
            self.config,
            "Received model update request.",
            log_level=fedn_pb2.Status.AUDIT,
            status_type=fedn_pb2.StatusType.MODEL_UPDATE_REQUEST,
            related=request,
            correlation_id=request.correlation_id,
            session_id=request.session_id,
        )
        wanted = (request.type == fedn_pb2.StatusType.MODEL_UPDATE and self.config.trainer) or (
            request.type == fedn_pb2.StatusType.MODEL_VALIDATION and self.config.validator
        )
        log_event(
            logger,
            logging.INFO,
            "task_received",
            type=fedn_pb2.StatusType.Name(request.type)
            if request.type in fedn_pb2.StatusType.values()
            else request.type,
            model_id=request.model_id,
            correlation_id=request.correlation_id,
            accepted=wanted,
        )
        if wanted:
            self._inbox.put((request, link))

    # -- task worker ------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        assert self.dispatcher is not None
        runner = TaskRunner(self.config, self.dispatcher, self.stop_event)
        shutil.rmtree(self.config.workdir / "tmp", ignore_errors=True)
        self._worker = threading.Thread(target=self._work, args=(runner,), name="task-worker", daemon=True)
        self._worker.start()

    def _work(self, runner: TaskRunner) -> None:
        while not self.stop_event.is_set():
            try:
                request, link = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if link.closed.is_set():
                log_event(
                    logger,
                    logging.WARNING,
                    "task_dropped",
                    reason="combiner link closed",
                    model_id=request.model_id,
                )
                continue
            try:
                ok = runner.handle(request, link)
            except Exception:  # a bug here must not end the worker and leave tasks unanswered
                logger.exception("event=task_crashed model_id=%s", request.model_id)
                ok = False
            if ok:
                self.tasks_done += 1
            else:
                self.tasks_failed += 1
