"""Rounds on one combiner: dispatch tasks, fold updates as they arrive, report to the controller.

One round runs at a time in a worker thread; Start calls while busy wait in a queue. Updates are
accepted only for outstanding tasks of the running round, so nothing leaks into the next one.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import grpc

from combiner_node import privacy
from combiner_node.asyncrun import AsyncRun
from combiner_node.clients import ClientRegistry
from combiner_node.messages import combiner_status
from combiner_node.modelfiles import InvalidModelId, ModelFiles
from combiner_node.reporter import ControllerReporter
from combiner_node.roundconfig import RoundConfig
from combiner_node.store import ArtifactNotFound, ArtifactStore, StoreError, model_key
from fedplane.proto import fedn_pb2
from fedplane.roundreport import ReportStatus, RoundData, RoundReport, RoundReportError, Timings

logger = logging.getLogger(__name__)


class Aggregator(Protocol):
    def start_round(self, global_model_path: Path) -> None: ...
    def add(self, update_path: Path, num_examples: int) -> None: ...
    @property
    def count(self) -> int: ...
    def finish(self, out_path: Path) -> None: ...


AggregatorFactory = Callable[[str, dict[str, Any] | None, Path], Aggregator]


def default_aggregator_factory(name: str, kwargs: dict[str, Any] | None, workdir: Path) -> Aggregator:
    from fedplane.aggregators import create_aggregator

    return create_aggregator(name, kwargs, workdir)


def default_aggregator_names() -> tuple[str, ...]:
    from fedplane.aggregators import AGGREGATOR_NAMES

    return tuple(AGGREGATOR_NAMES)


class UpdateRejected(Exception):
    """A model update that is malformed; answered with a gRPC error status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RoundFailed(Exception):
    pass


@dataclass
class ActiveRound:
    job_id: str
    config: RoundConfig
    aggregator: Aggregator
    outstanding: dict[str, str]  # correlation id -> client the task was given to
    buffer_target: int
    expected: int
    participants: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    num_examples: int = 0
    aggregation_seconds: float = 0.0
    closed: bool = False
    stop_reason: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    fold_lock: threading.Lock = field(default_factory=threading.Lock)
    # Updates taken off `outstanding` whose fold has not finished: the round waits for them too.
    in_flight: int = 0


