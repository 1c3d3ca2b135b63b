"""Model transfer through the combiner against raw gRPC streaming of the same bytes.

    .venv/bin/python bench/model_transfer.py [--sizes 100M,3G] [--repeat N] [--dir /tmp]

For each size (M = 10^6 bytes, G = 10^9) a one-layer float32 model is written to a directory
store. A combiner (`python -m combiner_node`, its own process) starts a training round on it and
the benchmark's clients take the round's tasks. Then, with the edge client's own code
(`fedplane.client.connection.CombinerLink`, `fedplane.client.transfer`):

  download  ModelService.Download of the global model into a file (combiner disk -> client disk)
  upload    ModelService.Upload of that file as the update (client disk -> combiner disk)

The baseline, measured in the same run and interleaved with them: the same bytes in the same
1 MiB chunks over a plain bytes-streaming gRPC service in another process (`--serve-raw`,
the combiner's server options), whose receiving end writes them to a file on the same disk, as
any transfer that keeps a model must. The same service without the disk (the receiver drops
the bytes) is printed beside it for reference: the transport alone. Each figure is the best of
`--repeat` runs; every transfer through the combiner is checked byte for byte (sha256).

The combiner's peak resident memory is read from /proc: over the whole run (staging the model
and the round's fedavg accumulator, one model, included) and during the transfers alone
(VmHWM reset through /proc/<pid>/clear_refs once the round has started).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from combiner_node.server import SERVER_OPTIONS  # noqa: E402
from fedplane.chunkmemory import keep_freed_chunk_memory  # noqa: E402
from fedplane.client.config import ClientConfig  # noqa: E402
from fedplane.client.connection import CombinerLink, channel_options  # noqa: E402
from fedplane.client.controller import Assignment  # noqa: E402
from fedplane.client.transfer import CHUNK_SIZE, download_model, upload_model  # noqa: E402
from fedplane.proto import fedn_pb2, fedn_pb2_grpc  # noqa: E402

TARGET_RATIO = 0.6
UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}
RAW_SERVICE = "bench.RawBytes"
# Store, staged copy, the client's download and the combiner's received update, plus room.
DISK_COPIES = 4
DISK_SPARE = 2 * 1024**3
START_DEADLINE = 900.0


def result(name: str, value: float | None, unit: str, **extra: object) -> None:
    """A line for bench/run.py (its BENCH-RESULT format), beside the table rows."""
    print("BENCH-RESULT " + json.dumps({"name": name, "value": value, "unit": unit, **extra}), flush=True)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    if text[-1:] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def label(size: int) -> str:
    return f"{size / 1e9:g}G" if size >= 10**9 else f"{size / 1e6:g}M"


def write_model(path: Path, nbytes: int) -> None:
    """A one-layer float32 npz of about `nbytes`, written in 4 MiB blocks."""
    count = nbytes // 4
    block = np.random.default_rng(0).standard_normal(1 << 20, dtype=np.float32)
    header = {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("0.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        remaining = count
        while remaining:
            part = block[: min(remaining, block.size)]
            member.write(part.data)
            remaining -= part.size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


# The baseline server ---------------------------------------------------------------------------


def serve_raw(path: Path, spool: Path) -> int:
    """Download sends `path` in CHUNK_SIZE pieces; Upload writes what it receives to a file in
    `spool` (UploadDropped drops it); both uploads answer with the byte count."""

    def download(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        size = 0
        with (spool / uuid.uuid4().hex).open("xb") as out:
            for chunk in requests:
                out.write(chunk)
                size += len(chunk)
        return str(size).encode()

    def upload_dropped(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(len(chunk) for chunk in requests)).encode()

    handler = grpc.method_handlers_generic_handler(
        RAW_SERVICE,
        {
            "Download": grpc.unary_stream_rpc_method_handler(download),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "UploadDropped": grpc.stream_unary_rpc_method_handler(upload_dropped),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"raw listening on 127.0.0.1:{port}", flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.stop(1).wait(2)
    return 0


# Processes -------------------------------------------------------------------------------------


def listening_port(process: subprocess.Popen[str], log: Path) -> int:
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}; see {log}")
    return int(line.rsplit(":", 1)[1])


def start_combiner(work: Path, store: Path) -> tuple[subprocess.Popen[str], int]:
    log = work / "combiner.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "combiner_node",
            "--name=bench",
            "--port=0",
            "--no-register",
            f"--store={store}",
            f"--workdir={work / 'combiner'}",
            "--log-level=WARNING",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    return process, listening_port(process, log)


def start_raw(work: Path, model: Path, spool: Path) -> tuple[subprocess.Popen[str], int]:
    log = work / "raw.log"
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-raw", str(model), str(spool)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    return process, listening_port(process, log)


def stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# One size --------------------------------------------------------------------------------------


@dataclass
class Best:
    """The best rate (MB/s) of each way of moving the model, over the repeats."""

    rates: dict[str, float] = field(default_factory=dict)

    def keep(self, name: str, rate: float) -> None:
        self.rates[name] = max(self.rates.get(name, 0.0), rate)


def rate(size: int, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return size / (time.perf_counter() - started) / 1e6


def open_links(port: int, count: int, work: Path) -> list[CombinerLink]:
    assignment = Assignment("127.0.0.1", port, None, None, "numpyhelper", "local", {})
    links = []
    for i in range(count):
        config = ClientConfig(controller_url="http://127.0.0.1:1", name=f"bench-{i}", workdir=work)
        links.append(CombinerLink(assignment, config))
    return links


def take_tasks(links: list[CombinerLink], model_id: str, combiner_port: int) -> list[object]:
    """Connect every link, start a training round on `model_id`, wait until each holds its task."""
    tasks: dict[str, fedn_pb2.TaskRequest] = {}
    arrived = threading.Condition()
    streams = []
    for link in links:
        name = dict(link.metadata)["client"]
        identity = fedn_pb2.Client(name=name, role=fedn_pb2.WORKER)
        link.connector.SendHeartbeat(fedn_pb2.Heartbeat(sender=identity), metadata=link.metadata, timeout=10)
        stream = link.combiner.TaskStream(
            fedn_pb2.ClientAvailableMessage(sender=identity), metadata=link.metadata
        )
        streams.append(stream)

        def read(stream: object = stream, name: str = name) -> None:
            with contextlib.suppress(grpc.RpcError):
                for task in stream:  # type: ignore[attr-defined]
                    with arrived:
                        tasks[name] = task
                        arrived.notify_all()

        threading.Thread(target=read, daemon=True).start()
    with grpc.insecure_channel(f"127.0.0.1:{combiner_port}") as channel:
        parameters = {
            "model_id": model_id,
            "round_id": "1",
            "session_id": "bench",
            "task": "training",
            "round_timeout": "7200",
            "clients_required": "1",
            "clients_requested": str(len(links)),
        }
        fedn_pb2_grpc.ControlStub(channel).Start(
            fedn_pb2.ControlRequest(
                command=fedn_pb2.START,
                parameter=[fedn_pb2.Parameter(key=k, value=v) for k, v in parameters.items()],
            ),
            timeout=30,
        )
    with arrived:
        if not arrived.wait_for(lambda: len(tasks) == len(links), timeout=START_DEADLINE):
            raise RuntimeError(f"the round's tasks did not arrive within {START_DEADLINE:g} s")
    return streams


def raw_download(channel: grpc.Channel, size: int, dest: Path | None) -> None:
    """Receive the model from the raw service into `dest`, or drop it (None)."""
    received = 0
    with dest.open("wb") if dest is not None else contextlib.nullcontext() as out:
        for chunk in channel.unary_stream(f"/{RAW_SERVICE}/Download")(b"", timeout=3600):
            if out is not None:
                out.write(chunk)
            received += len(chunk)
    if received != size:
        raise RuntimeError(f"raw download got {received} of {size} bytes")


def raw_upload(channel: grpc.Channel, path: Path, size: int, *, to_disk: bool) -> None:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk

    method = "Upload" if to_disk else "UploadDropped"
    counted = int(channel.stream_unary(f"/{RAW_SERVICE}/{method}")(chunks(), timeout=3600))
    if counted != size:
        raise RuntimeError(f"raw upload delivered {counted} of {size} bytes")


def transfer_round(
    best: Best, size: int, link: CombinerLink, raw: grpc.Channel, model_id: str, work: Path
) -> tuple[Path, str]:
    """One run of every way, interleaved; returns the client's downloaded copy and the update id."""
    local = work / f"downloaded-{uuid.uuid4().hex}.npz"
    raw_copy = work / "raw-download.npz"
    update_id = str(uuid.uuid4())
    best.keep("raw wire download", rate(size, lambda: raw_download(raw, size, None)))
    best.keep("raw download", rate(size, lambda: raw_download(raw, size, raw_copy)))
    raw_copy.unlink()
    best.keep(
        "download",
        rate(
            size,
            lambda: download_model(
                link.channel, model_id, local, sender_name="bench", metadata=link.metadata, timeout=3600
            ),
        ),
    )
    best.keep("raw wire upload", rate(size, lambda: raw_upload(raw, local, size, to_disk=False)))
    best.keep("raw upload", rate(size, lambda: raw_upload(raw, local, size, to_disk=True)))
    best.keep(
        "upload",
        rate(
            size, lambda: upload_model(link.channel, local, update_id, metadata=link.metadata, timeout=3600)
        ),
    )
    return local, update_id


