"""Lazy, validated reading of ``.npz`` model files, without ever unpickling.

A hand-written zip/npy index, built from headers only, before any array data is read: the zip's
end-of-directory record is bounded (entry count, directory size) before :mod:`zipfile` parses it;
member names must be ``"0".."n-1"`` (with or without ``.npy``, as ``np.savez`` and FEDn write
them); every ``.npy`` header is parsed from the start of its member and must describe a plain
numeric array (object, structured, subarray and string dtypes are refused); and every member's
size in the zip directory must equal what its header declares. A deflate stream is therefore
never inflated past the declared size of its array (:mod:`zipfile` stops at the directory's
size, which was checked). Errors are :class:`ModelFileError` and name the member. The
absolute file offset of each member's data is found from its zip local header. A stored
(uncompressed) layer is read with ``pread`` or streamed in blocks through a sliding read-only
memory mapping; a deflated one (FEDn writes ``savez_compressed``) is inflated from ``pread``
chunks straight into the caller's block, never past its declared size, its CRC checked at the
end. Reading different layers of one archive from different threads is safe.

:func:`open_layers` is the entry point; :mod:`fedplane.numpyhelper` re-exports it.
"""

from __future__ import annotations

import contextlib
import io
import math
import mmap
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, BinaryIO

import numpy as np

try:  # isal inflates and checksums several times faster; the SDK (pip install .) falls back to zlib
    from isal import isal_zlib as _deflate
except ImportError:
    _deflate = zlib

__all__ = ["LOCAL_HEADER", "MAX_LAYERS", "LayerReader", "ModelFileError", "NpzArchive", "open_layers"]

_ZIP_LOCAL_MAGIC = b"PK\x03\x04"
_ZIP_EMPTY_MAGIC = b"PK\x05\x06"
_ZIP64_LOCATOR_MAGIC = b"PK\x06\x07"
_ZIP64_END_MAGIC = b"PK\x06\x06"
LOCAL_HEADER = struct.Struct("<4s5HL2L2H")  # fixed part of a zip local file header (30 bytes)
_END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory (22 bytes)
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
_NPY_MAX_HEADER = 10_000
_MAP_WINDOW_BYTES = 8 << 20
# Compressed bytes handed to zlib per call: small, so that what a call leaves unconsumed (zlib
# copies it) stays small, and a call stopped at a block's end inflates at most a block.
_INFLATE_INPUT_BYTES = 64 << 10
# Bounds on the zip directory, which zipfile reads whole and turns into one object per entry:
# models have at most a few thousand layers, and numpy's directory entries take under 200 bytes.
MAX_LAYERS = 16_384
_MAX_DIRECTORY_ENTRY_BYTES = 512
# What a damaged deflate stream raises: zipfile's reader uses zlib, the member inflater _deflate.
_INFLATE_ERRORS = (zlib.error, _deflate.error)
_NUMERIC_KINDS = "biuf"
_LAYER_NAME = re.compile(r"(0|[1-9][0-9]{0,8})(\.npy)?")


class ModelFileError(ValueError):
    """A model file that is refused before its data is read; the message names the member."""


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
    def names(self) -> list[str]:
        """The zip member name of each layer ("0.npy" as np.savez writes it, or "0")."""
        return [entry.info.filename for entry in self._archive.entries]

    @property
    def nbytes(self) -> list[int]:
        """Each layer's data size as its header declares it."""
        return [entry.nbytes for entry in self._archive.entries]

    @property
    def declared_bytes(self) -> int:
        """Total size of the arrays as their headers declare them (what reading them all allocates)."""
        return sum(entry.nbytes for entry in self._archive.entries)

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
    __slots__ = (
        "compressed",
        "data_offset",
        "dtype",
        "fortran_order",
        "header_len",
        "info",
        "nbytes",
        "shape",
        "size",
        "stream_offset",
    )

    def __init__(
        self, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, header_len: int
    ) -> None:
        self.info = info
        self.header_len = header_len
        self.shape = shape
        self.dtype = dtype
        self.fortran_order = fortran
        self.size = math.prod(shape)  # Python ints: a hostile shape must not wrap around in int64
        self.nbytes = self.size * dtype.itemsize
        self.compressed = info.compress_type != zipfile.ZIP_STORED
        self.data_offset = -1  # absolute file offset of the array data, for stored members
        self.stream_offset = -1  # absolute file offset of the member's bytes as stored (deflated or not)


