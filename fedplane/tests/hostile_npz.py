"""Hostile model files, written byte by byte, for the tests of every path that reads a model.

Each builder returns the bytes of a file; none of them needs the memory it declares.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib

import numpy as np

GIB = 1 << 30
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_ZIP64_MAX = 0xFFFFFFFF


def npy_header(descr: str, shape: tuple[int, ...], fortran: bool = False) -> bytes:
    """A version 1.0 ``.npy`` header, padded to 64 bytes as numpy writes it."""
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    body = text.encode("latin1")
    padding = -(10 + len(body) + 1) % 64
    body += b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def zip_of(members: list[tuple[str, bytes, int, int]], crc: int | None = None) -> bytes:
    """A zip of ``(name, stored bytes, uncompressed size, method)`` members.

    Stored members get their true CRC; deflated ones get ``crc`` (the CRC of what they inflate
    to, or 0 for a bomb: it is only compared once a member is read to its end). Sizes at or over
    4 GiB get zip64 extra fields, as zipfile writes them.
    """
    out = io.BytesIO()
    central = io.BytesIO()
    for name, data, size, method in members:
        member_crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else (crc or 0)
        encoded = name.encode()
        offset = out.tell()
        big = size >= _ZIP64_MAX or len(data) >= _ZIP64_MAX
        extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if big else b""
        sizes = (_ZIP64_MAX, _ZIP64_MAX) if big else (len(data), size)
        out.write(
            _LOCAL.pack(b"PK\x03\x04", 45, 0, method, 0, 0x21, member_crc, *sizes, len(encoded), len(extra))
        )
        out.write(encoded + extra + data)
        central.write(
            _CENTRAL.pack(
                b"PK\x01\x02",
                45,
                45,
                0,
                method,
                0,
                0x21,
                member_crc,
                *sizes,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
        )
        central.write(encoded + extra)
    directory = central.getvalue()
    start = out.tell()
    out.write(directory)
    out.write(_END.pack(b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), start, 0))
    return out.getvalue()


def savez(layers: dict[str, np.ndarray], compressed: bool = False, allow_pickle: bool = False) -> bytes:
    """What ``np.savez`` (or ``savez_compressed``) writes, with pickles only when asked for."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, array in layers.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=allow_pickle)
            archive.writestr(f"{name}.npy", member.getvalue())
    return out.getvalue()


def bomb_by_ratio(declared_bytes: int = 3 * GIB, valid_crc: bool = False) -> bytes:
    """One float32 layer of deflated zeros: about 1 KiB of file per MiB declared (3 GiB in ~3 MB).

    After a full flush deflate output depends on nothing before it, so one compressed MiB of
    zeros is repeated rather than compressing gigabytes. The CRC is only computed when asked
    (it costs a pass over the declared bytes): a check must refuse a bomb before reading it.
    """
    mib = 1 << 20
    assert declared_bytes % mib == 0
    header = npy_header("'<f4'", (declared_bytes // 4,))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    chunk = deflate.compress(bytes(mib)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush()
    stream = head + chunk * (declared_bytes // mib) + tail
    crc = 0
    if valid_crc:
        crc = zlib.crc32(header)
        for _ in range(declared_bytes // mib):
            crc = zlib.crc32(bytes(mib), crc)
    return zip_of([("0.npy", stream, len(header) + declared_bytes, zipfile.ZIP_DEFLATED)], crc=crc)


def bomb_by_shape(elements: int = 10**12, consistent: bool = True) -> bytes:
    """A header declaring ``elements`` float32 values over a few bytes of data.

    ``consistent``: the zip directory agrees with the header (zip64 sizes, a deflated member
    that ends early), so only a limit on the declared size catches it; otherwise the directory
    gives the member's true size.
    """
    header = npy_header("'<f4'", (elements,))
    data = header + bytes(16)
    if not consistent:
        return zip_of([("0.npy", data, len(data), zipfile.ZIP_STORED)])
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = deflate.compress(data) + deflate.flush()
    member = ("0.npy", stream, len(header) + 4 * elements, zipfile.ZIP_DEFLATED)
    return zip_of([member], crc=zlib.crc32(data))


def member_of(header: bytes, payload: bytes, name: str = "0.npy") -> bytes:
    """A stored member whose zip size matches what it holds."""
    data = header + payload
    return zip_of([(name, data, len(data), zipfile.ZIP_STORED)])


def wrong_magic() -> bytes:
    text = b"this member is called 0.npy but it is not an npy file\n" * 4
    return zip_of([("0.npy", text, len(text), zipfile.ZIP_STORED)])


def pickled_member() -> bytes:
    """A real pickle inside an object array, as ``np.save(allow_pickle=True)`` writes one."""
    return savez({"0": np.array([{"reduce": "os.system"}, None], dtype=object)}, allow_pickle=True)


def object_dtype_header() -> bytes:
    return member_of(npy_header("'|O'", (2,)), pickle.dumps([1, 2]))


def structured() -> bytes:
    return savez({"0": np.zeros(3, dtype=[("w", "<f4"), ("b", "<i4")])})


def subarray() -> bytes:
    return member_of(npy_header("('<f4', (1000,))", (4,)), bytes(16000))


def strings() -> bytes:
    return savez({"0": np.array(["a", "b"])})


def empty_archive() -> bytes:
    out = io.BytesIO()
    np.savez(out)
    return out.getvalue()


def truncated(cut: float = 0.5) -> bytes:
    whole = savez({"0": np.arange(256, dtype=np.float32), "1": np.ones(64)})
    return whole[: int(len(whole) * cut)]


def with_value(value: float, layers: int = 2) -> bytes:
    arrays = {str(i): np.zeros(32, dtype=np.float32) for i in range(layers)}
    arrays[str(layers - 1)][7] = value
    return savez(arrays)
