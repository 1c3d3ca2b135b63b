"""The deflated-member inflater gives the same layers and the same refusals with isal and with zlib."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fedplane import npzreader
from fedplane.npzreader import ModelFileError, open_layers
from fedplane.tests import hostile_npz as hostile

try:
    from isal import isal_zlib
except ImportError:  # the SDK does not require isal; npzreader then inflates with zlib
    isal_zlib = None

BACKENDS = [
    pytest.param("zlib", id="zlib"),
    pytest.param(
        "isal",
        id="isal",
        marks=pytest.mark.skipif(isal_zlib is None, reason="isal is not installed"),
    ),
]

LAYER = np.random.default_rng(11).integers(-(2**31), 2**31 - 1, 200_000, dtype=np.int32)
DECLARED = hostile.npy_header("'<i4'", LAYER.shape) + LAYER.tobytes()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(npzreader, "_deflate", isal_zlib if request.param == "isal" else zlib)
    return request.param


def raw_deflate(data: bytes, tail: bytes = b"") -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    if not tail:
        return deflate.compress(data) + deflate.flush()
    # Byte-aligned after a sync flush: `tail` is read as the next block header.
    return deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH) + tail


def one_layer_zip(folder: Path, stream: bytes) -> Path:
    path = folder / "update.npz"
    member = ("0.npy", stream, len(DECLARED), zipfile.ZIP_DEFLATED)
    path.write_bytes(hostile.zip_of([member], crc=zlib.crc32(DECLARED)))
    return path


def read_both_ways(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_layers(path) as reader:
        whole = reader[0]
        blocks = np.concatenate([block.copy() for _, block in reader.iter_blocks(0, 4096)])
    return whole, blocks


def test_a_savez_compressed_model_reads_back_exactly(tmp_path: Path, backend: str) -> None:
    rng = np.random.default_rng(12)
    layers = [rng.standard_normal((300, 500)).astype(np.float32), rng.standard_normal(7), LAYER]
    path = tmp_path / "fedn.npz"
    np.savez_compressed(path, **{str(i): layer for i, layer in enumerate(layers)})
    with open_layers(path) as reader:
        assert reader.compressed
        for i, layer in enumerate(layers):
            np.testing.assert_array_equal(reader[i], layer)
            streamed = np.concatenate([block.copy() for _, block in reader.iter_blocks(i, 10_000)])
            np.testing.assert_array_equal(streamed, layer.reshape(-1))


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (raw_deflate(DECLARED)[:-1000], r"^member '0.npy': unexpected end of data \(truncated\)$"),
        (raw_deflate(DECLARED[:-8]), r"^member '0.npy': unexpected end of data \(truncated\)$"),
        (raw_deflate(DECLARED[:-4] + b"\0\0\0\0"), r"^unreadable npz archive: Bad CRC-32 for file '0.npy'$"),
        # Halfway through, a block of the reserved type: the inflater's own library refuses it.
        (
            raw_deflate(DECLARED[: len(DECLARED) // 2], tail=b"\xff" * 64),
            r"^unreadable npz archive: (?!Bad CRC)\S",
        ),
    ],
    ids=["truncated", "short", "bad-crc", "invalid-block"],
)
def test_a_broken_stream_is_refused_as_a_model_file_error(
    tmp_path: Path, backend: str, stream: bytes, message: str
) -> None:
    path = one_layer_zip(tmp_path, stream)
    with open_layers(path) as reader, pytest.raises(ModelFileError, match=message):
        reader[0]
    with open_layers(path) as reader, pytest.raises(ModelFileError, match=message):
        for _ in reader.iter_blocks(0, 4096):
            pass


def test_a_longer_stream_is_read_only_to_its_declared_size(tmp_path: Path, backend: str) -> None:
    whole, blocks = read_both_ways(one_layer_zip(tmp_path, raw_deflate(DECLARED + b"\x07" * 5000)))
    np.testing.assert_array_equal(whole, LAYER)
    np.testing.assert_array_equal(blocks, LAYER)