def run_size(nbytes: int, repeat: int, scratch: Path) -> bool:
    name = label(nbytes)
    work = Path(tempfile.mkdtemp(prefix=f"transfer-{name}-", dir=scratch))
    best = Best()
    try:
        store = work / "store"
        (store / "models").mkdir(parents=True)
        spool = work / "raw-spool"
        spool.mkdir()
        model_id = str(uuid.uuid4())
        model = store / "models" / f"{model_id}.npz"
        write_model(model, nbytes)
        size = model.stat().st_size
        expected = sha256_of(model)
        combiner, combiner_port = start_combiner(work, store)
        raw, raw_port = start_raw(work, model, spool)
        links: list[CombinerLink] = []
        options = channel_options(ClientConfig("http://127.0.0.1:1", workdir=work))
        raw_channel = grpc.insecure_channel(f"127.0.0.1:{raw_port}", options=options)
        try:
            # Each upload stays on the combiner's books until its round ends: one task per upload.
            links = open_links(combiner_port, repeat, work)
            streams = take_tasks(links, model_id, combiner_port)
            peak_before_kib = proc_kib(combiner.pid, "VmHWM")
            peak_reset = reset_peak(combiner.pid)
            rss_before_kib = proc_kib(combiner.pid, "VmRSS")
            for link in links:
                local, update_id = transfer_round(best, size, link, raw_channel, model_id, work)
                received = work / "combiner" / "updates" / update_id
                for path, what in ((local, "download"), (received, "upload")):
                    if sha256_of(path) != expected:
                        raise RuntimeError(f"{name} {what} through the combiner changed the bytes")
                    path.unlink()
                for path in spool.iterdir():
                    path.unlink()
            peak_kib = proc_kib(combiner.pid, "VmHWM")
            del streams
        finally:
            raw_channel.close()
            for link in links:
                link.close()
            stop(raw)
            stop(combiner)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    met = True
    for direction in ("download", "upload"):
        measured, baseline, wire = (
            best.rates[key] for key in (direction, f"raw {direction}", f"raw wire {direction}")
        )
        ratio = measured / baseline
        met &= ratio >= TARGET_RATIO
        print(
            f"transfer {name:>5} {direction:<8} combiner {measured:7.1f} MB/s  raw gRPC {baseline:7.1f} MB/s  "
            f"ratio {ratio:4.2f}  target >= {TARGET_RATIO}x  {'met' if ratio >= TARGET_RATIO else 'missed'}",
            flush=True,
        )
        print(
            f"transfer {name:>5} {direction:<8} (raw gRPC without the disk {wire:7.1f} MB/s: "
            f"combiner at {measured / wire:4.2f}x of the transport alone)",
            flush=True,
        )
        result(
            f"{name} {direction} through the combiner",
            round(measured, 1),
            "MB/s",
            baseline=round(baseline, 1),
            baseline_name="raw gRPC, same chunks, to and from the same disk",
            target={"ratio_at_least": TARGET_RATIO},
            note=f"raw gRPC without the disk {wire:.1f} MB/s ({measured / wire:.2f}x)",
        )
    during = (peak_kib - rss_before_kib) / 1024 if peak_reset else float("nan")
    print(
        f"transfer {name:>5} combiner peak RSS {max(peak_kib, peak_before_kib) / 1024:.0f} MiB over the run "
        f"(staging and the round's accumulator included); {during:+.0f} MiB during the transfers, "
        f"over its {rss_before_kib / 1024:.0f} MiB before them",
        flush=True,
    )
    result(
        f"{name} combiner peak RSS growth during the transfers",
        round(during, 1),
        "MiB",
        note=f"peak {max(peak_kib, peak_before_kib) / 1024:.0f} MiB over the run, the round's accumulator included",
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100M,3G", help="model sizes, M = 10^6 bytes, G = 10^9 (default 100M,3G)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per size, best kept (default 5, 1 from 1G)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch folder (default: the system temp dir)"
    )
    parser.add_argument("--serve-raw", type=Path, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # As the combiner's and the edge client's entry points do, for both ends of both transfers.
    keep_freed_chunk_memory()
    if args.serve_raw is not None:
        return serve_raw(*args.serve_raw)

    scratch = args.dir or Path(tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    print(
        f"model transfer: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, chunk {CHUNK_SIZE} bytes, "
        f"scratch {scratch}",
        flush=True,
    )
    all_met = True
    for nbytes in (parse_size(text) for text in args.sizes.split(",") if text.strip()):
        needed = DISK_COPIES * nbytes + DISK_SPARE
        free = shutil.disk_usage(scratch).free
        if free < needed:
            why = f"needs {needed / 1e9:.1f} GB free under {scratch}, has {free / 1e9:.1f} GB"
            print(f"transfer {label(nbytes):>5} skipped: {why}", flush=True)
            result(f"{label(nbytes)} transfers", None, "MB/s", target={"at_least": 0}, note=f"skipped: {why}")
            all_met = False
            continue
        repeat = args.repeat or (5 if nbytes < 10**9 else 1)
        all_met &= run_size(nbytes, repeat, scratch)
    print("OVERALL:", "met" if all_met else "missed")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