def training_examples(meta_text: str) -> int:
    """`training_metadata.num_examples` of an update's meta JSON: mandatory, a positive int."""
    try:
        meta = json.loads(meta_text or "")
    except ValueError as exc:
        raise UpdateRejected(grpc.StatusCode.INVALID_ARGUMENT, "model update meta is not valid JSON") from exc
    training = meta.get("training_metadata") if isinstance(meta, dict) else None
    value = training.get("num_examples") if isinstance(training, dict) else None
    if value is None:
        raise UpdateRejected(
            grpc.StatusCode.INVALID_ARGUMENT, "model update meta lacks training_metadata.num_examples"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UpdateRejected(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"training_metadata.num_examples must be a positive integer, got {value!r}",
        )
    return value


# Global models a client may still download: one per task it may hold queued. An asynchronous
# session's versions are validated together once it has made the last one, a task on each.
GRANTED_PER_CLIENT = 128


class RoundHandler:
    def __init__(
        self,
        *,
        combiner_name: str,
        registry: ClientRegistry,
        files: ModelFiles,
        store: ArtifactStore,
        reporter: ControllerReporter,
        workdir: Path,
        max_clients: int,
        aggregator_factory: AggregatorFactory = default_aggregator_factory,
        aggregator_names: Callable[[], tuple[str, ...]] = default_aggregator_names,
    ) -> None:
        self.combiner_name = combiner_name
        self.registry = registry
        self.files = files
        self.store = store
        self.reporter = reporter
        self.max_clients = max_clients
        self._aggregator_factory = aggregator_factory
        self._aggregator_names = aggregator_names
        self._scratch = workdir / "scratch"
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._jobs: queue.Queue[tuple[str, RoundConfig] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: ActiveRound | None = None
        self._previous_round_ids: set[str] = set()
        # Global models each client was sent a task for: the only ids it may download.
        self._granted: dict[str, collections.deque[str]] = {}
        self._session_aggregator: tuple[tuple[str, str, str], Aggregator] | None = None
        # The asynchronous session running instead of a round (combiner_node/asyncrun.py).
        self._async_run: AsyncRun | None = None
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        # A download of a global model that has left the staged files fetches it again.
        files.fetch_missing = self._restage

    # Control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="round-handler", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float) -> None:
        self._stopping.set()
        self.stop_current("combiner shutting down")
        self._jobs.put(None)  # wakes the worker at once
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, config: RoundConfig) -> str:
        job_id = str(uuid.uuid4())
        self._idle.clear()
        self._jobs.put((job_id, config))
        logger.info(
            "round queued job_id=%s task=%s round_id=%s queued=%d",
            job_id,
            config.task,
            config.round_id,
            self._jobs.qsize(),
        )
        return job_id

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def stop_current(self, reason: str = "stopped") -> bool:
        with self._lock:
            current = self._current
            if self._async_run is not None:
                self._async_run.stop(reason)
                return True
            if current is None:
                return False
            current.stop_reason = reason
            current.done.set()
            return True

    def set_aggregator(self, name: str) -> bool:
        if name not in self._aggregator_names():
            return False
        with self._lock:
            # A new session starts: fedopt's optimizer state must not carry over.
            self._session_aggregator = None
        return True

    @property
    def current_round_id(self) -> str | None:
        with self._lock:
            return self._current.config.round_id if self._current else None

    @property
    def training_model_id(self) -> str | None:
        """The global model the open training round sent: it sets the size limit of the updates."""
        with self._lock:
            current = self._current
            if self._async_run is not None:
                return self._async_run.latest_model_id
            return current.config.model_id if current is not None and not current.closed else None

    # What a client may transfer ------------------------------------------------------------

    def may_download(self, client: str, model_id: str) -> bool:
        """Whether `client` was sent a task on `model_id` (one of its last few tasks)."""
        with self._lock:
            return model_id in self._granted.get(client, ())

    def upload_quota(self, client: str | None) -> int:
        """How many unclaimed updates `client` may keep on disk: one per outstanding training
        task of the running round; a caller without an identity shares twice the round's tasks."""
        with self._lock:
            current = self._current
            if self._async_run is not None:
                return self._async_run.upload_quota(client)
            if current is None or current.closed:
                return 0
            owners = list(current.outstanding.values())
        if client is None:
            return 2 * len(owners)
        return owners.count(client)

    def _grant(self, task: fedn_pb2.TaskRequest) -> None:
        with self._lock:
            granted = self._granted.setdefault(
                task.receiver.name, collections.deque(maxlen=GRANTED_PER_CLIENT)
            )
            if task.model_id not in granted:
                granted.append(task.model_id)

    def _dispatch(self, task: fedn_pb2.TaskRequest) -> None:
        self._grant(task)
        self.registry.tasks_of(task.receiver.name).put(task)

    # Updates from clients ----------------------------------------------------------------------

    def on_model_update(self, update: fedn_pb2.ModelUpdate, uploader: str = "") -> str:
        """Fold one update into the running round; returns the Response text.

        Raises UpdateRejected for malformed updates. Updates that do not belong to the running
        round are answered with an explanation and a WARNING status, and are never kept.
        `uploader` is the caller's proven name ("" without one): the update file must be its own.
        """
        try:
            update_path = self.files.update_path(update.model_update_id)
        except InvalidModelId as exc:
            raise UpdateRejected(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        owner = self.files.upload_owner(update.model_update_id)
        if owner is not None and owner != uploader:
            # Another caller's upload: neither claim it nor discard it.
            raise UpdateRejected(
                grpc.StatusCode.PERMISSION_DENIED,
                f"model update {update.model_update_id!r} was uploaded by another caller",
            )
        try:
            with self._lock:
                run = self._async_run
            if run is not None:
                try:
                    return run.on_model_update(update, update_path, lambda: training_examples(update.meta))
                except ValueError as exc:  # InvalidUpdate
                    raise UpdateRejected(
                        grpc.StatusCode.INVALID_ARGUMENT, f"model update refused: {exc}"
                    ) from exc
            with self._lock:
                current = self._current
                refusal = self._claim(current, update)
                if refusal is None:
                    # The file is the round's now: it no longer counts against the uploader's
                    # quota, which the outstanding tasks set (taken in the same step).
                    self.files.claim_update(update.model_update_id)
            if refusal is not None:
                return self._refuse(update, refusal)
            assert current is not None
            try:
                num_examples = training_examples(update.meta)
                if not update_path.is_file():
                    raise UpdateRejected(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"model update {update.model_update_id!r} was not uploaded to this combiner",
                    )
                return self._fold(current, update, update_path, num_examples)
            finally:
                # Answered, well or badly: the round need not wait for this task any longer.
                with self._lock:
                    current.in_flight -= 1
                self._maybe_done(current)
        finally:
            self.files.discard_update(update.model_update_id)

    def _claim(self, current: ActiveRound | None, update: fedn_pb2.ModelUpdate) -> str | None:
        """Takes the task off the outstanding list, or says why the update is not wanted."""
        correlation_id = update.correlation_id
        if (
            current is not None
            and current.closed
            and (correlation_id in current.outstanding or correlation_id in current.answered)
        ):
            return "it arrived after its round was closed"
        if current is None or current.closed:
            if correlation_id in self._previous_round_ids:
                return "it arrived after its round was closed"
            return "no training round is running"
        if correlation_id in current.answered:
            return "a model update for this task was already received"
        owner = current.outstanding.get(correlation_id)
        if owner is None:
            if correlation_id in self._previous_round_ids:
                return "it belongs to an earlier round"
            return "its correlation id is not a task of the current round"
        if owner != update.sender.name:
            return f"the task was given to {owner!r}, not {update.sender.name!r}"
        if update.model_id != current.config.model_id:
            return f"it was trained from model {update.model_id!r}, not {current.config.model_id!r}"
        del current.outstanding[correlation_id]
        current.answered.add(correlation_id)
        current.in_flight += 1
        return None

    def _refuse(self, update: fedn_pb2.ModelUpdate, why: str) -> str:
        text = f"Model update {update.model_update_id} from {update.sender.name} refused: {why}."
        logger.warning("%s", text)
        self.reporter.post(
            "/api/v1/statuses/",
            combiner_status(
                self.combiner_name,
                text,
                log_level=fedn_pb2.Status.WARNING,
                status_type=fedn_pb2.MODEL_UPDATE,
                correlation_id=update.correlation_id,
            ),
        )
        return text

    def _fold(
        self, current: ActiveRound, update: fedn_pb2.ModelUpdate, update_path: Path, num_examples: int
    ) -> str:
        from_name = update.sender.name
        with current.fold_lock:
            if current.closed:
                return self._refuse(update, "it arrived after its round was closed")
            started = time.monotonic()
            try:
                current.aggregator.add(update_path, num_examples)
            except ValueError as exc:  # InvalidUpdate and ModelFileError are ValueErrors
                # The task is answered: the round stops waiting for it, and the controller hears why.
                self._refuse(update, f"the model file is refused: {exc}")
                raise UpdateRejected(
                    grpc.StatusCode.INVALID_ARGUMENT, f"model update refused: {exc}"
                ) from exc
            current.aggregation_seconds += time.monotonic() - started
            current.participants.append(from_name)
            current.num_examples += num_examples
        logger.info(
            "model update accepted round_id=%s client=%s num_examples=%d aggregated=%d/%d",
            current.config.round_id,
            from_name,
            num_examples,
            len(current.participants),
            current.buffer_target,
        )
        return "Model update accepted."

    def _maybe_done(self, current: ActiveRound) -> None:
        with self._lock:
            waiting = bool(current.outstanding) or current.in_flight > 0
        if len(current.participants) >= current.buffer_target or not waiting:
            current.done.set()

    # The worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                if self._jobs.empty():
                    self._idle.set()
                continue
            if job is None:
                return
            job_id, config = job
            try:
                if config.task == "training" and config.mode == "async":
                    self._run_async(job_id, config)
                elif config.task == "training":
                    self._run_training(job_id, config)
                else:
                    self._run_validation(job_id, config)
            except Exception:
                logger.exception("round crashed job_id=%s round_id=%s", job_id, config.round_id)
                self._report_failed(config, "internal error in the combiner, see its log")
            finally:
                with self._lock:
                    self._current = None
                if self._jobs.empty():
                    self._idle.set()

    def _run_async(self, job_id: str, config: RoundConfig) -> None:
        run = AsyncRun(self, job_id, config, self._scratch / f"async-{job_id}")
        with self._lock:
            self._async_run = run
        try:
            run.run()
        finally:
            with self._lock:
                self._async_run = None

    def _stage(self, model_id: str) -> Path:
        staged = self.files.reuse_staged(model_id)
        if staged is not None:
            # E.g. this combiner's own combined model, adopted as the global model: no store read.
            return staged
        try:
            with self.store.open_read(model_key(model_id)) as source:
                return self.files.stage(model_id, source)
        except ArtifactNotFound as exc:
            raise RoundFailed(f"global model {model_id} is not in the artifact store") from exc
        except StoreError as exc:
            raise RoundFailed(f"could not fetch global model {model_id}: {exc}") from exc
        except OSError as exc:  # e.g. no room left on the combiner's disk
            raise RoundFailed(f"could not stage global model {model_id}: {exc}") from exc

    def _restage(self, model_id: str) -> Path:
        """A global model a client asks for after later ones pushed it out of the staged files
        (e.g. the validations of an asynchronous session's versions, sent together): staged from
        the store again, if some client was sent a task on it."""
        with self._lock:
            granted = any(model_id in models for models in self._granted.values())
        if not granted:
            raise FileNotFoundError(model_id)
        try:
            return self._stage(model_id)
        except RoundFailed as exc:
            raise FileNotFoundError(model_id) from exc

    def _select(self, wanted: int) -> list[str]:
        online = self.registry.online_names()
        return random.sample(online, min(wanted, self.max_clients, len(online)))

    def _aggregator_for(self, config: RoundConfig) -> Aggregator:
        key = (
            config.session_id,
            config.aggregator,
            repr(sorted(config.aggregator_kwargs.items())) + privacy.aggregator_key(config),
        )
        with self._lock:
            if self._session_aggregator is not None and self._session_aggregator[0] == key:
                return self._session_aggregator[1]
        try:
            aggregator = privacy.dp_aggregator(
                config, self._scratch / "aggregator"
            ) or self._aggregator_factory(
                config.aggregator, config.aggregator_kwargs or None, self._scratch / "aggregator"
            )
        except ValueError as exc:
            raise RoundFailed(f"aggregator {config.aggregator!r} cannot be used: {exc}") from exc
        with self._lock:
            self._session_aggregator = (key, aggregator)
        return aggregator

    def _task(self, config: RoundConfig, client: str, task_type: int, data: str = "") -> fedn_pb2.TaskRequest:
        """A task for `client`; `data` (the round config as JSON, for MODEL_UPDATE) is the same for
        every client of the round, so it is written once per round, not per task."""
        task = fedn_pb2.TaskRequest(
            sender=fedn_pb2.Client(name=self.combiner_name, role=fedn_pb2.COMBINER),
            receiver=fedn_pb2.Client(name=client, role=fedn_pb2.WORKER),
            model_id=config.model_id,
            correlation_id=str(uuid.uuid4()),
            timestamp=str(datetime.now()),
            session_id=config.session_id,
            type=task_type,
            data=data,
        )
        return task

    def _run_training(self, job_id: str, config: RoundConfig) -> None:
        started = time.monotonic()
        try:
            staged = self._stage(config.model_id)
            time_model_load = time.monotonic() - started
            online = len(self.registry.online_names())
            if online < config.clients_required:
                raise RoundFailed(f"too few clients: {online} online, {config.clients_required} required")
            selected = self._select(max(config.clients_requested, config.clients_required))
            if len(selected) < config.clients_required:
                raise RoundFailed(
                    f"too few clients: {len(selected)} selectable, {config.clients_required} required"
                )
            aggregator = self._aggregator_for(config)
            try:
                aggregator.start_round(staged)
            except ValueError as exc:
                raise RoundFailed(f"global model {config.model_id} is not usable: {exc}") from exc
        except RoundFailed as exc:
            self._report_failed(config, str(exc))
            return

        data = json.dumps({**config.raw, "_job_id": job_id})
        tasks = [self._task(config, client, fedn_pb2.MODEL_UPDATE, data) for client in selected]
        buffer_target = len(selected) if config.buffer_size == -1 else config.buffer_size
        current = ActiveRound(
            job_id=job_id,
            config=config,
            aggregator=aggregator,
            outstanding={task.correlation_id: task.receiver.name for task in tasks},
            buffer_target=buffer_target,
            expected=len(selected),
        )
        with self._lock:
            self._current = current
        for task in tasks:
            self._dispatch(task)
        logger.info(
            "round started round_id=%s clients=%s buffer=%d timeout=%s",
            config.round_id,
            ",".join(selected),
            buffer_target,
            config.round_timeout,
        )

        closed_by = "buffer"
        if not current.done.wait(config.round_timeout):
            closed_by = "timeout"
        with current.fold_lock:
            current.closed = True
        with self._lock:
            self._previous_round_ids = {task.correlation_id for task in tasks}
        self.registry.discard_tasks(set(current.outstanding))
        self.files.purge_updates_older_than(time.time() - config.round_timeout - 60)

        if current.stop_reason is not None:
            self._report_failed(config, current.stop_reason, current)
            return
        if not current.participants:
            self._report_failed(
                config,
                f"no model update arrived before the round timeout ({config.round_timeout:g} s)",
                current,
            )
            return
        combine_started = time.monotonic()
        new_model_id = str(uuid.uuid4())
        out_path = self._scratch / f"{new_model_id}.npz"
        try:
            finish_started = time.monotonic()
            aggregator.finish(out_path)
            current.aggregation_seconds += time.monotonic() - finish_started
            with out_path.open("rb") as combined:
                self.store.write(model_key(new_model_id), combined)
            # Kept beside the store's copy: alone in a round, it becomes the global model that the
            # validation and the next round send, and they need not fetch it back.
            try:
                self.files.stage_local(new_model_id, out_path)
            except OSError as exc:
                logger.warning("combined model not kept for reuse model_id=%s error=%s", new_model_id, exc)
        except (ValueError, OSError, StoreError) as exc:
            logger.exception("combining failed round_id=%s", config.round_id)
            self._report_failed(config, f"combining the updates failed: {exc}", current)
            return
        finally:
            out_path.unlink(missing_ok=True)
        logger.info(
            "round finished round_id=%s model_id=%s updates=%d closed_by=%s",
            config.round_id,
            new_model_id,
            len(current.participants),
            closed_by,
        )
        self._report(
            config,
            current,
            status=ReportStatus.SUCCESS,
            reason="",
            model_id=new_model_id,
            timings=Timings(
                time_combination=time.monotonic() - combine_started,
                time_model_load=time_model_load,
                time_model_aggregation=current.aggregation_seconds,
            ),
        )

    def _run_validation(self, job_id: str, config: RoundConfig) -> None:
        try:
            self._stage(config.model_id)
        except RoundFailed as exc:
            self._post_status(config, f"Validation not started: {exc}.", fedn_pb2.Status.WARNING)
            return
        targets = self._select(self.max_clients)
        for client in targets:
            self._dispatch(self._task(config, client, fedn_pb2.MODEL_VALIDATION))
        logger.info("validation requested model_id=%s clients=%s", config.model_id, ",".join(targets))

    # Reports ---------------------------------------------------------------------------------

    def _post_status(self, config: RoundConfig, text: str, level: int) -> None:
        self.reporter.post(
            "/api/v1/statuses/",
            combiner_status(self.combiner_name, text, log_level=level, session_id=config.session_id),
        )

    def _report_failed(self, config: RoundConfig, reason: str, current: ActiveRound | None = None) -> None:
        logger.warning("round failed round_id=%s reason=%s", config.round_id, reason)
        if config.task != "training" or not config.round_id:
            return
        self._report(config, current, status=ReportStatus.FAILED, reason=reason, model_id=None, timings={})

    def _report(
        self,
        config: RoundConfig,
        current: ActiveRound | None,
        *,
        status: ReportStatus,
        reason: str,
        model_id: str | None,
        timings: Timings,
    ) -> None:
        participants = list(current.participants) if current else []
        try:
            report = RoundReport(
                combiner=self.combiner_name,
                status=status,
                reason=reason,
                model_id=model_id,
                num_examples=current.num_examples if current else 0,
                participants=tuple(participants),
                timings=timings,
                data=RoundData(
                    nr_expected_updates=current.expected if current else 0,
                    nr_required_updates=current.buffer_target if current else 0,
                    timeout=config.round_timeout,
                    nr_aggregated_models=len(participants),
                )
                | (privacy.report_data(current.aggregator) if current and model_id else {}),
                config=config.raw,
            )
        except RoundReportError:
            # A bug here, not a round outcome: the controller would refuse it; the worker lives on.
            logger.exception("round report breaks the contract, not sent round_id=%s", config.round_id)
            return
        self.reporter.post_round_report(config.round_id, report)
