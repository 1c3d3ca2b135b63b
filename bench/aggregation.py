"""fedavg aggregation benchmark: throughput against np.copyto bandwidth, and peak memory against model size.

    .venv/bin/python bench/aggregation.py [--model-mb 100] [--counts 2,5,10,20,50] [--dir /tmp/...]

A float32 model of ``--model-mb`` MB in 4 layers is written once, with ``--distinct`` different
update files; an N-update round reuses those files cyclically (update k is file k mod distinct)
to save disk and setup time. Every N runs in a fresh subprocess so its VmHWM (peak resident
memory) is its own; growth is measured from the baseline after imports.

Per update, ``FedAvg.add`` makes two passes over the file (both from the page cache here):
  load/validate  read the blocks, check shapes, dtypes and finiteness (nothing is kept)
  fold           read the blocks again and add n * update into the accumulator
The "fold" throughput is the aggregation compute figure compared with copy bandwidth; the
load/validate pass and the end-to-end rate (both passes, plus finish) are reported beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedplane import numpyhelper  # noqa: E402
from fedplane.aggregators import create_aggregator  # noqa: E402
from fedplane.aggregators.base import ModelSpec, check_finite  # noqa: E402
from fedplane.aggregators.fedavg import WeightedSum  # noqa: E402

LAYERS = 4
MB = 1_000_000
SAMPLES = 20


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def layer_shapes(model_mb: int) -> list[tuple[int, int]]:
    per_layer = model_mb * MB // 4 // LAYERS
    cols = 1000
    return [(per_layer // cols, cols)] * LAYERS


def prepare_files(folder: Path, model_mb: int, distinct: int) -> Path:
    rng = np.random.default_rng(0)
    shapes = layer_shapes(model_mb)
    global_path = folder / "global.npz"
    numpyhelper.save([np.zeros(shape, np.float32) for shape in shapes], global_path)
    for k in range(distinct):
        layers = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        numpyhelper.save(layers, folder / f"update{k}.npz")
    return global_path


def warm_page_cache(paths: list[Path]) -> None:
    buffer = bytearray(1 << 22)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def cpu_timed(action) -> float:
    """CPU seconds of this process: on a shared machine, time spent descheduled is not ours."""
    started = time.process_time()
    action()
    return time.process_time() - started


def worker(count: int, folder: Path) -> dict:
    """One N: the public API for time and peak memory, then the two passes timed apart."""
    global_path = folder / "global.npz"
    updates = sorted(folder.glob("update*.npz"))
    warm_page_cache([global_path, *updates])
    baseline_kib = vm_kib("VmHWM")

    aggregator = create_aggregator("fedavg", None, folder / "work")
    started = time.perf_counter()
    aggregator.start_round(global_path)
    for k in range(count):
        aggregator.add(updates[k % len(updates)], 100 + k)
    adds_done = time.perf_counter()
    aggregator.finish(folder / "out.npz")
    finished = time.perf_counter()
    peak_growth_kib = vm_kib("VmHWM") - baseline_kib

    model_bytes = sum(int(np.prod(s)) * 4 for s in numpyhelper.layer_shapes(global_path))
    validate_s, fold_s, copy_s = split_pass_times(global_path, updates, count, model_bytes)
    return {
        "count": count,
        "model_bytes": model_bytes,
        "adds_s": adds_done - started,
        "finish_s": finished - adds_done,
        "validate_s": validate_s,
        "fold_s": fold_s,
        "copy_s": copy_s,
        "peak_growth_mb": peak_growth_kib * 1024 / MB,
    }


def split_pass_times(
    global_path: Path, updates: list[Path], count: int, model_bytes: int
) -> tuple[float, float, float]:
    """The work of ``FedAvg.add`` with the load/validate and fold passes timed apart, beside copyto.

    Best (minimum) CPU time per update-sized pass over at least ~20 samples each, interleaved
    so that copy and fold see the same machine conditions.
    """
    with numpyhelper.open_layers(global_path) as reader:
        total = WeightedSum(ModelSpec.of(reader))
    source = np.random.default_rng(1).standard_normal(model_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    target.fill(0.0)
    validate, fold, copy = [], [], []
    repeats = max(1, math.ceil(SAMPLES / count))
    for _ in range(repeats):
        for k in range(count):
            with numpyhelper.open_layers(updates[k % len(updates)]) as reader:
                validate.append(cpu_timed(lambda reader=reader: check_finite(reader)))
                fold.append(cpu_timed(lambda reader=reader, k=k: total.fold(reader, 100.0 + k)))
            copy.append(cpu_timed(lambda: np.copyto(target, source)))
    return min(validate), min(fold), min(copy)


def compressed_update_rate(folder: Path, global_path: Path, model_bytes: int) -> float:
    layers = numpyhelper.load(folder / "update0.npz")
    compressed = folder / "fedn-update.npz"
    np.savez_compressed(compressed, **{str(i): layer for i, layer in enumerate(layers)})
    del layers
    aggregator = create_aggregator("fedavg", None, folder / "work")
    aggregator.start_round(global_path)
    seconds = cpu_timed(lambda: aggregator.add(compressed, 1))
    compressed.unlink()
    return model_bytes / seconds / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-mb", type=int, default=100)
    parser.add_argument("--counts", default="2,5,10,20,50")
    parser.add_argument("--distinct", type=int, default=5, help="distinct update files, reused cyclically")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.dir)))
        return 0

    folder = Path(args.dir or tempfile.mkdtemp(prefix="fedplane-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return run(folder, args.model_mb, [int(c) for c in args.counts.split(",")], args.distinct)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, model_mb: int, counts: list[int], distinct: int) -> int:
    print(
        f"writing a {model_mb} MB float32 model ({LAYERS} layers) and {distinct} distinct updates to {folder}"
    )
    global_path = prepare_files(folder, model_mb, distinct)
    model_bytes = sum(int(np.prod(s)) * 4 for s in numpyhelper.layer_shapes(global_path))
    model_mb_real = model_bytes / MB
    print(f"update files reused cyclically: update k = file k mod {distinct}; all files in page cache\n")

    header = (
        f"{'N':>3} {'adds s':>7} {'finish s':>8} {'e2e GB/s':>8} {'load GB/s':>9} {'fold GB/s':>9} "
        f"{'copy GB/s':>9} {'fold/copy':>9} {'peak MB':>8} {'model MB':>8}  memory  speed"
    )
    print(header)
    print("-" * len(header))
    all_pass = True
    memory_limit_mb = 2 * model_mb_real + 100
    for count in counts:
        completed = subprocess.run(
            [sys.executable, __file__, "--worker", str(count), "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if completed.returncode != 0:
            print(f"{count:>3} worker failed:\n{completed.stderr}")
            all_pass = False
            continue
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        gb = row["model_bytes"] / 1e9
        e2e = count * gb / (row["adds_s"] + row["finish_s"])
        load = gb / row["validate_s"]
        fold = gb / row["fold_s"]
        copy_here = gb / row["copy_s"]
        memory_ok = row["peak_growth_mb"] <= memory_limit_mb
        speed_ok = fold >= 0.5 * copy_here
        all_pass &= memory_ok and speed_ok
        print(
            f"{count:>3} {row['adds_s']:>7.2f} {row['finish_s']:>8.2f} {e2e:>8.2f} {load:>9.2f} {fold:>9.2f} "
            f"{copy_here:>9.2f} {fold / copy_here:>9.2f} {row['peak_growth_mb']:>8.0f} {model_mb_real:>8.0f}  "
            f"{'PASS' if memory_ok else 'FAIL':>6}  {'PASS' if speed_ok else 'FAIL'}"
        )
    compressed_gbs = compressed_update_rate(folder, global_path, model_bytes)
    print(
        f"\nFEDn 0.9.5 client update (savez_compressed, inflated while streaming): add() at "
        f"{compressed_gbs:.2f} GB/s of model bytes (CPU time, one update, both passes), not part of the targets"
    )
    print(
        f"targets: peak memory growth <= 2 x model + 100 MB = {memory_limit_mb:.0f} MB for every N; "
        "fold throughput >= 0.5 x copy bandwidth (copy measured in the same worker)"
    )
    print("load, fold, copy: CPU time (process_time) of one update-sized pass, best of >= 20 samples")
    print(
        "e2e: wall clock, update bytes / (all add() calls + finish()): both passes per update and the write"
    )
    print("OVERALL:", "PASS" if all_pass else "FAIL")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
