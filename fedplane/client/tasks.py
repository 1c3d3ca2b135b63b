"""Training and validation tasks: what the client does with each TaskRequest.

Messages match FEDn 0.9.5's client field by field (ModelUpdate.meta, ModelValidation,
Status texts, levels and types). A failing task becomes an ERROR Status carrying the reason and
the entry point's stderr tail, and the client carries on.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from fedplane.client.config import ClientConfig
from fedplane.client.connection import CombinerLink
from fedplane.client.logs import log_event
from fedplane.client.transfer import TransferFailed, download_model, upload_model
from fedplane.packages.dispatcher import Dispatcher, EntryPointFailed
from fedplane.proto import fedn_pb2

logger = logging.getLogger(__name__)

STATUS_TIMEOUT = 10.0


class TaskFailed(RuntimeError):
    """A task could not complete; `stderr_tail` holds the entry point's last words, if any."""

    def __init__(self, message: str, *, stderr_tail: str = "", returncode: int | None = None):
        super().__init__(message)
        self.stderr_tail = stderr_tail
        self.returncode = returncode


def worker(name: str) -> fedn_pb2.Client:
    return fedn_pb2.Client(name=name, role=fedn_pb2.WORKER)


def send_status(
    link: CombinerLink,
    config: ClientConfig,
    text: str,
    *,
    log_level: int = fedn_pb2.Status.INFO,
    status_type: int | None = None,
    related: Message | None = None,
    correlation_id: str = "",
    session_id: str = "",
    extra: str = "",
) -> bool:
    """Send a Status without waiting for the combiner's answer: a task never waits on its own
    statuses. A failure is logged when the answer comes, never raised (statuses are best effort).
    True when the status went out on the channel."""
    status = fedn_pb2.Status(
        sender=worker(config.name),
        status=text,
        log_level=log_level,  # type: ignore[arg-type]
        correlation_id=correlation_id,
        session_id=session_id,
        extra=extra,
    )
    status.timestamp.GetCurrentTime()
    if status_type is not None:
        status.type = status_type  # type: ignore[assignment]
    if related is not None:
        status.data = MessageToJson(related)
    try:
        answer = link.connector.SendStatus.future(status, metadata=link.metadata, timeout=STATUS_TIMEOUT)
    except grpc.RpcError as exc:
        log_event(logger, logging.WARNING, "status_not_sent", status=text, code=exc.code().name)
        return False
    except ValueError:
        log_event(logger, logging.WARNING, "status_not_sent", status=text, code="CHANNEL_CLOSED")
        return False
    answer.add_done_callback(lambda call: _status_answered(call, text))
    return True


def _status_answered(call: Any, text: str) -> None:
    if call.cancelled():
        log_event(logger, logging.WARNING, "status_not_sent", status=text, code="CANCELLED")
        return
    error = call.exception()
    if error is not None:
        code = error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
        log_event(logger, logging.WARNING, "status_not_sent", status=text, code=code)


