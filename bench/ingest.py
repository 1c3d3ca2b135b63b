"""Ingest of a FEDn 0.9.5 client's compressed update: fedplane's combiner against FEDn 0.9.5's own.

    .venv/bin/python bench/ingest.py [--model-mb 100] [--updates 3] [--samples 7] [--dir /tmp/...]

FEDn 0.9.5 clients write their model with ``np.savez_compressed`` (deflated members, zlib's
default level). A float32 model of ``--model-mb`` MB in a few layers of mixed sizes, with values
drawn like trained weights (normal, each layer scaled by its fan-in), is written that way as
``--updates`` distinct update files; the files are read once so they sit in the page cache.

Two workers, each in its own process, take the same files in turn, interleaved:

  fedplane  ``FedAvg.add(path, num_examples)``, exactly what the combiner runs per update
            (``combiner_node/rounds.py`` ``on_model_update`` -> ``aggregator.add``): decode,
            check (layer count, shapes, dtypes, finite values) and fold into the accumulator.
  FEDn      FEDn 0.9.5 from its own venv (``--fedn-python``): ``numpyhelper.Helper().load(path)``
            then ``increment_average(model, model_next, num_examples, total_examples)``, as its
            fedavg ``combine_models`` does (the first update only becomes the model).

Both take one update first to warm up; each sample after that is one update, timed by wall clock
inside its worker. The figure is the median over the samples of model bytes per second; FEDn's
is its baseline, measured in the same run. fedplane reads the layers of an update with two
threads and FEDn with one, so the ratio also says whether a second core was free (the load
average is in the line's note). Target: fedplane at least 2x FEDn. fedplane's peak
resident growth over the run (VmHWM after the last update minus after imports, the accumulator
included) is printed as a context line. Both end with their average of the same updates, which
must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FEDN_PYTHON = REPO / ".fedn095" / "bin" / "python"
MB = 1_000_000
RESULT_PREFIX = "BENCH-RESULT "

# A small convolutional network's front and a wide classifier: mixed sizes, the largest about 40%.
_SHAPES_100MB = [
    (64, 3, 7, 7),
    (64,),
    (128, 64, 3, 3),
    (128,),
    (256, 128, 3, 3),
    (256,),
    (512, 256, 3, 3),
    (512,),
    (4096, 2450),
    (4096,),
    (2048, 4096),
    (2048,),
    (1000, 5000),
    (1000,),
]


def layer_shapes(model_mb: float) -> list[tuple[int, ...]]:
    """The 100 MB layout with its large dimensions scaled so the model is about ``model_mb``."""
    if model_mb == 100:
        return list(_SHAPES_100MB)
    scale = (model_mb / 100) ** 0.5
    return [
        shape if len(shape) == 1 or len(shape) == 4 else tuple(max(1, round(d * scale)) for d in shape)
        for shape in _SHAPES_100MB
    ]


def trained_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values like trained weights: normal, scaled by the fan-in; biases small."""
    if len(shape) == 1:
        return rng.normal(0.0, 0.01, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    layer = rng.standard_normal(shape, dtype=np.float32)
    layer *= np.float32((2.0 / fan_in) ** 0.5)
    return layer


def prepare_files(folder: Path, model_mb: float, updates: int) -> tuple[Path, list[Path], int]:
    """The global model (plain, as the combiner stages it) and the updates as FEDn clients write them."""
    sys.path.insert(0, str(REPO))
    from fedplane import numpyhelper

    rng = np.random.default_rng(0)
    shapes = layer_shapes(model_mb)
    global_path = folder / "global.npz"
    numpyhelper.save([trained_like(rng, shape) for shape in shapes], global_path)
    paths = []
    for k in range(updates):
        layers = [trained_like(rng, shape) for shape in shapes]
        path = folder / f"update{k}.npz"
        # FEDn 0.9.5's numpyhelper.Helper.save, byte for byte
        np.savez_compressed(path, **{str(i): w for i, w in enumerate(layers)})
        paths.append(path)
    model_bytes = sum(int(np.prod(shape)) * 4 for shape in shapes)
    return global_path, paths, model_bytes


def warm_page_cache(paths: list[Path]) -> None:
    buffer = bytearray(1 << 22)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# ---------------------------------------------------------------- workers (one process each)


class FedplaneWorker:
    """fedplane's combiner path: one FedAvg aggregator, one round."""

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(REPO))
        from fedplane.aggregators import create_aggregator

        self.baseline_kib = vm_kib("VmHWM")
        self.aggregator = create_aggregator("fedavg", None, workdir)

    def start(self, global_path: str) -> dict[str, Any]:
        self.aggregator.start_round(Path(global_path))
        return {}

    def add(self, path: str, num_examples: int) -> dict[str, Any]:
        started, cpu = time.perf_counter(), time.process_time()
        self.aggregator.add(Path(path), num_examples)
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}

    def finish(self, out: str) -> dict[str, Any]:
        growth_kib = vm_kib("VmHWM") - self.baseline_kib
        self.aggregator.finish(Path(out))
        return {"peak_growth_mb": growth_kib * 1024 / MB}


