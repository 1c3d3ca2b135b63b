"""Checks a model file must pass before its data is read, and the finite check done while reading.

Every path that takes a model from outside runs these: the seed upload on the controller, each
client update on the combiner, and each combiner's model in the controller's reduce.

1. Headers first (:mod:`fedplane.npzreader`): the zip directory is bounded, each member's ``.npy``
   header is parsed from the start of its stream, and only plain numeric arrays named
   ``"0".."n-1"`` whose zip sizes match their headers pass. No array data is inflated.
2. Declared size: what the headers declare must fit :class:`SizeLimits` (a seed), or match the
   round's global model layer for layer (an update or a combined model, checked by the caller).
3. Values: while the data is streamed block by block, NaN and infinity are refused.

Memory while checking headers does not depend on what the headers declare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fedplane.npzreader import LayerReader, ModelFileError, open_layers

__all__ = [
    "BLOCK_ELEMS",
    "FiniteCheck",
    "ModelFileError",
    "ModelSummary",
    "SizeLimits",
    "check_model_file",
    "find_non_finite",
]

# Blocks small enough to stay in L2 cache while a block is read, checked and folded.
BLOCK_ELEMS = 1 << 16

_MIB = 1 << 20


@dataclass(frozen=True)
class SizeLimits:
    """How many bytes of arrays a model file of a given size may declare.

    Trained float weights hardly compress (deflate gets about 1.1x), so a small multiple of the
    file size admits every real trained model. But a seed of zeros is a legitimate file that
    compresses about 1000x; the floor admits such seeds up to a size any federation can hold.
    The maximum caps both, whatever the file size. A file over its limit can still be sent
    uncompressed (``np.savez``), which always passes up to the maximum.
    """

    max_expansion: float = 8.0
    floor_bytes: int = 256 * _MIB
    max_bytes: int = 4 << 30

    def allowed(self, file_size: int) -> int:
        return min(max(int(self.max_expansion * file_size), self.floor_bytes), self.max_bytes)

    def describe(self, file_size: int) -> str:
        return (
            f"{self.allowed(file_size)} bytes ({self.max_expansion:g}x the {file_size}-byte file, "
            f"at least {self.floor_bytes}, at most {self.max_bytes})"
        )


@dataclass(frozen=True)
class ModelSummary:
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    declared_bytes: int
    file_size: int

    @property
    def layers(self) -> int:
        return len(self.shapes)


def check_model_file(
    path: str | os.PathLike[str], *, limits: SizeLimits, finite: bool = True
) -> ModelSummary:
    """Check a model file from outside (a seed); raises :class:`ModelFileError` saying why.

    Headers are checked first and the declared size against ``limits``; only then, with
    ``finite``, is the data streamed (one block in memory) to refuse NaN and infinity.
    """
    file_size = os.path.getsize(path)
    with open_layers(path) as reader:
        if len(reader) == 0:
            raise ModelFileError("the npz archive is empty: a model has at least one layer")
        check_declared_size(reader, limits, file_size)
        if finite:
            problem = find_non_finite(reader)
            if problem is not None:
                raise ModelFileError(problem)
        return ModelSummary(tuple(reader.shapes), tuple(reader.dtypes), reader.declared_bytes, file_size)


def check_declared_size(reader: LayerReader, limits: SizeLimits, file_size: int) -> None:
    declared = reader.declared_bytes
    if declared <= limits.allowed(file_size):
        return
    largest = max(range(len(reader)), key=lambda i: reader.nbytes[i])
    raise ModelFileError(
        f"the layers declare {declared} bytes in total, over the limit of {limits.describe(file_size)}; "
        f"the largest is member {reader.names[largest]!r}, declared shape {reader.shapes[largest]} "
        f"dtype {reader.dtypes[largest]} ({reader.nbytes[largest]} bytes)"
    )


class FiniteCheck:
    """Cheap all-finite test for cache-resident blocks: ``x · 0`` is NaN iff some ``x`` is not finite."""

    def __init__(self, block_elems: int = BLOCK_ELEMS) -> None:
        self._zeros = {np.dtype(t): np.zeros(block_elems, dtype=t) for t in (np.float32, np.float64)}

    def __call__(self, block: np.ndarray) -> bool:
        if block.dtype.kind != "f":
            return True
        zeros = self._zeros.get(block.dtype)
        if zeros is None or block.size > zeros.size:
            return bool(np.isfinite(block).all())
        with np.errstate(invalid="ignore"):
            return bool(np.isfinite(np.dot(block, zeros[: block.size])))


def find_non_finite(reader: LayerReader, block_elems: int = BLOCK_ELEMS) -> str | None:
    """Stream every float layer once, one block at a time; says where the first NaN or inf is."""
    finite = FiniteCheck(block_elems)
    for i, dtype in enumerate(reader.dtypes):
        if dtype.kind != "f":
            continue
        for start, block in reader.iter_blocks(i, block_elems):
            if not finite(block):
                return non_finite_message(i, reader.names[i], start, block)
    return None


def non_finite_message(layer: int, name: str, start: int, block: np.ndarray) -> str:
    offset = int(np.flatnonzero(~np.isfinite(block))[0])
    return (
        f"layer {layer} (member {name!r}) has non-finite values (NaN or infinity), "
        f"the first at flat index {start + offset}"
    )
