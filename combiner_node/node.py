"""One combiner node: wires the client table, round handler, reporter and gRPC server together."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from combiner_node.auth import AuthSettings, IdentityGuard, JWTInterceptor, RevocationList
from combiner_node.clients import ClientRegistry, snapshot_body
from combiner_node.modelfiles import GIB, MIB, ModelFiles, UploadLimits
from combiner_node.reporter import ControllerReporter
from combiner_node.revocations import POLL_SECONDS, RevocationPoller
from combiner_node.rounds import AggregatorFactory, RoundHandler, default_aggregator_factory
from combiner_node.server import LoopServer, Servicers, TlsConfig
from combiner_node.servicers import (
    CombinerServicer,
    ConnectorServicer,
    ControlServicer,
    ModelServiceServicer,
    ReducerServicer,
)
from combiner_node.store import ArtifactStore

logger = logging.getLogger(__name__)

# How often the online set is checked for a change, which is reported at once.
PRESENCE_CHECK_SECONDS = 0.5
# A full snapshot at least this often even without a change: it moves last_seen on the controller
# and heals a lost report. The controller counts a combiner silent after a few missed periods.
PRESENCE_REPORT_SECONDS = 3.0


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
    presence_interval: float = PRESENCE_REPORT_SECONDS
    workdir: Path | None = None
    # A client's update may be update_size_factor x the round's global model + update_size_margin,
    # never over max_upload_bytes (None: what the disk holds, less disk_reserve_bytes).
    update_size_factor: float = 2.0
    update_size_margin: int = 16 * MIB
    max_upload_bytes: int | None = None
    disk_reserve_bytes: int = GIB
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
        self.files = ModelFiles(
            self.workdir,
            limits=UploadLimits(
                factor=settings.update_size_factor,
                margin_bytes=settings.update_size_margin,
                max_bytes=settings.max_upload_bytes,
                disk_reserve_bytes=settings.disk_reserve_bytes,
            ),
        )
        self.revoked = RevocationList(on_added=self.registry.wake_all)
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
                max_clients=settings.max_clients,
            ),
            model_service=ModelServiceServicer(files=self.files, rounds=self.rounds, guard=self.guard),
            control=ControlServicer(rounds=self.rounds),
            reducer=ReducerServicer(),
        )
        interceptors = [JWTInterceptor(self.guard)] if settings.auth else []
        self.server = LoopServer(
            f"{settings.bind}:{settings.port}",
            servicers,
            interceptors=interceptors,
            tls=settings.tls,
            max_clients=settings.max_clients,
        )
        self.port = self.server.port
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
        self.server.enter_graceful_shutdown()
        self.registry.wake_all()
        self.rounds.shutdown(timeout=grace)
        self.server.stop(grace)
        if self._monitor.is_alive():
            self._monitor.join(timeout=PRESENCE_CHECK_SECONDS * 4)
        # Leaving: an empty online set, so the controller takes this combiner's clients offline now.
        self.reporter.post(self._presence_path, snapshot_body(self.registry.all_offline()), replace=True)
        self.reporter.close(timeout=grace)
        if self._revocations is not None:
            self._revocations.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        logger.info("combiner stopped name=%s", self.name)

    @property
    def _presence_path(self) -> str:
        return f"/api/v1/combiners/{self.name}/clients"

    def report_presence(self) -> None:
        """Queue a snapshot of the online set; a queued, unsent one is replaced by it."""
        self.reporter.post(self._presence_path, snapshot_body(self.registry.snapshot()), replace=True)

    def _watch_clients(self) -> None:
        # A snapshot at every change of the online set and every presence_interval, never one REST
        # call per heartbeat. The first waits a period (or a change): a restarted combiner whose
        # clients reconnect at once then reports them online without an offline flap in between,
        # and one whose clients do not come back reports its empty set.
        last_sent = time.monotonic()
        while not self.stopping.wait(PRESENCE_CHECK_SECONDS):
            try:
                now = time.monotonic()
                changed = bool(self.registry.transitions())
                if changed or now - last_sent >= self.settings.presence_interval:
                    self.report_presence()
                    last_sent = now
            except Exception:
                logger.exception("client monitor failed")