class NpzArchive:
    """Validated index of an npz file: member names, array headers and data offsets."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        magic = handle.read(4)
        handle.seek(0)
        if magic not in (_ZIP_LOCAL_MAGIC, _ZIP_EMPTY_MAGIC):
            raise ModelFileError("not an npz archive (no zip signature); pickles and .npy files are refused")
        self._file_size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        _check_directory_bounds(handle, self._file_size)
        try:
            self._zip = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ModelFileError(f"not a readable npz archive: {exc}") from exc
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
        infos = _infos_in_layer_order(self._zip.infolist())
        entries = []
        for i, info in enumerate(infos):
            member = f"member {info.filename!r} (layer {i})"
            if info.flag_bits & 0x1:
                raise ModelFileError(f"{member} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ModelFileError(
                    f"{member} uses zip compression method {info.compress_type}; "
                    "only stored and deflated members are read"
                )
            with self._zip.open(info) as stream:
                shape, dtype, fortran, header_len = _read_npy_header(stream, member)
            entry = _Entry(info, shape, dtype, fortran, header_len)
            if info.file_size != header_len + entry.nbytes:
                raise ModelFileError(
                    f"{member}: the header declares shape {shape} {dtype} ({entry.nbytes} bytes of data) "
                    f"but the zip directory says the member holds {info.file_size - header_len} "
                    "(truncated, or trailing bytes)"
                )
            entry.stream_offset = self._member_data_offset(info)
            if not entry.compressed:
                entry.data_offset = entry.stream_offset + header_len
                if entry.data_offset + entry.nbytes > self._file_size:
                    raise ModelFileError(
                        f"{member}: declared shape {shape} dtype {dtype} extends past the end of the file "
                        "(truncated)"
                    )
            elif entry.stream_offset + info.compress_size > self._file_size:
                raise ModelFileError(
                    f"{member}: its {info.compress_size} deflated bytes extend past the end of the file "
                    "(truncated)"
                )
            entries.append(entry)
        return entries

    def _member_data_offset(self, info: zipfile.ZipInfo) -> int:
        self._handle.seek(info.header_offset)
        raw = self._handle.read(LOCAL_HEADER.size)
        if len(raw) != LOCAL_HEADER.size or raw[:4] != _ZIP_LOCAL_MAGIC:
            raise ModelFileError(f"bad zip local header for member {info.filename!r}")
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
        if entry.compressed and self._fd is not None:
            buffer = np.empty(buffer_elems, dtype=entry.dtype)
            with _unreadable_as_value_error():
                inflater = _MemberInflater(self._fd, entry)
                for start in range(0, entry.size, block_elems):
                    block = buffer[: min(block_elems, entry.size - start)]
                    inflater.fill(block)
                    yield start, block
                inflater.finish()
            return
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
        if entry.compressed and self._fd is not None:
            inflater = _MemberInflater(self._fd, entry)  # read_layer turns OSError into ModelFileError
            inflater.fill(out)
            inflater.finish()
            return
        if entry.compressed or self._fd is None:
            with self._zip.open(entry.info) as member:
                _read_npy_header(member, entry.info.filename)
                _readinto_exact(member, out, entry.info.filename)
            return
        _pread_exact(self._fd, out, entry.data_offset)


@contextlib.contextmanager
def _unreadable_as_value_error() -> Iterator[None]:
    """Damaged archives surface from zipfile/zlib as many exception types; callers get ValueError."""
    try:
        yield
    except (zipfile.BadZipFile, *_INFLATE_ERRORS, OSError, EOFError, NotImplementedError) as exc:
        raise ModelFileError(f"unreadable npz archive: {exc}") from exc


class _MemberInflater:
    """Inflates one deflated member from ``pread`` chunks into the caller's arrays, in order.

    Never inflates past the member's declared size (each zlib call is bounded by the room left
    in the array being filled) and never reads past its compressed size; the CRC of everything
    inflated, header included, is checked when the last byte has been produced. Errors are
    :class:`ModelFileError` with the messages zipfile's reader gave for the same damage.
    """

    def __init__(self, fd: int, entry: _Entry) -> None:
        self._fd = fd
        self._name = entry.info.filename
        self._position = entry.stream_offset
        self._end = entry.stream_offset + entry.info.compress_size
        self._left = entry.info.file_size
        self._expected_crc = entry.info.CRC
        self._crc = 0
        self._zlib = _deflate.decompressobj(-_deflate.MAX_WBITS)
        self._input = b""
        self._fill_view(memoryview(bytearray(entry.header_len)))  # the .npy header, parsed when indexed

    def fill(self, out: np.ndarray) -> None:
        """Inflate exactly ``out.nbytes`` more bytes of the member into ``out`` (contiguous)."""
        if out.size:
            self._fill_view(memoryview(out).cast("B"))

    def finish(self) -> None:
        """Everything declared was inflated (a longer stream is read only to its declared size)."""
        if self._left:
            raise ModelFileError(f"member {self._name!r}: {self._left} bytes were never read")

    def _fill_view(self, view: memoryview) -> None:
        size = len(view)
        if size > self._left:
            raise ModelFileError(f"member {self._name!r}: read past its declared size")
        filled = 0
        try:
            while filled < size:
                if not self._input and self._position < self._end:
                    self._input = self._next_input()
                # With all input read, zlib may still hold output an earlier bounded call left
                # pending: an empty input drains it, and only nothing coming back is truncation.
                piece = self._zlib.decompress(self._input, size - filled)
                if not piece and not self._input:
                    raise ModelFileError(f"member {self._name!r}: unexpected end of data (truncated)")
                self._input = self._zlib.unconsumed_tail
                view[filled : filled + len(piece)] = piece
                filled += len(piece)
        except _INFLATE_ERRORS as exc:
            raise ModelFileError(f"unreadable npz archive: {exc}") from exc
        self._crc = _deflate.crc32(view, self._crc)
        self._left -= size
        if not self._left and self._crc != self._expected_crc:
            raise ModelFileError(f"unreadable npz archive: Bad CRC-32 for file {self._name!r}")

    def _next_input(self) -> bytes:
        count = min(_INFLATE_INPUT_BYTES, self._end - self._position)
        if self._zlib.eof or count <= 0:
            raise ModelFileError(f"member {self._name!r}: unexpected end of data (truncated)")
        data = os.pread(self._fd, count, self._position)
        if len(data) != count:
            raise ModelFileError(f"member {self._name!r}: unexpected end of data (truncated)")
        self._position += count
        return data


class _MapUnavailable(Exception):
    """The file cannot be memory-mapped (e.g. a pipe or special file); read it instead."""


def _read_npy_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Parse the ``.npy`` header at the start of a member: only a plain numeric array passes."""
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
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
        raise ModelFileError(f"{name}: not a valid .npy array header: {exc}") from exc
    shape = tuple(int(d) for d in shape)
    declared = f"{name}: declared shape {shape} dtype {dtype}"
    if dtype.hasobject:
        raise ModelFileError(f"{declared}: object arrays hold pickled data, which is refused")
    if dtype.fields is not None:
        raise ModelFileError(f"{declared}: structured dtypes are refused; layers are plain numeric arrays")
    if dtype.subdtype is not None:
        raise ModelFileError(f"{declared}: subarray dtypes are refused; layers are plain numeric arrays")
    if dtype.kind not in _NUMERIC_KINDS:
        raise ModelFileError(f"{declared}: only bool, integer and float arrays are accepted")
    if any(d < 0 for d in shape):
        raise ModelFileError(f"{declared}: negative dimension")
    # zip members of a seekable archive report their position: the header length
    header_len = member.tell()
    return shape, dtype, bool(fortran), header_len


