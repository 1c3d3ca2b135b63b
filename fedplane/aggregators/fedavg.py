"""Example-weighted averaging, folded into one running accumulator as updates arrive."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fedplane import numpyhelper
from fedplane.aggregators.base import (
    BLOCK_ELEMS,
    Aggregator,
    InvalidUpdate,
    ModelSpec,
    check_finite,
    check_num_examples,
    open_model,
    to_output,
)
from fedplane.npzcheck import non_finite_message
from fedplane.numpyhelper import LayerReader

try:  # BLAS axpy folds a block in one pass with no temporary; numpy is the fallback
    from scipy.linalg import blas as _blas
except ImportError:  # pragma: no cover - scipy ships with the server requirements
    _blas = None

_AXPY = {} if _blas is None else {np.dtype(np.float32): _blas.saxpy, np.dtype(np.float64): _blas.daxpy}

# OpenBLAS runs level-1 calls of up to 10,000 elements on the calling thread.
_SERIAL_BLAS_ELEMS = 8192

# Threads that inflate, check and fold the layers of one deflated update side by side (zlib, BLAS
# and numpy release the GIL); inflating is most of the work and each layer is its own stream.
INGEST_THREADS = max(1, min(4, os.cpu_count() or 1))


class WeightedSum:
    """Σ wᵢ·mᵢ and Σ wᵢ over model files, one flat accumulator per layer.

    Memory is the accumulator (one model in the arithmetic dtype) plus one cache-sized block,
    whatever the number of models folded in.
    """

    def __init__(self, spec: ModelSpec, block_elems: int = BLOCK_ELEMS) -> None:
        self.spec = spec
        self.block_elems = block_elems
        self.layers = [np.empty(size, dtype=spec.work_dtype(i)) for i, size in enumerate(spec.sizes)]
        for layer in self.layers:
            layer.fill(0)  # fault the pages in now rather than during the first update's fold
        self.total_weight = 0.0
        self._scratch = self._new_scratch()
        # The sums plus the update being read, for fold_checked; allocated on first use.
        self._next_layers: list[np.ndarray] | None = None

    def _new_scratch(self) -> dict[np.dtype, np.ndarray]:
        return {dtype: np.empty(self.block_elems, dtype=dtype) for dtype in {a.dtype for a in self.layers}}

    def fold(self, reader: LayerReader, weight: float) -> None:
        """Add ``weight`` times the (already validated) model in ``reader``."""
        for i, acc in enumerate(self.layers):
            for start, block in reader.iter_blocks(i, self.block_elems):
                target = acc[start : start + block.size]
                _fold_block(block, target, target, weight, self._scratch[acc.dtype])
        self.total_weight += weight

    def fold_checked(self, reader: LayerReader, weight: float, threads: int = INGEST_THREADS) -> None:
        """Check and fold an unchecked model in one pass, all or nothing; refusals raise ValueError.

        Each block is checked for NaN and infinity and folded while it is in cache, so a deflated
        update is inflated once and never kept whole. The sums plus this update go to a second
        set of layers, which becomes the sums only once every layer was read and checked: a
        refused update, wherever its problem is, leaves the sums exactly as they were. That
        second set costs one more accumulator of memory, and no more memory traffic than
        folding in place. Layers are read by up to ``threads`` threads; the refusal reported is
        the first in layer order, as a reading from the first layer to the last would find it.
        """
        if self._next_layers is None:
            self._next_layers = [np.empty_like(acc) for acc in self.layers]
        targets = self._next_layers
        # Largest layers first, so that the threads finish at about the same time.
        pending = iter(sorted(range(len(self.layers)), key=lambda i: -self.layers[i].size))
        pending_lock = threading.Lock()
        refusals = _FirstRefusal()
        folded: list[int] = []  # list.append is atomic

        def fold_layers() -> None:
            scratch = self._new_scratch()
            while True:
                with pending_lock:
                    i = next(pending, None)
                if i is None or refusals.before(i):
                    return
                acc, target = self.layers[i], targets[i]
                try:
                    for start, block in reader.iter_blocks(i, self.block_elems):
                        if refusals.before(i):
                            break  # an earlier layer is refused: this one no longer matters
                        if not _all_finite(block):
                            raise InvalidUpdate(non_finite_message(i, reader.names[i], start, block))
                        stop = start + block.size
                        _fold_block(block, acc[start:stop], target[start:stop], weight, scratch[acc.dtype])
                    else:
                        folded.append(i)
                except BaseException as exc:  # reported by the calling thread, in layer order
                    refusals.add(i, exc)

        helpers = [threading.Thread(target=fold_layers) for _ in range(min(threads, len(self.layers)) - 1)]
        for helper in helpers:
            helper.start()
        try:
            fold_layers()
        finally:
            for helper in helpers:
                helper.join()
        refusals.raise_first()
        if len(folded) != len(targets):
            raise RuntimeError(f"{len(targets) - len(folded)} layers of the update were not folded")
        self.layers, self._next_layers = targets, self.layers
        self.total_weight += weight

    def mean_in_place(self) -> list[np.ndarray]:
        """Turn the sums into the weighted mean, in place; returns the flat layers."""
        if self.total_weight <= 0:
            raise ValueError("nothing was folded in")
        scale = 1.0 / self.total_weight
        for acc in self.layers:
            for start in range(0, acc.size, self.block_elems):
                block = acc[start : start + self.block_elems]
                np.multiply(block, scale, out=block)
        return self.layers

    def shaped(self) -> list[np.ndarray]:
        """The accumulator layers reshaped and cast to the global model's dtypes."""
        return [
            to_output(acc, dtype).reshape(shape)
            for acc, shape, dtype in zip(self.layers, self.spec.shapes, self.spec.dtypes, strict=True)
        ]


