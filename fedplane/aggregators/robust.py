"""Byzantine-robust aggregators that need every update at once: median, trimmed mean, (multi-)Krum.

Each accepted update is spooled to ``workdir`` as one raw file (layers flattened in C order, in
the arithmetic dtype). ``finish`` then reads blocks of coordinates across all N spools with
``pread``, so memory stays about N x block plus the output model, never N x model.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedplane import numpyhelper
from fedplane.aggregators.base import (
    BLOCK_ELEMS,
    Aggregator,
    FiniteCheck,
    InvalidUpdate,
    ModelSpec,
    Param,
    parse_params,
    to_output,
)
from fedplane.npzcheck import non_finite_message
from fedplane.numpyhelper import LayerReader

logger = logging.getLogger(__name__)

# Bytes of the N x block working set across all spooled updates (float64 for the arithmetic).
BLOCK_BUDGET_BYTES = 64 << 20
MAX_BLOCK_ELEMS = 4 << 20
MIN_BLOCK_ELEMS = 4096


@dataclass(frozen=True)
class _Spooled:
    path: Path
    weight: float


class _SpoolLayout:
    """Where each layer starts in a spool file, and in which dtype it is stored."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.dtypes = [spec.work_dtype(i) for i in range(len(spec.shapes))]
        self.sizes = spec.sizes
        self.offsets: list[int] = []
        offset = 0
        for size, dtype in zip(self.sizes, self.dtypes, strict=True):
            self.offsets.append(offset)
            offset += size * dtype.itemsize


class SpooledAggregator(Aggregator):
    """Spools updates to disk; subclasses compute the result from blocks across all of them."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._spools: list[_Spooled] = []
        self._layout: _SpoolLayout | None = None

    def _begin_round(self, spec: ModelSpec) -> None:
        self._spools = []
        self._layout = _SpoolLayout(spec)

    def _prepare(self, reader: LayerReader, spec: ModelSpec) -> Path:
        layout = self._layout
        assert layout is not None
        path = self.workdir / f"update-{uuid.uuid4().hex}.spool"
        finite = FiniteCheck(BLOCK_ELEMS)
        try:
            with open(path, "wb") as spool:
                for i, dtype in enumerate(layout.dtypes):
                    for start, block in reader.iter_blocks(i, BLOCK_ELEMS):
                        if not finite(block):
                            raise InvalidUpdate(non_finite_message(i, reader.names[i], start, block))
                        spool.write(np.ascontiguousarray(block, dtype=dtype).data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _drop_prepared(self, prepared: Any) -> None:
        Path(prepared).unlink(missing_ok=True)

    def _accept(self, reader: LayerReader, spec: ModelSpec, weight: float, prepared: Any) -> None:
        self._spools.append(_Spooled(Path(prepared), weight))

    def _discard_round(self) -> None:
        for spooled in self._spools:
            spooled.path.unlink(missing_ok=True)
        self._spools = []

    def _write(self, spec: ModelSpec, global_path: Path, out_path: Path) -> None:
        layout = self._layout
        assert layout is not None
        outputs = [np.empty(size, dtype=dtype) for size, dtype in zip(spec.sizes, spec.dtypes, strict=True)]
        with ExitStack() as stack:
            fds = [os.open(s.path, os.O_RDONLY) for s in self._spools]
            for fd in fds:
                stack.callback(os.close, fd)
            self._combine(_SpoolReader(layout, fds), np.array([s.weight for s in self._spools]), outputs)
        numpyhelper.save(
            [out.reshape(shape) for out, shape in zip(outputs, spec.shapes, strict=True)], out_path
        )

    @abc.abstractmethod
    def _combine(self, spools: _SpoolReader, weights: np.ndarray, outputs: list[np.ndarray]) -> None:
        """Fill the flat output layers (global dtypes) from the spooled updates."""


class _SpoolReader:
    """Blocks of coordinates of one layer across several spooled updates."""

    def __init__(self, layout: _SpoolLayout, fds: list[int]) -> None:
        self.layout = layout
        self.fds = fds

    @property
    def count(self) -> int:
        return len(self.fds)

    def block_elems(self, rows: int) -> int:
        return max(MIN_BLOCK_ELEMS, min(MAX_BLOCK_ELEMS, BLOCK_BUDGET_BYTES // (8 * max(rows, 1))))

    def blocks(self, layer: int, rows: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, stack)`` where ``stack[k]`` is a block of update ``rows[k]``'s layer."""
        rows = list(range(self.count)) if rows is None else rows
        size, dtype = self.layout.sizes[layer], self.layout.dtypes[layer]
        block = self.block_elems(len(rows))
        buffer = np.empty((len(rows), min(block, max(size, 1))), dtype=dtype)
        for start in range(0, size, block):
            width = min(block, size - start)
            stack = buffer[:, :width]
            offset = self.layout.offsets[layer] + start * dtype.itemsize
            for k, row in enumerate(rows):
                _pread_exact(self.fds[row], stack[k], offset)
            yield start, stack


def _pread_exact(fd: int, out: np.ndarray, offset: int) -> None:
    view = memoryview(out).cast("B")
    filled = 0
    while filled < len(view):
        n = os.preadv(fd, [view[filled:]], offset + filled)
        if n <= 0:
            raise OSError("spool file is shorter than expected")
        filled += n


