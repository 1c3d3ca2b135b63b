"""One combiner node: wires the client table, round handler, reporter and gRPC server together."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from combiner_node.auth import AuthSettings, IdentityGuard, JWTInterceptor, RevocationList
from combiner_node.clients import ClientRegistry
from combiner_node.modelfiles import ModelFiles
from combiner_node.reporter import ControllerReporter
from combiner_node.revocations import POLL_SECONDS, RevocationPoller
from combiner_node.rounds import AggregatorFactory, RoundHandler, default_aggregator_factory
from combiner_node.server import Servicers, TlsConfig, create_server
from combiner_node.servicers import (
    CombinerServicer,
    ConnectorServicer,
    ControlServicer,
    ModelServiceServicer,
    ReducerServicer,
)
from combiner_node.store import ArtifactStore

logger = logging.getLogger(__name__)

TRANSITION_CHECK_SECONDS = 1.0


@dataclass
class NodeSettings:
    name: str
    store: ArtifactStore
    bind: str = "127.0.0.1"
    port: int = 12080
    controller_url: str | None = None
    token: str | None = None
    auth_scheme: str = "Bearer"
    auth: AuthSettings | None = None
    tls: TlsConfig | None = None
    max_clients: int = 30
    online_window: float = 10.0
    workdir: Path | None = None
    max_upload_bytes: int = 2 * 1024**3
    revocation_poll_seconds: float = POLL_SECONDS
    aggregator_factory: AggregatorFactory = field(default=default_aggregator_factory)


class CombinerNode:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self._own_workdir = settings.workdir is None
        self.workdir = settings.workdir or Path(tempfile.mkdtemp(prefix=f"combiner-{settings.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stopping = threading.Event()
        self.registry = ClientRegistry(settings.online_window)
        self.reporter = ControllerReporter(
            settings.controller_url, token=settings.token, auth_scheme=settings.auth_scheme
        )
        self.files = ModelFiles(self.workdir, max_upload_bytes=settings.max_upload_bytes)
        self.revoked = RevocationList()
        self.guard = IdentityGuard(settings.auth, combiner_name=settings.name, revoked=self.revoked)
        self._revocations: RevocationPoller | None = None
        if settings.auth is not None and settings.controller_url:
            self._revocations = RevocationPoller(
                settings.controller_url,
                self.revoked,
                token=settings.token,
                auth_scheme=settings.auth_scheme,
                interval=settings.revocation_poll_seconds,
            )
        self.rounds = RoundHandler(
            combiner_name=settings.name,
            registry=self.registry,
            files=self.files,
            store=settings.store,
            reporter=self.reporter,
            workdir=self.workdir,
            max_clients=settings.max_clients,
            aggregator_factory=settings.aggregator_factory,
        )
        servicers = Servicers(
            connector=ConnectorServicer(
                name=settings.name,
                registry=self.registry,
                reporter=self.reporter,
                max_clients=settings.max_clients,
                guard=self.guard,
            ),
            combiner=CombinerServicer(
                name=settings.name,
                registry=self.registry,
                rounds=self.rounds,
                reporter=self.reporter,
                stopping=self.stopping,
                guard=self.guard,
            ),
            model_service=ModelServiceServicer(files=self.files, rounds=self.rounds, guard=self.guard),
            control=ControlServicer(rounds=self.rounds),
            reducer=ReducerServicer(),
        )
        interceptors = [JWTInterceptor(self.guard)] if settings.auth else []
        self.server: grpc.Server
        self.server, self.port, self._health = create_server(
            f"{settings.bind}:{settings.port}", servicers, interceptors=interceptors, tls=settings.tls
        )
        self._monitor = threading.Thread(target=self._watch_clients, name="client-monitor", daemon=True)

    def start(self) -> None:
        if self._revocations is not None:
            self._revocations.start()
        self.reporter.start()
        self.rounds.start()
        self.server.start()
        self._monitor.start()
        logger.info("combiner serving name=%s port=%d workdir=%s", self.name, self.port, self.workdir)

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, end task streams, finish the running round's report, flush reports."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._health.enter_graceful_shutdown()
        self.registry.wake_all()
        self.rounds.shutdown(timeout=grace)
        self.server.stop(grace).wait(grace + 1)
        self._report_transitions()
        leaving = self.registry.all_offline()
        if leaving:
            self.reporter.post(
                f"/api/v1/combiners/{self.name}/clients",
                {"clients": [change.as_report() for change in leaving]},
            )
        self.reporter.close(timeout=grace)
        if self._revocations is not None:
            self._revocations.stop()
        if self._monitor.is_alive():
            self._monitor.join(timeout=TRANSITION_CHECK_SECONDS * 2)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        logger.info("combiner stopped name=%s", self.name)

    def _report_transitions(self) -> None:
        changes = self.registry.transitions()
        if changes:
            self.reporter.post(
                f"/api/v1/combiners/{self.name}/clients",
                {"clients": [change.as_report() for change in changes]},
            )

    def _watch_clients(self) -> None:
        # One batched report per check, never one REST call per heartbeat.
        while not self.stopping.wait(TRANSITION_CHECK_SECONDS):
            try:
                self._report_transitions()
            except Exception:
                logger.exception("client monitor failed")
