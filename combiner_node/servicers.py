"""Thin gRPC servicers: unpack the request, call the owning component, pack the answer."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import grpc

from combiner_node.auth import AuthDenied, Caller, IdentityGuard
from combiner_node.clients import ClientRegistry
from combiner_node.messages import combiner_status, to_report
from combiner_node.modelfiles import InvalidModelId, ModelFiles, UploadNotWanted, UploadTooLarge
from combiner_node.reporter import ControllerReporter
from combiner_node.roundconfig import RoundConfigError, parse_round_config
from combiner_node.rounds import RoundHandler, UpdateRejected
from fedplane.modelwire import ChunkMessage, MalformedMessage, chunk_message, read_request, response_header
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

logger = logging.getLogger(__name__)

CLIENT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# A task stream with nothing to send looks again this often at its credentials and the stop flag;
# a task, a revocation or the node stopping wakes it at once, and a token's expiry bounds the wait.
# Long, since thousands of idle streams each wake this often.
TASK_WAIT_SECONDS = 60.0
# ListActiveClients builds one message per online client; while no client came, went or opened or
# closed a stream, its answer is reused this long (a heartbeat-only client lapsing shows this late).
LIST_REUSE_SECONDS = 0.5

Context = grpc.ServicerContext | grpc.aio.ServicerContext


def _checked_name(sender: fedn_pb2.Client) -> str:
    if not CLIENT_NAME.match(sender.name):
        raise AuthDenied(grpc.StatusCode.INVALID_ARGUMENT, f"invalid client name {sender.name!r}")
    return sender.name


async def _sender(guard: IdentityGuard, sender: fedn_pb2.Client, context: grpc.aio.ServicerContext) -> Caller:
    """The caller, once its token and certificate are shown to be the message's sender's."""
    try:
        return guard.require_sender(context, _checked_name(sender))
    except AuthDenied as denied:
        await context.abort(denied.code, denied.details)
        raise


def _sender_sync(guard: IdentityGuard, sender: fedn_pb2.Client, context: grpc.ServicerContext) -> Caller:
    """`_sender` for the calls served on threads."""
    try:
        return guard.require_sender(context, _checked_name(sender))
    except AuthDenied as denied:
        context.abort(denied.code, denied.details)
        raise


def _caller_sync(guard: IdentityGuard, context: grpc.ServicerContext) -> Caller:
    try:
        return guard.caller(context)
    except AuthDenied as denied:
        context.abort(denied.code, denied.details)
        raise


class ConnectorServicer(fedn_pb2_grpc.ConnectorServicer):
    def __init__(
        self,
        *,
        name: str,
        registry: ClientRegistry,
        reporter: ControllerReporter,
        max_clients: int,
        guard: IdentityGuard,
    ) -> None:
        self.identity = fedn_pb2.Client(name=name, role=fedn_pb2.COMBINER)
        self.registry = registry
        self.reporter = reporter
        self.max_clients = max_clients
        self.guard = guard
        self._listed: tuple[int, float, fedn_pb2.ClientList] | None = None

    async def SendStatus(
        self, request: fedn_pb2.Status, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.Response:
        await _sender(self.guard, request.sender, context)
        self.reporter.post("/api/v1/statuses/", to_report(request))
        return fedn_pb2.Response(sender=self.identity, response="Status received.")

    def _online_clients(self) -> fedn_pb2.ClientList:
        generation = self.registry.generation
        now = time.monotonic()
        listed = self._listed
        if listed is not None and listed[0] == generation and now - listed[1] < LIST_REUSE_SECONDS:
            return listed[2]
        clients = [fedn_pb2.Client(name=name, role=fedn_pb2.WORKER) for name in self.registry.online_names()]
        answer = fedn_pb2.ClientList(client=clients)
        self._listed = (generation, now, answer)
        return answer

    async def ListActiveClients(
        self, request: fedn_pb2.ListClientsRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ClientList:
        return self._online_clients()

    async def AcceptingClients(
        self, request: fedn_pb2.ConnectionRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ConnectionResponse:
        accepting = (
            self.registry.streaming_count() < self.max_clients
            and len(self._online_clients().client) < self.max_clients
        )
        return fedn_pb2.ConnectionResponse(status=fedn_pb2.ACCEPTING if accepting else fedn_pb2.NOT_ACCEPTING)

    async def SendHeartbeat(
        self, request: fedn_pb2.Heartbeat, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.Response:
        await _sender(self.guard, request.sender, context)
        self.registry.touch(request.sender.name)
        return fedn_pb2.Response(sender=self.identity, response="Heartbeat received")


class CombinerServicer(fedn_pb2_grpc.CombinerServicer):
    def __init__(
        self,
        *,
        name: str,
        registry: ClientRegistry,
        rounds: RoundHandler,
        reporter: ControllerReporter,
        stopping: threading.Event,
        guard: IdentityGuard,
        max_clients: int,
    ) -> None:
        self.guard = guard
        self.name = name
        self.identity = fedn_pb2.Client(name=name, role=fedn_pb2.COMBINER)
        self.registry = registry
        self.rounds = rounds
        self.reporter = reporter
        self.stopping = stopping
        self.max_clients = max_clients

    async def TaskStream(
        self, request: fedn_pb2.ClientAvailableMessage, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fedn_pb2.TaskRequest]:
        caller = await _sender(self.guard, request.sender, context)
        client = request.sender.name
        state = self.registry.open_stream(client, capacity=self.max_clients)
        if state is None:
            logger.info("task stream refused client=%s reason=full max_clients=%d", client, self.max_clients)
            # UNAVAILABLE, not RESOURCE_EXHAUSTED: FEDn 0.9.5's client waits 5 s before it asks
            # again after UNAVAILABLE, and retries at once, in a tight loop, after any other code.
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"Combiner {self.name} is full: its max_clients ({self.max_clients}) clients are "
                "connected. Ask the controller for another combiner (/add_client).",
            )
        tasks = state.tasks
        text = f"Client {client} connecting to TaskStream."
        logger.info("%s", text)
        self.reporter.post("/api/v1/statuses/", combiner_status(self.name, text))
        lapsed: AuthDenied | None = None
        try:
            while not self.stopping.is_set():
                lapsed = self.guard.still_valid(caller)
                if lapsed is not None:
                    break
                wait = TASK_WAIT_SECONDS
                if caller.expires_at is not None:
                    wait = max(0.0, min(wait, caller.expires_at - time.time()))
                task = await tasks.next_task(timeout=wait)
                if task is not None:
                    yield task
        finally:
            self.registry.close_stream(client)
            if lapsed is not None or self.guard.still_valid(caller) is not None:
                # Refused credentials: offline now, also when the client hung up after a heartbeat
                # of it was refused.
                self.registry.mark_offline(client)
        if lapsed is not None:
            logger.info("task stream closed client=%s reason=%s", client, lapsed.details)
            await context.abort(lapsed.code, lapsed.details)

    def SendModelUpdate(
        self, request: fedn_pb2.ModelUpdate, context: grpc.ServicerContext
    ) -> fedn_pb2.Response:
        # On a thread: the update is read and folded here.
        caller = _sender_sync(self.guard, request.sender, context)
        uploader = caller.name or ""
        try:
            text = self.rounds.on_model_update(request, uploader)
        except UpdateRejected as rejected:
            context.abort(rejected.code, rejected.message)
        return fedn_pb2.Response(sender=self.identity, response=text)

    async def SendModelValidation(
        self, request: fedn_pb2.ModelValidation, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.Response:
        await _sender(self.guard, request.sender, context)
        self.reporter.post("/api/v1/validations/", to_report(request))
        return fedn_pb2.Response(sender=self.identity, response="Validation received.")


class IncompleteUpload(Exception):
    pass


class ModelServiceServicer(fedn_pb2_grpc.ModelServiceServicer):
    """Download and Upload keep the chunk messages in wire form (fedplane/modelwire.py), so a
    chunk is copied once on its way between the file and the wire: register with
    `add_model_service`, which passes them through unparsed and unserialized."""

    def __init__(self, *, files: ModelFiles, rounds: RoundHandler, guard: IdentityGuard) -> None:
        self.files = files
        self.rounds = rounds
        self.guard = guard

    def Download(self, request: fedn_pb2.ModelRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        client = _caller_sync(self.guard, context).name
        if client is not None and not self.rounds.may_download(client, request.id):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"model {request.id!r} is not the model of a task of {client!r}",
            )
        header = response_header(request.id, fedn_pb2.IN_PROGRESS)
        try:
            chunks = self.files.read_chunks(request.id)
            for chunk in chunks:
                yield chunk_message(header, chunk)
        except FileNotFoundError:
            yield fedn_pb2.ModelResponse(
                id=request.id, status=fedn_pb2.FAILED, message=f"Model {request.id} is not available."
            ).SerializeToString()
            return
        yield fedn_pb2.ModelResponse(id=request.id, status=fedn_pb2.OK).SerializeToString()

    def Upload(
        self, request_iterator: Iterable[bytes], context: grpc.ServicerContext
    ) -> fedn_pb2.ModelResponse:
        requests = iter(request_iterator)
        first_raw = next(requests, None)
        if first_raw is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload")
        try:
            first = read_request(first_raw)
        except MalformedMessage as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ModelRequest: {exc}")
        model_id = first.model_id
        client = _caller_sync(self.guard, context).name
        quota = self.rounds.upload_quota(client)

        def chunks() -> Iterator[memoryview]:
            message: ChunkMessage | None = first
            while message is not None:
                if message.model_id != model_id:
                    raise IncompleteUpload(f"upload mixes model ids {model_id!r} and {message.model_id!r}")
                if message.data:
                    yield message.data
                if message.status == fedn_pb2.OK:
                    return
                raw = next(requests, None)
                try:
                    message = None if raw is None else read_request(raw)
                except MalformedMessage as exc:
                    raise IncompleteUpload(
                        f"malformed ModelRequest in the upload of {model_id!r}: {exc}"
                    ) from exc
            raise IncompleteUpload(f"upload of {model_id!r} ended without its OK terminator")

        try:
            self.files.receive_upload(
                model_id,
                chunks(),
                owner=client or "",
                quota=quota,
                global_model_id=self.rounds.training_model_id,
            )
        except UploadNotWanted as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except InvalidModelId as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except FileExistsError as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except UploadTooLarge as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except IncompleteUpload as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return fedn_pb2.ModelResponse(id=model_id, status=fedn_pb2.OK, message="Got model successfully.")


def add_model_service(
    servicer: fedn_pb2_grpc.ModelServiceServicer, server: grpc.Server | grpc.aio.Server
) -> None:
    """Register ModelService with its chunk messages passed through in wire form: requests to
    Upload arrive as bytes, Download's chunks leave as bytes."""
    handlers = {
        "Download": grpc.unary_stream_rpc_method_handler(
            servicer.Download, request_deserializer=fedn_pb2.ModelRequest.FromString
        ),
        "Upload": grpc.stream_unary_rpc_method_handler(
            servicer.Upload, response_serializer=fedn_pb2.ModelResponse.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fedn.ModelService", handlers),))


class ControlServicer(fedn_pb2_grpc.ControlServicer):
    def __init__(self, *, rounds: RoundHandler) -> None:
        self.rounds = rounds

    async def Start(
        self, request: fedn_pb2.ControlRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ControlResponse:
        params = {parameter.key: parameter.value for parameter in request.parameter}
        try:
            config = parse_round_config(params)
        except RoundConfigError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad round config: {exc}")
        job_id = self.rounds.submit(config)
        return fedn_pb2.ControlResponse(
            message="Success", parameter=[fedn_pb2.Parameter(key="job_id", value=job_id)]
        )

    async def Stop(
        self, request: fedn_pb2.ControlRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ControlResponse:
        stopped = self.rounds.stop_current("stopped")
        return fedn_pb2.ControlResponse(message="Success" if stopped else "Idle")

    async def FlushAggregationQueue(
        self, request: fedn_pb2.ControlRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ControlResponse:
        # Updates are never queued across rounds here, so there is nothing to flush.
        return fedn_pb2.ControlResponse(message="Success")

    async def SetAggregator(
        self, request: fedn_pb2.ControlRequest, context: grpc.aio.ServicerContext
    ) -> fedn_pb2.ControlResponse:
        params = {parameter.key: parameter.value for parameter in request.parameter}
        accepted = self.rounds.set_aggregator(params.get("aggregator", ""))
        return fedn_pb2.ControlResponse(message="Success" if accepted else "Failed")


class ReducerServicer(fedn_pb2_grpc.ReducerServicer):
    """GetGlobalModel is not part of the 0.9.5 protocol in practice: the base answers UNIMPLEMENTED."""
