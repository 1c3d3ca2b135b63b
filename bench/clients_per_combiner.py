"""Clients per combiner: one combiner holding N FEDn-like clients, each with its task stream open
and a heartbeat every 2 s.

    .venv/bin/python bench/clients_per_combiner.py                  # N = 1000, then 5000
    .venv/bin/python bench/clients_per_combiner.py --quick          # N = 1000, shorter phases
    .venv/bin/python bench/clients_per_combiner.py --clients 300 --steady 20

For each N a fresh combiner (`python -m combiner_node --no-register`, its own process, a directory
store, no controller, no auth, log level WARNING) is started and measured in phases:

  idle    the combiner alone: its resident memory, and a probe's heartbeats and control calls
  ramp    N simulated clients connect over --ramp seconds
  steady  --steady seconds of heartbeats, whose latencies are kept
  round   Control.Start of a training round on a 1,000-float seed model, asking for every client;
          each client counts the TaskRequest its stream receives, until all have one or
          --round-wait seconds pass

The clients live in --workers processes of this script (grpc.aio), --clients-per-channel to a
channel, each channel with a connection of its own. A client is FEDn 0.9.5's: an open
`Combiner.TaskStream(ClientAvailableMessage)` and `Connector.SendHeartbeat` every 2 s from a
random start, with the metadata FEDn sends. Throughout, a control prober calls
`Connector.ListActiveClients`, `Connector.AcceptingClients` and `Control.FlushAggregationQueue`
every 0.5 s, and the combiner's VmRSS is sampled from /proc every 0.2 s.

Every call and every wait has a deadline: a combiner that stops answering shows as missed lines,
never as a hang. Result lines (`BENCH-RESULT {json}`, see bench/run.py) per N: peak resident
memory against the idle combiner's (target under 2 GB), heartbeat p99 (under 50 ms), the share
of clients the round's task reached (all), the slowest control call (under 1 s), and context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedplane.proto import fedn_pb2, fedn_pb2_grpc  # noqa: E402
from tests.ports import free_port  # noqa: E402

HEARTBEAT_SECONDS = 2.0
HEARTBEAT_TIMEOUT = 10.0
CONTROL_TIMEOUT = 5.0
PROBE_SECONDS = 0.5
RSS_SAMPLE_SECONDS = 0.2
IDLE_SECONDS = 3.0
READY_DEADLINE = 60.0
STOP_DEADLINE = 15.0
SEED_FLOATS = 1000
MAX_CLIENTS_MARGIN = 100
TARGET_RSS_MB = 2048
CLIENT_PREFIX = "bench-client-"
TARGET_HEARTBEAT_P99_MS = 50
TARGET_CONTROL_MS = 1000
# Same as FEDn's: channel options an edge client sets, and the metadata it sends on every call.
CLIENT_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # Each channel its own connection, as each FEDn client (its own process) has.
    ("grpc.use_local_subchannel_pool", 1),
]


def result(name: str, value: float | None, unit: str, **extra: object) -> None:
    """A line for bench/run.py."""
    print("BENCH-RESULT " + json.dumps({"name": name, "value": value, "unit": unit, **extra}), flush=True)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def raise_fd_limit() -> None:
    """Thousands of streams need thousands of descriptors: the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def client_metadata(name: str) -> tuple[tuple[str, str], ...]:
    return (("grpc-server", "127.0.0.1"), ("client", name))


# The simulated clients (one worker process) -------------------------------------------------------


@dataclass
class WorkerSpec:
    target: str
    names: list[str]
    clients_per_channel: int
    ramp_seconds: float


@dataclass
class WorkerState:
    measuring: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    heartbeat_failures: Counter[str] = field(default_factory=Counter)
    heartbeat_failures_measured: int = 0
    heartbeats_measured: int = 0
    stream_failures: Counter[str] = field(default_factory=Counter)
    task_times: dict[str, float] = field(default_factory=dict)
    started: int = 0
    lag_ms: list[float] = field(default_factory=list)
    # The first details text of each status code seen, for the log.
    failure_details: dict[str, str] = field(default_factory=dict)
    # (seconds since the worker started, seconds the call took) of each failed heartbeat.
    failure_times: list[tuple[float, float]] = field(default_factory=list)
    born: float = field(default_factory=time.monotonic)