def _infos_in_layer_order(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Members as layers 0..n-1: named ``"i"`` or ``"i.npy"``, each index exactly once."""
    by_index: dict[int, zipfile.ZipInfo] = {}
    for info in infos:
        match = _LAYER_NAME.fullmatch(info.filename)
        if match is None:
            raise ModelFileError(
                f'member {info.filename!r}: model keys must be "0".."{len(infos) - 1}", '
                "as np.savez writes a list of layers"
            )
        index = int(match.group(1))
        if index in by_index:
            raise ModelFileError(
                f"model keys {by_index[index].filename!r} and {info.filename!r} are both layer {index}"
            )
        by_index[index] = info
    missing = sorted(set(range(len(infos))) - set(by_index))
    if missing:
        raise ModelFileError(f'model keys must be "0".."{len(infos) - 1}"; layer {missing[0]} is missing')
    return [by_index[i] for i in range(len(infos))]


def _check_directory_bounds(handle: BinaryIO, file_size: int) -> None:
    """Read the zip's end record and refuse a directory too large to index.

    zipfile reads the whole central directory into memory and builds an object per entry, so its
    declared size and entry count are bounded first: a small file cannot make indexing expensive.
    """
    tail_size = min(file_size, _END_RECORD.size + 0xFFFF)
    handle.seek(file_size - tail_size)
    tail = handle.read(tail_size)
    position = tail.rfind(_ZIP_EMPTY_MAGIC)
    if position < 0 or position + _END_RECORD.size > len(tail):
        raise ModelFileError("not a readable npz archive: no zip end-of-directory record (truncated?)")
    _, _, _, _, entries, directory_size, _, _ = _END_RECORD.unpack_from(tail, position)
    absolute = file_size - tail_size + position
    if absolute >= _ZIP64_LOCATOR.size:
        handle.seek(absolute - _ZIP64_LOCATOR.size)
        magic, _, zip64_offset, _ = _ZIP64_LOCATOR.unpack(handle.read(_ZIP64_LOCATOR.size))
        if magic == _ZIP64_LOCATOR_MAGIC:
            handle.seek(zip64_offset)
            raw = handle.read(_ZIP64_END_RECORD.size)
            if len(raw) != _ZIP64_END_RECORD.size or raw[:4] != _ZIP64_END_MAGIC:
                raise ModelFileError("not a readable npz archive: bad zip64 end-of-directory record")
            fields = _ZIP64_END_RECORD.unpack(raw)
            entries, directory_size = fields[7], fields[8]
    handle.seek(0)
    if entries > MAX_LAYERS:
        raise ModelFileError(f"the npz archive has {entries} members; at most {MAX_LAYERS} layers are read")
    if directory_size > min(file_size, entries * _MAX_DIRECTORY_ENTRY_BYTES):
        raise ModelFileError(
            f"the zip directory declares {directory_size} bytes for {entries} members; refused"
        )


def _readinto_exact(stream: IO[bytes], out: np.ndarray, name: str) -> None:
    view = memoryview(out).cast("B") if out.size else memoryview(b"")
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise ModelFileError(f"member {name!r}: unexpected end of data (truncated)")
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
