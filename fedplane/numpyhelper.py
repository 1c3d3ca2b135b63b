"""Model files and layer-list arithmetic, compatible with FEDn's numpyhelper.

A model is a list of numpy arrays stored as an ``.npz`` archive whose members are named
``"0".."n-1"``. We write plain ``np.savez`` (much faster than ``savez_compressed``) and read both
plain and compressed archives. Nothing here ever unpickles: object arrays are refused.

``open_layers`` reads one layer (or one block of a layer) at a time, so aggregation can stay
within a memory bound of about one model whatever the number of updates; it and its
``LayerReader`` live in :mod:`fedplane.npzreader`, the npz reader, and are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedplane.npzreader import LOCAL_HEADER, LayerReader, NpzArchive, open_layers

__all__ = [
    "LayerReader",
    "add",
    "divide",
    "increment_average",
    "layer_shapes",
    "load",
    "multiply",
    "norm",
    "ones",
    "open_layers",
    "power",
    "save",
    "save_blocks",
    "sha256_of",
    "sign",
    "sqrt",
    "subtract",
]

Layers = list[np.ndarray]
PathOrFile = str | os.PathLike[str] | IO[bytes]

_DATA_ALIGN = 64  # np.lib.format pads .npy headers to 64 bytes, so aligned members give aligned data
_ZIP64_LOCAL_EXTRA = 20  # the zip64 field zipfile appends to a local header with force_zip64
_ALIGN_EXTRA_ID = 0xD935


# ---------------------------------------------------------------- save / load


def save(layers: Sequence[np.ndarray], path_or_file: PathOrFile) -> PathOrFile:
    """Write ``layers`` as an uncompressed ``.npz`` with keys ``"0".."n-1"``.

    A path is written exactly as given (no ``.npz`` suffix is appended) and atomically, through
    a temporary file in the same folder, so a concurrent reader never sees half a model.
    """
    arrays = _check_layers(layers, "layers")
    for i, array in enumerate(arrays):
        if array.dtype.hasobject:
            raise ValueError(f"layer {i} has dtype {array.dtype}; object arrays cannot be saved")
    if hasattr(path_or_file, "write"):
        _write_npz(path_or_file, arrays)  # type: ignore[arg-type]
        return path_or_file
    target = Path(os.fspath(path_or_file))  # type: ignore[arg-type]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            _write_npz(tmp, arrays)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path_or_file


def _write_npz(handle: IO[bytes], arrays: list[np.ndarray]) -> None:
    """What ``np.savez`` writes, except that every array's data starts 64-byte aligned in the file.

    Aligned data lets readers map a layer and hand it to BLAS without a copy. The padding is an
    extra field in each local header (the id Android's zipalign uses), which zip readers ignore.
    """
    try:
        position = handle.tell()
    except (AttributeError, OSError):
        np.savez(handle, **{str(i): array for i, array in enumerate(arrays)})  # not seekable: no alignment
        return
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for i, array in enumerate(arrays):
            with archive.open(_aligned_member(i, position), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            position = handle.tell()


def _aligned_member(index: int, position: int) -> zipfile.ZipInfo:
    """Zip entry for layer ``index`` whose local header, written at ``position``, ends 64-byte aligned."""
    info = zipfile.ZipInfo(f"{index}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    # local header: fixed part, name, our padding, then the zip64 field that force_zip64 adds
    unpadded = position + LOCAL_HEADER.size + len(info.filename) + _ZIP64_LOCAL_EXTRA
    padding = -unpadded % _DATA_ALIGN
    if 0 < padding < 4:  # an extra field needs at least its 4-byte header
        padding += _DATA_ALIGN
    if padding:
        info.extra = struct.pack("<HH", _ALIGN_EXTRA_ID, padding - 4) + bytes(padding - 4)
    return info


def save_blocks(
    reader: LayerReader,
    path: str | os.PathLike[str],
    block_elems: int,
    on_block: Callable[[int, int, np.ndarray], None] | None = None,
) -> None:
    """Copy a model to a plain aligned npz one block at a time (e.g. to inflate a compressed file once).

    ``on_block(layer, start, block)`` sees every block before it is written and may raise to abort;
    the partial file is then removed.
    """
    target = Path(os.fspath(path))
    try:
        with (
            open(target, "wb") as handle,
            zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
        ):
            for i, (shape, dtype) in enumerate(zip(reader.shapes, reader.dtypes, strict=True)):
                with archive.open(_aligned_member(i, handle.tell()), "w", force_zip64=True) as member:
                    header = {
                        "descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False,
                        "shape": shape,
                    }
                    try:
                        np.lib.format.write_array_header_1_0(member, header)
                    except ValueError:  # header too long for format 1.0
                        np.lib.format.write_array_header_2_0(member, header)
                    for start, block in reader.iter_blocks(i, block_elems):
                        if on_block is not None:
                            on_block(i, start, block)
                        member.write(np.ascontiguousarray(block).data)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def load(path_or_file: PathOrFile) -> Layers:
    """Read a model saved by FEDn (compressed) or by :func:`save` (plain) as a list of arrays.

    Raises ``ValueError`` for anything that is not an npz of plain numeric or string arrays with
    keys exactly ``"0".."n-1"`` (pickles, object arrays, wrong keys, garbage bytes).
    """
    if hasattr(path_or_file, "read"):
        with NpzArchive(path_or_file) as archive:  # type: ignore[arg-type]
            return [archive.read_layer(i) for i in range(len(archive))]
    with open_layers(path_or_file) as reader:  # type: ignore[arg-type]
        return [reader[i] for i in range(len(reader))]


def layer_shapes(path: str | os.PathLike[str]) -> list[tuple[int, ...]]:
    """Shapes of the layers of a model file, read from the headers only."""
    with open_layers(path) as reader:
        return list(reader.shapes)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- layer-list arithmetic


def _check_layers(model: Any, name: str) -> list[np.ndarray]:
    """Models are sequences of numpy arrays; plain Python lists as layers raise TypeError."""
    if isinstance(model, np.ndarray):
        return list(model)  # iterating an array gives its rows (or scalars), as FEDn's zip does
    if isinstance(model, str | bytes) or not isinstance(model, Sequence):
        raise TypeError(f"{name} must be a list of numpy arrays, got {type(model).__name__}")
    for i, layer in enumerate(model):
        if not isinstance(layer, np.ndarray | np.generic):
            raise TypeError(f"{name}[{i}] is {type(layer).__name__}, expected numpy.ndarray")
    return list(model)


def _pair(m1: Any, m2: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    first, second = _check_layers(m1, "m1"), _check_layers(m2, "m2")
    if len(first) != len(second):
        raise ValueError(f"models have different layer counts: {len(first)} and {len(second)}")
    return list(zip(first, second, strict=True))


def increment_average(m1: Layers, m2: Layers, n: float, N: float) -> Layers:
    """Running weighted mean: ``m1 + n * (m2 - m1) / N``."""
    return [np.add(x, n * (y - x) / N) for x, y in _pair(m1, m2)]


def add(m1: Layers, m2: Layers, a: float = 1.0, b: float = 1.0) -> Layers:
    """``a * m1 + b * m2``."""
    return [x * a + y * b for x, y in _pair(m1, m2)]


def subtract(m1: Layers, m2: Layers, a: float = 1.0, b: float = 1.0) -> Layers:
    """``a * m1 - b * m2``."""
    return add(m1, m2, a, -b)


def multiply(m1: Layers, m2: Layers) -> Layers:
    """Element-wise ``m1 * m2``."""
    return [np.multiply(x, y) for x, y in _pair(m1, m2)]


def divide(m1: Layers, m2: Layers) -> Layers:
    """Element-wise ``m1 / m2``."""
    return [np.divide(x, y) for x, y in _pair(m1, m2)]


def sqrt(m: Layers) -> Layers:
    return [np.sqrt(x) for x in _check_layers(m, "m")]


def power(m: Layers, a: float) -> Layers:
    return [np.power(x, a) for x in _check_layers(m, "m")]


def sign(m: Layers) -> Layers:
    return [np.sign(x) for x in _check_layers(m, "m")]


def norm(m: Layers) -> float:
    """Sum over layers of each layer's L1 norm.

    FEDn calls ``np.linalg.norm(x, 1)``, which is the entry-wise L1 norm for 1-D layers but the
    maximum column sum for 2-D ones and an error beyond; we take the entry-wise L1 norm of every
    layer, which is what FEDn documents.
    """
    return float(sum(float(np.abs(x).sum(dtype=np.float64)) for x in _check_layers(m, "m")))


def ones(m: Layers, a: float) -> Layers:
    """Arrays shaped like ``m``'s layers, filled with ``a`` (float64, as FEDn)."""
    return [np.ones(np.shape(x)) * a for x in _check_layers(m, "m")]