def _fold_block(
    block: np.ndarray, acc: np.ndarray, out: np.ndarray, weight: float, scratch: np.ndarray
) -> None:
    """``out = acc + weight * block``; ``out`` may be ``acc``. The same arithmetic either way."""
    axpy = _AXPY.get(out.dtype)
    if out is not acc:
        np.copyto(out, acc)
        if axpy is not None and block.dtype == out.dtype:
            # Between the zlib calls of a deflated update, pieces small enough for BLAS to run
            # on this thread: a larger call wakes BLAS's own threads, which then spin on the
            # cores the inflating threads need. Elementwise, the sums are the same.
            for start in range(0, block.size, _SERIAL_BLAS_ELEMS):
                stop = start + _SERIAL_BLAS_ELEMS
                axpy(block[start:stop], out[start:stop], a=weight)
            return
    if axpy is not None and block.dtype == out.dtype:
        axpy(block, out, a=weight)
    else:
        tmp = scratch[: block.size]
        np.multiply(block, weight, out=tmp, casting="unsafe")
        np.add(out, tmp, out=out)


def _all_finite(block: np.ndarray) -> bool:
    # Not FiniteCheck's BLAS dot: see _SERIAL_BLAS_ELEMS.
    return block.dtype.kind != "f" or bool(np.isfinite(block).all())


class _FirstRefusal:
    """What went wrong in which layer, across threads; the first in layer order is raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_layer: dict[int, BaseException] = {}
        self._first = -1

    def add(self, layer: int, exc: BaseException) -> None:
        with self._lock:
            self._by_layer[layer] = exc
            if self._first < 0 or layer < self._first:
                self._first = layer

    def before(self, layer: int) -> bool:
        """A layer before ``layer`` was refused."""
        first = self._first
        return 0 <= first < layer

    def raise_first(self) -> None:
        if self._by_layer:
            raise self._by_layer[min(self._by_layer)]


class _FoldWhileReading:
    """``_prepare``'s answer for a deflated update: it is checked while it is folded, in one pass."""


_FOLD_WHILE_READING = _FoldWhileReading()


class FedAvg(Aggregator):
    """FEDn's ``fedavg``: Σnᵢmᵢ / Σnᵢ, weighted by each update's number of training examples."""

    name = "fedavg"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._sum: WeightedSum | None = None

    def _begin_round(self, spec: ModelSpec) -> None:
        self._sum = WeightedSum(spec)

    def _prepare(self, reader: LayerReader, spec: ModelSpec) -> _FoldWhileReading | None:
        if reader.compressed:
            # FEDn clients send deflated files: reading them twice (check, then fold) would
            # inflate them twice, so they are checked while they are folded (see _accept).
            return _FOLD_WHILE_READING
        check_finite(reader)  # plain files are mapped: a second read costs little
        return None

    def _accept(self, reader: LayerReader, spec: ModelSpec, weight: float, prepared: Any) -> None:
        assert self._sum is not None
        if prepared is _FOLD_WHILE_READING:
            self._sum.fold_checked(reader, weight)
        else:
            self._sum.fold(reader, weight)

    def _write(self, spec: ModelSpec, global_path: Path, out_path: Path) -> None:
        assert self._sum is not None
        self._sum.mean_in_place()
        numpyhelper.save(self._sum.shaped(), out_path)

    def _discard_round(self) -> None:
        self._sum = None


def weighted_average_files(
    paths_and_weights: list[tuple[Path, int]],
    out_path: Path,
    *,
    expected: ModelSpec | None = None,
    labels: list[str] | None = None,
) -> None:
    """Write the weighted mean of several model files (e.g. the combiners' models of one round).

    Streams like ``fedavg``: memory is one model plus one block. Every file must match
    ``expected`` (the round's global model), or the first file when it is not given; a
    mismatching, unreadable or non-finite file raises ``InvalidUpdate`` naming its label.
    """
    if not paths_and_weights:
        raise ValueError("no models to average")
    names = labels or [str(path) for path, _ in paths_and_weights]
    weights = [check_num_examples(weight) for _, weight in paths_and_weights]
    spec = expected
    if spec is None:
        try:
            with open_model(Path(paths_and_weights[0][0]), None, what="the file") as reader:
                spec = ModelSpec.of(reader)
        except ValueError as exc:
            raise InvalidUpdate(f"{names[0]}: {exc}") from exc
    total = WeightedSum(spec)
    for (path, _), weight, name in zip(paths_and_weights, weights, names, strict=True):
        try:
            with open_model(Path(path), spec, what="the file") as reader:
                check_finite(reader)
                total.fold(reader, weight)
        except InvalidUpdate as exc:
            raise InvalidUpdate(f"{name}: {exc}") from exc
        except ValueError as exc:  # damaged data found while streaming
            raise InvalidUpdate(f"{name} could not be read: {exc}") from exc
    total.mean_in_place()
    numpyhelper.save(total.shaped(), out_path)


__all__ = ["FedAvg", "InvalidUpdate", "WeightedSum", "weighted_average_files"]