class FednWorker:
    """FEDn 0.9.5's combiner path: Helper.load, then increment_average, as its fedavg does."""

    def __init__(self) -> None:
        from fedn.utils.helpers.plugins.numpyhelper import Helper

        self.helper = Helper()
        self.model: list[np.ndarray] | None = None
        self.total_examples = 0

    def start(self, global_path: str) -> dict[str, Any]:
        return {}

    def add(self, path: str, num_examples: int) -> dict[str, Any]:
        started, cpu = time.perf_counter(), time.process_time()
        model_next = self.helper.load(path)
        self.total_examples += num_examples
        if self.model is None:
            self.model = model_next
        else:
            self.model = self.helper.increment_average(
                self.model, model_next, num_examples, self.total_examples
            )
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}

    def finish(self, out: str) -> dict[str, Any]:
        assert self.model is not None
        np.savez(out, **{str(i): w for i, w in enumerate(self.model)})
        return {}


def serve(kind: str, workdir: Path) -> int:
    """Answer one JSON command per line on stdin with one JSON line on stdout."""
    worker: FedplaneWorker | FednWorker = FedplaneWorker(workdir) if kind == "fedplane" else FednWorker()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            reply = getattr(worker, command.pop("op"))(**command)
        except Exception as exc:  # the driver reports it and stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