def emit(event: str, **data: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def heartbeats(stub: fedn_pb2_grpc.ConnectorStub, name: str, state: WorkerState) -> None:
    """SendHeartbeat every HEARTBEAT_SECONDS from a random start; a late call skips the slots it missed."""
    request = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=name, role=fedn_pb2.WORKER))
    metadata = client_metadata(name)
    loop = asyncio.get_running_loop()
    next_at = loop.time() + random.uniform(0, HEARTBEAT_SECONDS)
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        measured = state.measuring
        started = time.monotonic()
        try:
            await stub.SendHeartbeat(request, metadata=metadata, timeout=HEARTBEAT_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            state.heartbeat_failures[exc.code().name] += 1
            state.failure_details.setdefault(
                exc.code().name, f"{exc.details() or ''} ({exc.debug_error_string()})"
            )
            state.failure_times.append((started - state.born, time.monotonic() - started))
            if measured:
                state.heartbeats_measured += 1
                state.heartbeat_failures_measured += 1
                # A failed heartbeat counts as its whole deadline, so p99 cannot hide it.
                state.latencies_ms.append(HEARTBEAT_TIMEOUT * 1000)
        else:
            if measured:
                state.heartbeats_measured += 1
                state.latencies_ms.append((time.monotonic() - started) * 1000)
        now = loop.time()
        next_at += HEARTBEAT_SECONDS * max(1, math.ceil((now - next_at) / HEARTBEAT_SECONDS))


async def task_stream(stub: fedn_pb2_grpc.CombinerStub, name: str, state: WorkerState) -> None:
    """Hold the stream open and note when the first training task arrives; no training is done."""
    request = fedn_pb2.ClientAvailableMessage(sender=fedn_pb2.Client(name=name, role=fedn_pb2.WORKER))
    call = stub.TaskStream(request, metadata=client_metadata(name))
    try:
        async for task in call:
            if task.type == fedn_pb2.MODEL_UPDATE and name not in state.task_times:
                state.task_times[name] = time.monotonic()
        state.stream_failures["ended by the combiner"] += 1
    except grpc.aio.AioRpcError as exc:
        state.stream_failures[exc.code().name] += 1
        state.failure_details.setdefault(exc.code().name, exc.details() or "")


async def read_commands(commands: asyncio.Queue[str]) -> None:
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "stop")  # the parent went away

    threading.Thread(target=pump, daemon=True).start()


