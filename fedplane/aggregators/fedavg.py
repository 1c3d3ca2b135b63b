"""Example-weighted averaging, folded into one running accumulator as updates arrive."""

from __future__ import annotations

import uuid
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
        self._scratch = {
            dtype: np.empty(block_elems, dtype=dtype) for dtype in {layer.dtype for layer in self.layers}
        }

    def fold(self, reader: LayerReader, weight: float) -> None:
        """Add ``weight`` times the (already validated) model in ``reader``."""
        for i, acc in enumerate(self.layers):
            axpy = _AXPY.get(acc.dtype)
            scratch = self._scratch[acc.dtype]
            for start, block in reader.iter_blocks(i, self.block_elems):
                target = acc[start : start + block.size]
                if axpy is not None and block.dtype == acc.dtype:
                    axpy(block, target, a=weight)
                else:
                    tmp = scratch[: block.size]
                    np.multiply(block, weight, out=tmp, casting="unsafe")
                    np.add(target, tmp, out=target)
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


class FedAvg(Aggregator):
    """FEDn's ``fedavg``: Σnᵢmᵢ / Σnᵢ, weighted by each update's number of training examples."""

    name = "fedavg"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._sum: WeightedSum | None = None

    def _begin_round(self, spec: ModelSpec) -> None:
        self._sum = WeightedSum(spec)

    def _prepare(self, reader: LayerReader, spec: ModelSpec) -> Path | None:
        if not reader.compressed:
            check_finite(reader)
            return None
        # FEDn clients send deflated files: inflate once into a plain copy while validating,
        # rather than inflating a second time for the fold.
        plain = self.workdir / f"inflated-{uuid.uuid4().hex}.npz"
        finite = FiniteCheck(BLOCK_ELEMS)

        def refuse_non_finite(layer: int, start: int, block: np.ndarray) -> None:
            if not finite(block):
                raise InvalidUpdate(non_finite_message(layer, reader.names[layer], start, block))

        numpyhelper.save_blocks(reader, plain, BLOCK_ELEMS, on_block=refuse_non_finite)
        return plain

    def _drop_prepared(self, prepared: Any) -> None:
        if prepared is not None:
            Path(prepared).unlink(missing_ok=True)

    def _accept(self, reader: LayerReader, spec: ModelSpec, weight: float, prepared: Any) -> None:
        assert self._sum is not None
        if prepared is None:
            self._sum.fold(reader, weight)
            return
        try:
            with numpyhelper.open_layers(prepared) as plain:
                self._sum.fold(plain, weight)
        finally:
            Path(prepared).unlink(missing_ok=True)

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
