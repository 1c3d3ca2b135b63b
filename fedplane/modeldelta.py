"""Model deltas (update minus the model it was trained from), streamed block by block.

Clients send whole models; clipping (differential privacy) and buffered asynchronous aggregation
work on the delta ``update - base``. Nothing here holds more than one block of either model: the
norm is one pass over both files, and :class:`ScaledDelta` hands the scaled delta to an
accumulator's fold (it has the ``iter_blocks`` of a :class:`~fedplane.npzreader.LayerReader`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from fedplane.npzcheck import BLOCK_ELEMS
from fedplane.npzreader import LayerReader

__all__ = ["ScaledDelta", "check_same_layout", "delta_norm"]


def check_same_layout(update: LayerReader, base: LayerReader) -> None:
    """Refuse an update whose layer count or shapes differ from its base model's."""
    if len(update) != len(base):
        raise ValueError(f"update has {len(update)} layers, its base model has {len(base)}")
    for i, (shape, base_shape) in enumerate(zip(update.shapes, base.shapes, strict=True)):
        if shape != base_shape:
            raise ValueError(f"layer {i} has shape {shape}, its base model has shape {base_shape}")


def _paired_blocks(
    update: LayerReader, base: LayerReader, index: int, block_elems: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    # Both readers cut a layer at the same multiples of block_elems, so their blocks pair up.
    for (start, block), (_, base_block) in zip(
        update.iter_blocks(index, block_elems), base.iter_blocks(index, block_elems), strict=True
    ):
        yield start, block, base_block


def _subtract_into(out: np.ndarray, block: np.ndarray, base_block: np.ndarray) -> None:
    # Cast first: subtracting integer (or bool) layers in their own dtype would wrap around.
    np.copyto(out, block, casting="unsafe")
    np.subtract(out, base_block, out=out, casting="unsafe")


def delta_norm(update: LayerReader, base: LayerReader, block_elems: int = BLOCK_ELEMS) -> float:
    """L2 norm of ``update - base`` over all layers together, in float64 (no overflow for float32 models)."""
    check_same_layout(update, base)
    scratch = np.empty(block_elems, dtype=np.float64)
    total = 0.0
    for i in range(len(update)):
        for _, block, base_block in _paired_blocks(update, base, i, block_elems):
            diff = scratch[: block.size]
            _subtract_into(diff, block, base_block)
            total += float(np.dot(diff, diff))
    return math.sqrt(total)


class ScaledDelta:
    """``factor * (update - base)``, plus ``base`` when ``with_base``, as blocks for an accumulator.

    Pass it where a fold expects a model reader (``WeightedSum.fold``): ``with_base=False`` folds
    the delta itself (a sum of deltas to add to a model later), ``with_base=True`` folds the
    update as clipped model ``base + factor * delta``. Blocks of layer ``i`` are computed in
    ``dtypes[i]`` (give the accumulator's dtypes so the fold needs no cast). Like a reader's, each
    block is a view of a reused buffer: consume it before asking for the next one.
    """

    def __init__(
        self,
        update: LayerReader,
        base: LayerReader,
        factor: float,
        dtypes: Sequence[np.dtype],
        *,
        with_base: bool = False,
    ) -> None:
        check_same_layout(update, base)
        if len(dtypes) != len(update):
            raise ValueError(f"{len(dtypes)} dtypes given for {len(update)} layers")
        if not math.isfinite(factor):
            raise ValueError(f"factor must be finite, got {factor!r}")
        self.update = update
        self.base = base
        self.factor = float(factor)
        self.dtypes = [np.dtype(dtype) for dtype in dtypes]
        self.with_base = with_base
        self._buffers: dict[np.dtype, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.update)

    def iter_blocks(self, index: int, block_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        dtype = self.dtypes[index]
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.size < block_elems:
            buffer = self._buffers[dtype] = np.empty(block_elems, dtype=dtype)
        for start, block, base_block in _paired_blocks(self.update, self.base, index, block_elems):
            out = buffer[: block.size]
            _subtract_into(out, block, base_block)
            if self.factor != 1.0:
                np.multiply(out, self.factor, out=out, casting="unsafe")
            if self.with_base:
                np.add(out, base_block, out=out, casting="unsafe")
            yield start, out