async def run_clients(spec: WorkerSpec) -> None:
    state = WorkerState()
    commands: asyncio.Queue[str] = asyncio.Queue()
    await read_commands(commands)
    channels = [
        grpc.aio.insecure_channel(spec.target, options=CLIENT_CHANNEL_OPTIONS)
        for _ in range(math.ceil(len(spec.names) / spec.clients_per_channel))
    ]
    running: list[asyncio.Task[None]] = []

    async def ramp() -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        spacing = spec.ramp_seconds / max(1, len(spec.names))
        for index, name in enumerate(spec.names):
            await asyncio.sleep(max(0.0, begin + index * spacing - loop.time()))
            channel = channels[index // spec.clients_per_channel]
            running.append(asyncio.create_task(task_stream(fedn_pb2_grpc.CombinerStub(channel), name, state)))
            running.append(asyncio.create_task(heartbeats(fedn_pb2_grpc.ConnectorStub(channel), name, state)))
            state.started += 1
        emit("ramped", clients=state.started)

    async def progress() -> None:
        reached = -1
        while True:
            await asyncio.sleep(0.25)
            if len(state.task_times) != reached:
                reached = len(state.task_times)
                emit("tasks", reached=reached)

    async def loop_lag() -> None:
        """How late a 0.1 s timer fires: time a heartbeat's latency spent waiting on this process."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.1
            await asyncio.sleep(0.1)
            if state.measuring:
                state.lag_ms.append((loop.time() - due) * 1000)

    helpers = [asyncio.create_task(ramp()), asyncio.create_task(progress()), asyncio.create_task(loop_lag())]
    while (command := await commands.get()) != "stop":
        if command == "measure-on":
            state.measuring = True
        elif command == "measure-off":
            state.measuring = False
        elif command == "report":
            emit(
                "report",
                latencies_ms=[round(value, 3) for value in state.latencies_ms],
                heartbeats_measured=state.heartbeats_measured,
                heartbeat_failures_measured=state.heartbeat_failures_measured,
                heartbeat_failures=dict(state.heartbeat_failures),
                stream_failures=dict(state.stream_failures),
                task_times=list(state.task_times.values()),
                started=state.started,
                failure_details=state.failure_details,
                failure_times=[(round(at, 2), round(took, 3)) for at, took in state.failure_times],
                lag_ms=[round(value, 3) for value in state.lag_ms],
            )
    for task in helpers + running:
        task.cancel()
    await asyncio.gather(*helpers, *running, return_exceptions=True)
    await asyncio.gather(*(channel.close(grace=None) for channel in channels), return_exceptions=True)


def worker_main(spec_json: str) -> int:
    raise_fd_limit()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = json.loads(spec_json)
    asyncio.run(run_clients(WorkerSpec(**data)))
    return 0


class Worker:
    """One process of simulated clients, driven by line commands; its events land in `events`."""

    def __init__(self, spec: WorkerSpec, log_path: Path) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec.__dict__)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_path.open("w"),
            text=True,
        )
        self.ramped = threading.Event()
        self.reached = 0
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event["event"] == "ramped":
                self.ramped.set()
            elif event["event"] == "tasks":
                self.reached = event["reached"]
            elif event["event"] == "report":
                self.reports.put(event)

    def send(self, command: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()

    def report(self, deadline: float) -> dict[str, Any] | None:
        self.send("report")
        try:
            return self.reports.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def stop(self) -> None:
        """Ask it to hang up; SIGTERM if it has not within its deadline."""
        self.send("stop")
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            stop_process(self.process, signal.SIGTERM, deadline=5.0)


def stop_process(process: subprocess.Popen[Any], signum: int, deadline: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    try:
        process.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


# Watching the combiner ----------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phases:
    """The phase the run is in; samplers file what they measure under it."""

    def __init__(self) -> None:
        self.name = "idle"

    def __str__(self) -> str:
        return self.name


@dataclass
class ControlCall:
    phase: str
    method: str
    latency_ms: float | None  # None: no answer within CONTROL_TIMEOUT
    error: str = ""


class Sampler(threading.Thread):
    """A periodic measurement in a thread until `stop` is set."""

    def __init__(self, every: float, action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.action = action
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.action()
            self.halt.wait(self.every)


def timed_call(phase: str, method: str, call: Callable[[], Any]) -> tuple[ControlCall, Any]:
    started = time.monotonic()
    try:
        answer = call()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else type(exc).__name__
        timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED
        latency = None if timed_out else (time.monotonic() - started) * 1000
        return ControlCall(phase, method, latency, name), None
    return ControlCall(phase, method, (time.monotonic() - started) * 1000), answer


class ControlProber:
    """Every PROBE_SECONDS, ListActiveClients, AcceptingClients and FlushAggregationQueue in turn."""

    def __init__(self, channel: grpc.Channel, phases: Phases) -> None:
        self.connector = fedn_pb2_grpc.ConnectorStub(channel)
        self.control = fedn_pb2_grpc.ControlStub(channel)
        self.phases = phases
        self.calls: list[ControlCall] = []
        self.online: int | None = None
        self.lock = threading.Lock()

    def keep(self, call: ControlCall) -> None:
        with self.lock:
            self.calls.append(call)

    def probe(self) -> None:
        phase = str(self.phases)
        call, answer = timed_call(
            phase,
            "ListActiveClients",
            lambda: self.connector.ListActiveClients(fedn_pb2.ListClientsRequest(), timeout=CONTROL_TIMEOUT),
        )
        self.keep(call)
        if answer is not None:
            self.online = sum(client.name.startswith(CLIENT_PREFIX) for client in answer.client)
        self.keep(
            timed_call(
                phase,
                "AcceptingClients",
                lambda: self.connector.AcceptingClients(
                    fedn_pb2.ConnectionRequest(), timeout=CONTROL_TIMEOUT
                ),
            )[0]
        )
        self.keep(
            timed_call(
                phase,
                "FlushAggregationQueue",
                lambda: self.control.FlushAggregationQueue(
                    fedn_pb2.ControlRequest(), timeout=CONTROL_TIMEOUT
                ),
            )[0]
        )

    def in_phases(self, *phases: str) -> list[ControlCall]:
        with self.lock:
            return [call for call in self.calls if call.phase in phases]


# One N --------------------------------------------------------------------------------------------


@dataclass
class Options:
    workers: int
    clients_per_channel: int
    ramp: float
    steady: float
    round_wait: float
    keep: bool
    source: Path


def write_seed_model(store: Path) -> str:
    """A 1,000-float model where the combiner looks for it: models/<model_id>.npz."""
    model_id = str(uuid.uuid4())
    path = store / "models" / f"{model_id}.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **{"0": np.random.default_rng(0).standard_normal(SEED_FLOATS).astype(np.float32)})
    return model_id


def start_combiner(
    work: Path, store: Path, port: int, max_clients: int, source: Path
) -> subprocess.Popen[bytes]:
    log_file = (work / "combiner.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "combiner_node",
            "--name=bench",
            f"--port={port}",
            "--no-register",
            f"--store={store}",
            f"--workdir={work / 'combiner'}",
            f"--max-clients={max_clients}",
            "--online-window=10",
            "--log-level=WARNING",
        ],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def wait_ready(combiner: subprocess.Popen[bytes], channel: grpc.Channel) -> bool:
    """True once the combiner answers AcceptingClients; False if it exits or the deadline passes."""
    stub = fedn_pb2_grpc.ConnectorStub(channel)
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline and combiner.poll() is None:
        try:
            stub.AcceptingClients(fedn_pb2.ConnectionRequest(), timeout=1.0)
            return True
        except grpc.RpcError:
            time.sleep(0.2)
    return False


def probe_heartbeats(channel: grpc.Channel, count: int) -> list[float]:
    """Heartbeats of one client to the idle combiner, one after another: the latency baseline."""
    stub = fedn_pb2_grpc.ConnectorStub(channel)
    request = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="bench-probe", role=fedn_pb2.WORKER))
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        with contextlib.suppress(grpc.RpcError):
            stub.SendHeartbeat(request, metadata=client_metadata("bench-probe"), timeout=CONTROL_TIMEOUT)
            latencies.append((time.monotonic() - started) * 1000)
        time.sleep(0.02)
    return latencies


def start_round(channel: grpc.Channel, model_id: str, clients: int, phase: str) -> ControlCall:
    parameters = {
        "model_id": model_id,
        "round_id": "1",
        "session_id": "bench",
        "task": "training",
        "round_timeout": "600",
        "buffer_size": "-1",
        "clients_required": "1",
        "clients_requested": str(clients),
        "aggregator": "fedavg",
        "helper_type": "numpyhelper",
        "validate": "False",
        "delete_models_storage": "False",
    }
    request = fedn_pb2.ControlRequest(
        command=fedn_pb2.START,
        parameter=[fedn_pb2.Parameter(key=key, value=value) for key, value in parameters.items()],
    )
    stub = fedn_pb2_grpc.ControlStub(channel)
    return timed_call(phase, "Start", lambda: stub.Start(request, timeout=CONTROL_TIMEOUT))[0]


def wait_until(condition: Callable[[], bool], deadline: float, every: float = 0.1) -> bool:
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def split(names: list[str], parts: int) -> Iterator[list[str]]:
    size = math.ceil(len(names) / parts)
    for start in range(0, len(names), size):
        yield names[start : start + size]


def slowest_control(calls: list[ControlCall]) -> tuple[float | None, int]:
    """The slowest answer in ms, a call without an answer counting as CONTROL_TIMEOUT; and how many had none."""
    if not calls:
        return None, 0
    missing = sum(call.latency_ms is None for call in calls)
    return max(
        CONTROL_TIMEOUT * 1000 if call.latency_ms is None else call.latency_ms for call in calls
    ), missing


def run_size(n: int, options: Options, scratch: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"clients-{n}-", dir=scratch))
    store = work / "store"
    model_id = write_seed_model(store)
    port = free_port()
    target = f"127.0.0.1:{port}"
    label = f"{n} clients"
    phases = Phases()
    combiner = start_combiner(work, store, port, n + MAX_CLIENTS_MARGIN, options.source)
    workers: list[Worker] = []
    samplers: list[Sampler] = []
    rss: list[tuple[str, int]] = []
    control_channel = grpc.insecure_channel(target)
    try:
        log(f"{label}: combiner pid {combiner.pid} on {target}, work folder {work}")
        if not wait_ready(combiner, control_channel):
            log(
                f"{label}: the combiner did not answer within {READY_DEADLINE:g} s; see {work / 'combiner.log'}"
            )
            report_size(n, None)
            return

        def sample_rss() -> None:
            value = proc_status_kib(combiner.pid, "VmRSS")
            if value is not None:
                rss.append((str(phases), value))

        prober = ControlProber(control_channel, phases)
        samplers = [Sampler(RSS_SAMPLE_SECONDS, sample_rss), Sampler(PROBE_SECONDS, prober.probe)]
        for sampler in samplers:
            sampler.start()
        idle_heartbeats = probe_heartbeats(control_channel, 50)
        time.sleep(IDLE_SECONDS)

        phases.name = "ramp"
        names = [f"{CLIENT_PREFIX}{index:05d}" for index in range(n)]
        parts = max(1, min(options.workers, n))
        for index, part in enumerate(split(names, parts)):
            spec = WorkerSpec(target, part, options.clients_per_channel, options.ramp)
            workers.append(Worker(spec, work / f"clients-{index}.log"))
        log(f"{label}: client processes {', '.join(str(w.process.pid) for w in workers)}")
        ramp_deadline = time.monotonic() + options.ramp + 30
        ramped = wait_until(lambda: all(w.ramped.is_set() for w in workers), ramp_deadline)
        log(f"{label}: {'all started' if ramped else 'not all started'} after the ramp of {options.ramp:g} s")
        # One heartbeat period so that each client has sent one before the measuring starts.
        time.sleep(HEARTBEAT_SECONDS)

        phases.name = "steady"
        steady_cpu_start, steady_started = cpu_seconds(combiner.pid), time.monotonic()
        clients_cpu_start = sum(cpu_seconds(worker.process.pid) or 0.0 for worker in workers)
        for worker in workers:
            worker.send("measure-on")
        time.sleep(options.steady)
        for worker in workers:
            worker.send("measure-off")
        steady_seconds = time.monotonic() - steady_started
        clients_cpu = (
            sum(cpu_seconds(worker.process.pid) or 0.0 for worker in workers) - clients_cpu_start
        ) / steady_seconds
        steady_cpu = None
        if steady_cpu_start is not None and (now_cpu := cpu_seconds(combiner.pid)) is not None:
            steady_cpu = (now_cpu - steady_cpu_start) / steady_seconds
        online_after_steady = prober.online
        log(f"{label}: steady phase over; the combiner lists {online_after_steady} clients online")

        phases.name = "round"
        round_started = time.monotonic()
        start_call = start_round(control_channel, model_id, n + MAX_CLIENTS_MARGIN, "round")
        prober.keep(start_call)
        log(f"{label}: Control.Start answered in {start_call.latency_ms} ms {start_call.error}")
        wait_until(
            lambda: sum(w.reached for w in workers) >= n, round_started + options.round_wait, every=0.2
        )
        phases.name = "after"
        report_deadline = time.monotonic() + 30
        reports = [worker.report(report_deadline) for worker in workers]
        for sampler in samplers:
            sampler.halt.set()
        for sampler in samplers:
            sampler.join(timeout=CONTROL_TIMEOUT * 3 + 1)
        hwm = proc_status_kib(combiner.pid, "VmHWM")

        report_size(
            n,
            Measured(
                idle_rss_kib=max((value for phase, value in rss if phase == "idle"), default=None),
                peak_rss_kib=max((value for phase, value in rss if phase != "idle"), default=None),
                hwm_kib=hwm,
                idle_heartbeats_ms=idle_heartbeats,
                reports=reports,
                round_started=round_started,
                idle_calls=prober.in_phases("idle"),
                loaded_calls=prober.in_phases("ramp", "steady", "round"),
                online_after_steady=online_after_steady,
                steady_cpu=steady_cpu,
                clients_cpu=clients_cpu,
                options=options,
            ),
        )
    finally:
        for sampler in samplers:
            sampler.halt.set()
        for worker in workers:
            worker.stop()
        control_channel.close()
        stop_process(combiner, signal.SIGTERM, STOP_DEADLINE)
        log(f"{label}: combiner exit code {combiner.returncode}")
        if not options.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


@dataclass
class Measured:
    idle_rss_kib: int | None
    peak_rss_kib: int | None
    hwm_kib: int | None
    idle_heartbeats_ms: list[float]
    reports: list[dict[str, Any] | None]
    round_started: float
    idle_calls: list[ControlCall]
    loaded_calls: list[ControlCall]
    online_after_steady: int | None
    steady_cpu: float | None
    clients_cpu: float
    options: Options


def report_size(n: int, measured: Measured | None) -> None:
    """The result lines of one N; with nothing measured, each line without a value (missed)."""
    label = f"{n} clients"
    if measured is None:
        note = "the combiner did not start"
        result(
            f"{label}: combiner peak resident memory",
            None,
            "MB",
            target={"at_most": TARGET_RSS_MB},
            note=note,
        )
        result(f"{label}: heartbeat p99", None, "ms", target={"at_most": TARGET_HEARTBEAT_P99_MS}, note=note)
        result(
            f"{label}: share of clients the round's task reached",
            None,
            "",
            target={"at_least": 1.0},
            note=note,
        )
        result(f"{label}: slowest control call", None, "ms", target={"at_most": TARGET_CONTROL_MS}, note=note)
        return

    def mb(kib: int | None) -> float | None:
        return None if kib is None else round(kib / 1024, 1)

    result(
        f"{label}: combiner peak resident memory",
        mb(measured.peak_rss_kib),
        "MB",
        baseline=mb(measured.idle_rss_kib),
        baseline_name="idle combiner",
        target={"at_most": TARGET_RSS_MB},
        note=f"VmRSS every {RSS_SAMPLE_SECONDS:g} s; VmHWM {mb(measured.hwm_kib)} MB",
    )

    reports = [report for report in measured.reports if report is not None]
    silent = len(measured.reports) - len(reports)
    latencies = [value for report in reports for value in report["latencies_ms"]]
    measured_count = sum(report["heartbeats_measured"] for report in reports)
    failed_measured = sum(report["heartbeat_failures_measured"] for report in reports)
    expected = n * measured.options.steady / HEARTBEAT_SECONDS
    missing_note = f"; {silent} client process(es) sent no report" if silent else ""
    idle = measured.idle_heartbeats_ms
    result(
        f"{label}: heartbeat p99",
        rounded(percentile(latencies, 0.99)),
        "ms",
        baseline=rounded(percentile(idle, 0.99)),
        baseline_name="one client, idle combiner",
        target={"at_most": TARGET_HEARTBEAT_P99_MS},
        note=f"{measured_count} heartbeats of about {expected:.0f} due in {measured.options.steady:g} s, "
        f"{failed_measured} failed (counted as {HEARTBEAT_TIMEOUT:g} s){missing_note}",
    )
    result(
        f"{label}: heartbeat p50",
        rounded(percentile(latencies, 0.5)),
        "ms",
        baseline=rounded(percentile(idle, 0.5)),
        baseline_name="one client, idle combiner",
    )

    task_times = [value for report in reports for value in report["task_times"]]
    delays = [value - measured.round_started for value in task_times]
    reached = len(task_times)
    result(
        f"{label}: share of clients the round's task reached",
        round(reached / n, 4),
        "",
        target={"at_least": 1.0},
        note=f"{reached} of {n} within {measured.options.round_wait:g} s",
    )
    if delays:
        result(f"{label}: time for the round's task to reach the last client", rounded(max(delays), 2), "s")

    idle_slowest, _ = slowest_control(measured.idle_calls)
    slowest, unanswered = slowest_control(measured.loaded_calls)
    result(
        f"{label}: slowest control call",
        rounded(slowest),
        "ms",
        baseline=rounded(idle_slowest),
        baseline_name="idle combiner",
        target={"at_most": TARGET_CONTROL_MS},
        note=f"{len(measured.loaded_calls)} calls from the ramp to the round, {unanswered} unanswered "
        f"within {CONTROL_TIMEOUT:g} s (counted as {CONTROL_TIMEOUT:g} s)",
    )
    answered = [call.latency_ms for call in measured.loaded_calls if call.latency_ms is not None]
    result(f"{label}: control call p50", rounded(percentile(answered, 0.5)), "ms")

    stream_failures: Counter[str] = Counter()
    heartbeat_failures: Counter[str] = Counter()
    for report in reports:
        for code, details in report["failure_details"].items():
            log(f"{label}: a call failed with {code}: {details}")
        if report["failure_times"]:
            # Refused at once (the combiner turned them away) or after a wait (it did not answer).
            at = [value[0] for value in report["failure_times"]]
            took = [value[1] for value in report["failure_times"]]
            log(
                f"{label}: failed heartbeats began {min(at):.1f} s to {max(at):.1f} s after their worker "
                f"started (median {percentile(at, 0.5):.1f} s) and failed after {min(took):.3f} to "
                f"{max(took):.3f} s (median {percentile(took, 0.5):.3f} s)"
            )
        stream_failures.update(report["stream_failures"])
        heartbeat_failures.update(report["heartbeat_failures"])
    result(
        f"{label}: task streams that failed",
        sum(stream_failures.values()),
        "streams",
        note=", ".join(f"{code} {count}" for code, count in stream_failures.most_common()) or "none",
    )
    result(
        f"{label}: heartbeats that failed over the whole run",
        sum(heartbeat_failures.values()),
        "calls",
        note=", ".join(f"{code} {count}" for code, count in heartbeat_failures.most_common()) or "none",
    )
    result(
        f"{label}: clients the combiner listed online after the steady phase",
        measured.online_after_steady,
        "clients",
    )
    if measured.steady_cpu is not None:
        result(
            f"{label}: combiner CPU in the steady phase", round(measured.steady_cpu * 100, 1), "% of a core"
        )
    # The clients share the machine with the combiner: when they take most of it, latencies are theirs too.
    lags = [value for report in reports for value in report["lag_ms"]]
    result(f"{label}: simulated clients' event-loop lag p99", rounded(percentile(lags, 0.99)), "ms")
    result(
        f"{label}: simulated clients' CPU in the steady phase",
        round(measured.clients_cpu * 100, 1),
        "% of a core",
        note=f"{len(measured.reports)} processes, {os.cpu_count()} CPUs on the machine",
    )


def unwind_on_sigterm(signum: int, _frame: object) -> None:
    """The runner stops a figure with SIGTERM: unwind, so the combiner and the clients stop too;
    a second SIGTERM must not cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1000, shorter phases (about 90 s)")
    parser.add_argument("--clients", default=None, help="comma-separated N (default 1000,5000; quick 1000)")
    parser.add_argument("--workers", type=int, default=2, help="processes holding the simulated clients")
    parser.add_argument("--clients-per-channel", type=int, default=100)
    parser.add_argument(
        "--ramp", type=float, default=None, help="seconds to connect N clients (default N/250, at least 5)"
    )
    parser.add_argument(
        "--steady", type=float, default=None, help="seconds of measured heartbeats (30; quick 15)"
    )
    parser.add_argument(
        "--round-wait", type=float, default=None, help="seconds for the task to reach all (60; quick 20)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: the system's temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs, store)")
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO,
        help="folder whose combiner_node package runs (default: this checkout), e.g. an older commit's",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    raise_fd_limit()
    signal.signal(signal.SIGTERM, unwind_on_sigterm)
    counts = [int(n) for n in (args.clients or ("1000" if args.quick else "1000,5000")).split(",")]
    steady = args.steady if args.steady is not None else (15.0 if args.quick else 30.0)
    round_wait = args.round_wait if args.round_wait is not None else (20.0 if args.quick else 60.0)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    log(
        f"clients per combiner: N = {counts}, {args.workers} client processes, {args.clients_per_channel} "
        f"clients per channel, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, fd limit {soft}"
    )
    for n in counts:
        ramp = args.ramp if args.ramp is not None else max(5.0, n / 250)
        options = Options(
            args.workers, args.clients_per_channel, ramp, steady, round_wait, args.keep, args.source.resolve()
        )
        run_size(n, options, args.dir or Path(tempfile.gettempdir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
