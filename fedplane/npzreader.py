"""Lazy, validated reading of ``.npz`` model files, without ever unpickling.

A hand-written zip/npy index: member names must be exactly ``"0.npy".."n-1.npy"``, every ``.npy``
header is checked (object arrays are refused) and every member's size against its header. For
stored (uncompressed) members the absolute file offset of the array data is found from the zip
local header, so a layer is read with ``pread`` or streamed in blocks through a sliding read-only
memory mapping; deflated members (FEDn writes ``savez_compressed``) are inflated as they are read.

:func:`open_layers` is the entry point; :mod:`fedplane.numpyhelper` re-exports it.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, BinaryIO

import numpy as np

__all__ = ["LOCAL_HEADER", "LayerReader", "NpzArchive", "open_layers"]

_ZIP_LOCAL_MAGIC = b"PK\x03\x04"
_ZIP_EMPTY_MAGIC = b"PK\x05\x06"
LOCAL_HEADER = struct.Struct("<4s5HL2L2H")  # fixed part of a zip local file header (30 bytes)
_NPY_MAX_HEADER = 10_000
_MAP_WINDOW_BYTES = 8 << 20


def open_layers(path: str | os.PathLike[str]) -> LayerReader:
    """Open a model file for lazy reading; use as ``with open_layers(path) as reader:``.

    ``len(reader)`` is the layer count, ``reader[i]`` loads layer ``i``, ``reader.iter_blocks``
    streams a layer in blocks.
    """
    handle = open(path, "rb")  # noqa: SIM115 - owned and closed by the reader
    try:
        return LayerReader(NpzArchive(handle))
    except BaseException:
        handle.close()
        raise


class LayerReader:
    """Read-only view of a model file that loads one layer, or one block of a layer, at a time."""

    def __init__(self, archive: NpzArchive) -> None:
        self._archive = archive

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._archive.close()

    def __len__(self) -> int:
        return len(self._archive)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, int | np.integer):
            raise TypeError("layer index must be an integer")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"layer {index} out of range for a model with {len(self)} layers")
        return self._archive.read_layer(int(index))

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [entry.shape for entry in self._archive.entries]

    @property
    def dtypes(self) -> list[np.dtype]:
        return [entry.dtype for entry in self._archive.entries]

    @property
    def compressed(self) -> bool:
        """True if any layer is deflated (FEDn writes ``savez_compressed``): each read inflates again."""
        return any(entry.compressed for entry in self._archive.entries)

    def iter_blocks(self, index: int, block_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` over the C-order flattened layer ``index``.

        Blocks are read-only views (of a reused buffer or of a mapping of the file): consume
        each before asking for the next one. The file must not be truncated while it is read.
        """
        yield from self._archive.iter_blocks(index, block_elems)


# ---------------------------------------------------------------- npz index