class FedMedian(SpooledAggregator):
    """Coordinate-wise median of the updates (unweighted)."""

    name = "fedmedian"

    def _combine(self, spools: _SpoolReader, weights: np.ndarray, outputs: list[np.ndarray]) -> None:
        for i, out in enumerate(outputs):
            for start, stack in spools.blocks(i):
                out[start : start + stack.shape[1]] = to_output(np.median(stack, axis=0), out.dtype)


class TrimmedMean(SpooledAggregator):
    """Per coordinate, drop the ⌊beta·N⌋ lowest and highest values and average the rest (unweighted)."""

    name = "trimmedmean"
    PARAMS = {"beta": Param((float, int), 0.1, lambda v: math.isfinite(v) and 0 <= v < 0.5, "in [0, 0.5)")}

    def __init__(self, workdir: Path, *, beta: float = 0.1) -> None:
        super().__init__(workdir)
        self.beta = float(beta)

    @classmethod
    def create(cls, workdir: Path, params: dict[str, Any]) -> TrimmedMean:
        return cls(workdir, **parse_params(cls.name, params, cls.PARAMS))

    def _combine(self, spools: _SpoolReader, weights: np.ndarray, outputs: list[np.ndarray]) -> None:
        n = spools.count
        cut = math.floor(self.beta * n)
        for i, out in enumerate(outputs):
            for start, stack in spools.blocks(i):
                stack.sort(axis=0)
                kept = stack[cut : n - cut]
                out[start : start + stack.shape[1]] = to_output(
                    kept.mean(axis=0, dtype=np.float64), out.dtype
                )


class _KrumBase(SpooledAggregator):
    """Krum scores: for each update, the sum of squared distances to its N - f - 2 nearest others."""

    PARAMS: dict[str, Param] = {"f": Param((int,), 1, lambda v: v >= 0, ">= 0")}

    def __init__(self, workdir: Path, *, f: int = 1) -> None:
        super().__init__(workdir)
        self.f = f

    def pairwise_sq_distances(self, spools: _SpoolReader) -> np.ndarray:
        n = spools.count
        distances = np.zeros((n, n))
        for i in range(len(spools.layout.sizes)):
            for _, stack in spools.blocks(i):
                centred = stack.astype(np.float64)
                # centring keeps |x|² + |y|² - 2x·y well conditioned when updates are close
                centred -= centred.mean(axis=0)
                gram = centred @ centred.T
                norms = np.diag(gram)
                distances += norms[:, None] + norms[None, :] - 2.0 * gram
        np.fill_diagonal(distances, 0.0)
        return np.maximum(distances, 0.0)

    def scores(self, distances: np.ndarray) -> np.ndarray:
        n = distances.shape[0]
        neighbours = n - self.f - 2
        if neighbours < 1:
            logger.warning(
                "%s: %d updates are too few for f=%d; scoring against all others", self.name, n, self.f
            )
            neighbours = n - 1
        others = np.sort(distances + np.diag(np.full(n, np.inf)), axis=1)[:, : max(neighbours, 0)]
        return others.sum(axis=1)

    def ranking(self, spools: _SpoolReader) -> np.ndarray:
        """Update indices from best (lowest score) to worst; ties go to the earlier update."""
        return np.argsort(self.scores(self.pairwise_sq_distances(spools)), kind="stable")

    @classmethod
    def create(cls, workdir: Path, params: dict[str, Any]) -> _KrumBase:
        return cls(workdir, **parse_params(cls.name, params, cls.PARAMS))


class Krum(_KrumBase):
    """The single update with the best Krum score."""

    name = "krum"

    def _combine(self, spools: _SpoolReader, weights: np.ndarray, outputs: list[np.ndarray]) -> None:
        best = int(self.ranking(spools)[0])
        for i, out in enumerate(outputs):
            for start, stack in spools.blocks(i, rows=[best]):
                out[start : start + stack.shape[1]] = to_output(stack[0], out.dtype)


class MultiKrum(_KrumBase):
    """Example-weighted mean of the ``m`` updates with the best Krum scores (default m = N - f)."""

    name = "multikrum"
    PARAMS = {
        "f": Param((int,), 1, lambda v: v >= 0, ">= 0"),
        "m": Param((int, type(None)), None, lambda v: v is None or v >= 1, ">= 1"),
    }

    def __init__(self, workdir: Path, *, f: int = 1, m: int | None = None) -> None:
        super().__init__(workdir, f=f)
        self.m = m

    def _combine(self, spools: _SpoolReader, weights: np.ndarray, outputs: list[np.ndarray]) -> None:
        n = spools.count
        selected_count = self.m if self.m is not None else n - self.f
        selected_count = min(max(selected_count, 1), n)
        selected = sorted(int(k) for k in self.ranking(spools)[:selected_count])
        chosen_weights = weights[selected] / weights[selected].sum()
        for i, out in enumerate(outputs):
            for start, stack in spools.blocks(i, rows=selected):
                out[start : start + stack.shape[1]] = to_output(chosen_weights @ stack, out.dtype)