class TaskRunner:
    """Runs one TaskRequest at a time against the package's entry points."""

    def __init__(self, config: ClientConfig, dispatcher: Dispatcher, cancel: threading.Event):
        self.config = config
        self.dispatcher = dispatcher
        self.cancel = cancel
        self.scratch = config.workdir / "tmp"

    def handle(self, request: fedn_pb2.TaskRequest, link: CombinerLink) -> bool:
        """Run the task; True when its result reached the combiner."""
        if request.type == fedn_pb2.StatusType.MODEL_UPDATE:
            return self._guard(request, link, "training", self._train)
        if request.type == fedn_pb2.StatusType.MODEL_VALIDATION:
            return self._guard(request, link, "validation", self._validate)
        log_event(logger, logging.WARNING, "task_ignored", type=request.type, model_id=request.model_id)
        return False

    def _guard(self, request: fedn_pb2.TaskRequest, link: CombinerLink, kind: str, run: Any) -> bool:
        started = time.monotonic()
        self.scratch.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.scratch))
        try:
            run(request, link, scratch)
        except TaskFailed as exc:
            log_event(
                logger,
                logging.ERROR,
                "task_failed",
                kind=kind,
                model_id=request.model_id,
                correlation_id=request.correlation_id,
                error=str(exc),
                returncode=exc.returncode,
            )
            send_status(
                link,
                self.config,
                f"Model {kind} failed: {exc}",
                log_level=fedn_pb2.Status.ERROR,
                status_type=request.type,
                related=request,
                correlation_id=request.correlation_id,
                session_id=request.session_id,
                extra=json.dumps(
                    {"error": str(exc), "returncode": exc.returncode, "stderr_tail": exc.stderr_tail}
                ),
            )
            return False
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log_event(
            logger,
            logging.INFO,
            "task_done",
            kind=kind,
            model_id=request.model_id,
            correlation_id=request.correlation_id,
            seconds=f"{time.monotonic() - started:.2f}",
        )
        return True

    # -- steps ------------------------------------------------------------------------------

    def _fetch(self, request: fedn_pb2.TaskRequest, link: CombinerLink, path: Path) -> None:
        try:
            size = download_model(
                link.channel,
                request.model_id,
                path,
                sender_name=self.config.name,
                metadata=link.metadata,
                timeout=self.config.transfer_timeout,
            )
        except TransferFailed as exc:
            raise TaskFailed(str(exc)) from exc
        log_event(logger, logging.DEBUG, "model_downloaded", model_id=request.model_id, bytes=size)

    def _run_entry_point(self, name: str, *args: str) -> None:
        if not self.dispatcher.has(name):
            raise TaskFailed(f"the compute package has no '{name}' entry point")
        try:
            self.dispatcher.run(name, *args, timeout=self.config.task_timeout, cancel=self.cancel)
        except EntryPointFailed as exc:
            raise TaskFailed(str(exc), stderr_tail=exc.stderr_tail, returncode=exc.returncode) from exc

    def _train(self, request: fedn_pb2.TaskRequest, link: CombinerLink, scratch: Path) -> None:
        tic_total = time.monotonic()
        send_status(
            link,
            self.config,
            f"\t Starting processing of training request for model_id {request.model_id}",
            session_id=request.session_id,
        )
        in_path, out_path = scratch / "in.npz", scratch / "out.npz"
        meta: dict[str, Any] = {}
        tic = time.monotonic()
        self._fetch(request, link, in_path)
        meta["fetch_model"] = time.monotonic() - tic

        tic = time.monotonic()
        self._run_entry_point("train", str(in_path), str(out_path))
        meta["exec_training"] = time.monotonic() - tic
        meta["training_metadata"] = _read_training_metadata(out_path)

        tic = time.monotonic()
        update_id = str(uuid.uuid4())
        try:
            upload_model(
                link.channel,
                out_path,
                update_id,
                metadata=link.metadata,
                timeout=self.config.transfer_timeout,
            )
        except TransferFailed as exc:
            raise TaskFailed(str(exc)) from exc
        meta["upload_model"] = time.monotonic() - tic
        meta["processing_time"] = time.monotonic() - tic_total
        meta["config"] = request.data

        update = fedn_pb2.ModelUpdate(
            sender=worker(self.config.name),
            receiver=fedn_pb2.Client(name=request.sender.name, role=request.sender.role),
            model_id=request.model_id,
            model_update_id=update_id,
            correlation_id=request.correlation_id,
            timestamp=str(datetime.now()),
            meta=json.dumps(meta),
        )
        self._deliver(
            link.combiner.SendModelUpdate,
            update,
            "model update",
            link,
            request,
            fedn_pb2.StatusType.MODEL_UPDATE,
            "Model update completed.",
        )

    def _validate(self, request: fedn_pb2.TaskRequest, link: CombinerLink, scratch: Path) -> None:
        tic_total = time.monotonic()
        send_status(
            link,
            self.config,
            f"Processing validate request for model_id {request.model_id}",
            session_id=request.session_id,
        )
        in_path, out_path = scratch / "in.npz", scratch / "metrics.json"
        meta: dict[str, Any] = {}
        tic = time.monotonic()
        self._fetch(request, link, in_path)
        meta["fetch_model"] = time.monotonic() - tic
        tic = time.monotonic()
        self._run_entry_point("validate", str(in_path), str(out_path))
        meta["exec_validation"] = time.monotonic() - tic
        metrics = _read_json_object(out_path, "validation output")
        # As a model update's meta times its training; FEDn 0.9.5 leaves this field empty.
        meta["processing_time"] = time.monotonic() - tic_total

        validation = fedn_pb2.ModelValidation(
            sender=worker(self.config.name),
            receiver=fedn_pb2.Client(name=request.sender.name, role=request.sender.role),
            model_id=request.model_id,
            data=json.dumps(metrics),
            correlation_id=request.correlation_id,
            session_id=request.session_id,
            meta=json.dumps(meta),
        )
        validation.timestamp.GetCurrentTime()
        self._deliver(
            link.combiner.SendModelValidation,
            validation,
            "validation",
            link,
            request,
            fedn_pb2.StatusType.MODEL_VALIDATION,
            "Model validation completed.",
        )

    def _deliver(
        self,
        rpc: Any,
        message: Any,
        what: str,
        link: CombinerLink,
        request: fedn_pb2.TaskRequest,
        status_type: int,
        done: str,
    ) -> None:
        """Hand a task's result to the combiner, then tell FEDn's AUDIT status that it is done."""
        try:
            rpc(message, metadata=link.metadata, timeout=STATUS_TIMEOUT)
        except grpc.RpcError as exc:
            raise TaskFailed(f"combiner did not take the {what}: {exc.code().name}") from exc
        except ValueError as exc:
            raise TaskFailed(f"{what} not sent: {exc}") from exc
        send_status(
            link,
            self.config,
            done,
            log_level=fedn_pb2.Status.AUDIT,
            status_type=status_type,
            related=message,
            correlation_id=request.correlation_id,
            session_id=request.session_id,
        )


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise TaskFailed(f"the entry point wrote no {what} ({path.name})")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TaskFailed(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TaskFailed(f"{what} must be a JSON object")
    return value


def _read_training_metadata(out_path: Path) -> dict[str, Any]:
    if not out_path.is_file():
        raise TaskFailed("the train entry point wrote no model")
    metadata = _read_json_object(out_path.with_name(out_path.name + "-metadata"), "training metadata")
    examples = metadata.get("num_examples")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise TaskFailed("training metadata needs num_examples, a non-negative integer")
    return metadata