class _Entry:
    __slots__ = ("compressed", "data_offset", "dtype", "fortran_order", "info", "shape", "size")

    def __init__(self, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> None:
        self.info = info
        self.shape = shape
        self.dtype = dtype
        self.fortran_order = fortran
        self.size = int(np.prod(shape, dtype=np.int64))
        self.compressed = info.compress_type != zipfile.ZIP_STORED
        self.data_offset = -1  # absolute file offset of the array data, for stored members


class NpzArchive:
    """Validated index of an npz file: member names, array headers and data offsets."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        magic = handle.read(4)
        handle.seek(0)
        if magic not in (_ZIP_LOCAL_MAGIC, _ZIP_EMPTY_MAGIC):
            raise ValueError("not an npz archive (no zip signature); pickles and .npy files are refused")
        self._file_size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        try:
            self._zip = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"not a readable npz archive: {exc}") from exc
        try:
            with _unreadable_as_value_error():
                self.entries = self._index()
        except BaseException:
            self._zip.close()
            raise
        try:
            self._fd: int | None = handle.fileno()
        except (AttributeError, io.UnsupportedOperation):
            self._fd = None

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._handle.close()

    def __len__(self) -> int:
        return len(self.entries)

    def _index(self) -> list[_Entry]:
        infos = self._zip.infolist()
        by_name = {info.filename: info for info in infos}
        expected = [f"{i}.npy" for i in range(len(infos))]
        if len(by_name) != len(infos) or set(by_name) != set(expected):
            names = sorted(info.filename.removesuffix(".npy") for info in infos)
            raise ValueError(f'model keys must be exactly "0".."{len(infos) - 1}", got {names[:10]}')
        entries = []
        for i, name in enumerate(expected):
            info = by_name[name]
            if info.flag_bits & 0x1:
                raise ValueError(f"layer {i} is encrypted")
            with self._zip.open(info) as member:
                shape, dtype, fortran, header_len = _read_npy_header(member, i)
            entry = _Entry(info, shape, dtype, fortran)
            if info.file_size != header_len + entry.size * dtype.itemsize:
                raise ValueError(f"layer {i} is truncated or has trailing bytes")
            if not entry.compressed:
                entry.data_offset = self._member_data_offset(info) + header_len
                if entry.data_offset + entry.size * dtype.itemsize > self._file_size:
                    raise ValueError(f"layer {i} extends past the end of the file")
            entries.append(entry)
        return entries

    def _member_data_offset(self, info: zipfile.ZipInfo) -> int:
        self._handle.seek(info.header_offset)
        raw = self._handle.read(LOCAL_HEADER.size)
        if len(raw) != LOCAL_HEADER.size or raw[:4] != _ZIP_LOCAL_MAGIC:
            raise ValueError(f"bad zip local header for {info.filename}")
        fields = LOCAL_HEADER.unpack(raw)
        name_len, extra_len = fields[-2], fields[-1]
        return info.header_offset + LOCAL_HEADER.size + name_len + extra_len

    def read_layer(self, index: int) -> np.ndarray:
        entry = self.entries[index]
        flat = np.empty(entry.size, dtype=entry.dtype)
        with _unreadable_as_value_error():
            self._read_into(entry, flat)
        order = "F" if entry.fortran_order else "C"
        return flat.reshape(entry.shape, order=order)

    def iter_blocks(self, index: int, block_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        if block_elems <= 0:
            raise ValueError("block_elems must be positive")
        entry = self.entries[index]
        if entry.fortran_order and len(entry.shape) > 1:
            # Rare: blocks of the file bytes would not be C-order coordinates; load the layer.
            flat = np.ascontiguousarray(self.read_layer(index)).reshape(-1)
            for start in range(0, entry.size, block_elems):
                yield start, flat[start : start + block_elems]
            return
        buffer_elems = min(block_elems, max(entry.size, 1))
        if entry.compressed or self._fd is None:
            buffer = np.empty(buffer_elems, dtype=entry.dtype)
            with _unreadable_as_value_error(), self._zip.open(entry.info) as member:
                _read_npy_header(member, index)
                for start in range(0, entry.size, block_elems):
                    block = buffer[: min(block_elems, entry.size - start)]
                    _readinto_exact(member, block, entry.info.filename)
                    yield start, block
            return
        try:
            yield from self._iter_mapped_blocks(entry, block_elems)
            return
        except _MapUnavailable:
            pass
        buffer = np.empty(buffer_elems, dtype=entry.dtype)
        for start in range(0, entry.size, block_elems):
            block = buffer[: min(block_elems, entry.size - start)]
            _pread_exact(self._fd, block, entry.data_offset + start * entry.dtype.itemsize)
            yield start, block

    def _iter_mapped_blocks(self, entry: _Entry, block_elems: int) -> Iterator[tuple[int, np.ndarray]]:
        """Blocks straight from the page cache through a sliding read-only mapping (no copy).

        Only a window of about ``_MAP_WINDOW_BYTES`` is mapped at a time, so the resident size
        stays bounded whatever the layer size. Member bounds were checked against the file size
        when the archive was indexed, so no access can fall past the end of the file.
        """
        assert self._fd is not None
        itemsize = entry.dtype.itemsize
        window_elems = max(1, _MAP_WINDOW_BYTES // (block_elems * itemsize)) * block_elems
        for window_start in range(0, entry.size, window_elems):
            count = min(window_elems, entry.size - window_start)
            position = entry.data_offset + window_start * itemsize
            aligned = position - position % mmap.ALLOCATIONGRANULARITY
            try:
                mapping = mmap.mmap(
                    self._fd, position - aligned + count * itemsize, access=mmap.ACCESS_READ, offset=aligned
                )
            except (OSError, ValueError) as exc:
                if window_start == 0:
                    raise _MapUnavailable from exc
                raise
            # The array keeps the mapping alive for exactly as long as views of it exist.
            window = np.frombuffer(mapping, dtype=entry.dtype, count=count, offset=position - aligned)
            del mapping
            for start in range(0, count, block_elems):
                yield window_start + start, window[start : start + block_elems]
            del window

    def _read_into(self, entry: _Entry, out: np.ndarray) -> None:
        if entry.compressed or self._fd is None:
            with self._zip.open(entry.info) as member:
                _read_npy_header(member, -1)
                _readinto_exact(member, out, entry.info.filename)
            return
        _pread_exact(self._fd, out, entry.data_offset)


@contextlib.contextmanager
def _unreadable_as_value_error() -> Iterator[None]:
    """Damaged archives surface from zipfile/zlib as many exception types; callers get ValueError."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
        raise ValueError(f"unreadable npz archive: {exc}") from exc


class _MapUnavailable(Exception):
    """The file cannot be memory-mapped (e.g. a pipe or special file); read it instead."""


def _read_npy_header(member: IO[bytes], index: int) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                member, max_header_size=_NPY_MAX_HEADER
            )
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                member, max_header_size=_NPY_MAX_HEADER
            )
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise ValueError(f"layer {index}: bad array header: {exc}") from exc
    if dtype.hasobject:
        raise ValueError(f"layer {index} is an object array; refusing to unpickle (allow_pickle=False)")
    # zip members of a seekable archive report their position: the header length
    header_len = member.tell()
    return tuple(int(d) for d in shape), dtype, bool(fortran), header_len


def _readinto_exact(stream: IO[bytes], out: np.ndarray, name: str) -> None:
    view = memoryview(out).cast("B") if out.size else memoryview(b"")
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise ValueError(f"{name}: unexpected end of data")
        filled += n


def _pread_exact(fd: int, out: np.ndarray, offset: int) -> None:
    if not out.size:
        return
    view = memoryview(out).cast("B")
    filled = 0
    while filled < len(view):
        n = os.preadv(fd, [view[filled:]], offset + filled)
        if n <= 0:
            raise ValueError("unexpected end of file")
        filled += n