class Worker:
    """The driver's end of a worker process."""

    def __init__(self, name: str, python: Path | str, workdir: Path) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [str(python), __file__, "--worker", name, "--dir", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._read()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker stopped (exit {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------- driver


def result(**fields: Any) -> None:
    print(RESULT_PREFIX + json.dumps(fields), flush=True)


def run(folder: Path, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    global_path, updates, model_bytes = prepare_files(folder, args.model_mb, args.updates)
    sizes = [path.stat().st_size for path in updates]
    print(
        f"model {model_bytes / MB:.1f} MB float32 in {len(layer_shapes(args.model_mb))} layers; "
        f"{len(updates)} updates written with np.savez_compressed, {sum(sizes) / len(sizes) / MB:.1f} MB "
        f"each (deflate ratio {model_bytes / (sum(sizes) / len(sizes)):.2f}); "
        f"setup {time.perf_counter() - started:.1f} s"
    )
    warm_page_cache([global_path, *updates])

    (folder / "work").mkdir(exist_ok=True)
    fedplane = Worker("fedplane", sys.executable, folder / "work")
    fedn = Worker("fedn", args.fedn_python, folder / "work")
    samples: dict[str, list[dict[str, Any]]] = {"fedplane": [], "fedn": []}
    try:
        for worker in (fedplane, fedn):
            worker.call("start", global_path=str(global_path))
            worker.call("add", path=str(updates[0]), num_examples=100)  # warm-up, not timed
        for k in range(1, args.samples + 1):
            path, num_examples = str(updates[k % len(updates)]), 100 + k
            order = (fedplane, fedn) if k % 2 else (fedn, fedplane)  # neither always goes first
            for worker in order:
                samples[worker.name].append(worker.call("add", path=path, num_examples=num_examples))
        ours, theirs = folder / "fedplane-out.npz", folder / "fedn-out.npz"
        memory = fedplane.call("finish", out=str(ours))
        fedn.call("finish", out=str(theirs))
    finally:
        fedplane.close()
        fedn.close()

    def rates(name: str, key: str) -> list[float]:
        return [model_bytes / sample[key] / 1e9 for sample in samples[name]]

    print(
        f"\n{'':8} {'median GB/s':>11} {'best GB/s':>9} {'cpu GB/s (median)':>17}  ({args.samples} samples)"
    )
    for name in ("fedplane", "fedn"):
        wall, cpu = rates(name, "seconds"), rates(name, "cpu")
        print(f"{name:8} {statistics.median(wall):11.3f} {max(wall):9.3f} {statistics.median(cpu):17.3f}")
    ours_rate = statistics.median(rates("fedplane", "seconds"))
    theirs_rate = statistics.median(rates("fedn", "seconds"))
    print(f"ratio (median wall clock) {ours_rate / theirs_rate:.2f}x, target >= 2x")

    agree, difference = compare(ours, theirs)
    print(f"the two averages agree: {agree} (largest difference {difference:.3g})")
    label = f"{model_bytes / MB:.0f} MB float32 model, {len(layer_shapes(args.model_mb))} layers"
    result(
        name=f"FEDn client update (savez_compressed), {label}: decode, check, fold",
        value=round(ours_rate, 4) if agree else None,
        unit="GB/s",
        baseline=round(theirs_rate, 4),
        baseline_name="FEDn 0.9.5 Helper.load + increment_average",
        target={"ratio_at_least": 2},
        note=(
            f"two threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            if agree
            else "the averages differ"
        ),
    )
    result(
        name=f"fedplane peak memory growth ingesting compressed updates, {label}",
        value=round(memory["peak_growth_mb"], 1),
        unit="MB",
        baseline=round(model_bytes / MB, 1),
        baseline_name="model size",
    )
    return 0 if agree else 1


def compare(ours: Path, theirs: Path) -> tuple[bool, float]:
    """Whether both averages match to float32 rounding (FEDn's running mean rounds at every step)."""
    worst = 0.0
    with np.load(ours) as a, np.load(theirs) as b:
        if sorted(a.files) != sorted(b.files):
            return False, float("inf")
        for key in a.files:
            x, y = a[key].astype(np.float64), b[key].astype(np.float64)
            if x.shape != y.shape:
                return False, float("inf")
            scale = float(np.abs(y).max()) or 1.0
            worst = max(worst, float(np.abs(x - y).max()) / scale)
    return worst < 1e-4, worst


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-mb", type=float, default=100)
    parser.add_argument("--updates", type=int, default=3, help="distinct update files, taken in turn")
    parser.add_argument("--samples", type=int, default=7, help="timed updates per side")
    parser.add_argument("--fedn-python", type=Path, default=FEDN_PYTHON, help="a python with fedn==0.9.5")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--worker", choices=("fedplane", "fedn"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        return serve(args.worker, args.dir)
    if not args.fedn_python.exists():
        result(
            name="FEDn client update ingest",
            target={"ratio_at_least": 2},
            note=f"skipped: no FEDn 0.9.5 venv at {args.fedn_python} (make fedn-venv)",
        )
        return 1
    folder = Path(args.dir or tempfile.mkdtemp(prefix="fedplane-ingest-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return run(folder, args)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
