"""FEDn clients' deflated updates: checked and folded in one pass, all or nothing."""

from __future__ import annotations

import itertools
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fedplane import numpyhelper
from fedplane.aggregators import InvalidUpdate, create_aggregator
from fedplane.aggregators.base import BLOCK_ELEMS, ModelSpec
from fedplane.aggregators.fedavg import WeightedSum
from fedplane.npzreader import ModelFileError, open_layers
from fedplane.tests import hostile_npz as hostile

# Layers of several blocks (one ending on a partial block), a small one, float64 and integers.
SHAPES = [(3 * BLOCK_ELEMS + 123,), (5, 7), (2 * BLOCK_ELEMS,), (300, 40)]
DTYPES = [np.float32, np.float32, np.float64, np.int32]
_ids = itertools.count()


def model(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        (rng.standard_normal(shape) * 100).astype(dtype) for shape, dtype in zip(SHAPES, DTYPES, strict=True)
    ]


def plain(folder: Path, layers: list[np.ndarray]) -> Path:
    path = folder / f"plain{next(_ids)}.npz"
    numpyhelper.save(layers, path)
    return path


def deflated(folder: Path, layers: list[np.ndarray]) -> Path:
    """What a FEDn 0.9.5 client uploads."""
    path = folder / f"fedn{next(_ids)}.npz"
    np.savez_compressed(path, **{str(i): layer for i, layer in enumerate(layers)})
    return path


def aggregate(folder: Path, global_model: list[np.ndarray], paths: list[Path], weights: list[int]) -> list:
    aggregator = create_aggregator("fedavg", None, folder / f"work{next(_ids)}")
    aggregator.start_round(plain(folder, global_model))
    for path, weight in zip(paths, weights, strict=True):
        aggregator.add(path, weight)
    out = folder / f"out{next(_ids)}.npz"
    aggregator.finish(out)
    return numpyhelper.load(out)


def assert_same_model(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_a_deflated_update_folds_to_the_same_result_as_the_stored_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    global_model = model(rng)
    updates = [model(rng) for _ in range(4)]
    weights = [3, 17, 1, 250]
    stored = aggregate(tmp_path, global_model, [plain(tmp_path, u) for u in updates], weights)
    fedn = aggregate(tmp_path, global_model, [deflated(tmp_path, u) for u in updates], weights)
    mixed_paths = [(plain if k % 2 else deflated)(tmp_path, u) for k, u in enumerate(updates)]
    mixed = aggregate(tmp_path, global_model, mixed_paths, weights)
    assert_same_model(fedn, stored)
    assert_same_model(mixed, stored)
    want = np.average(np.stack([u[0] for u in updates]).astype(np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(stored[0], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_non_finite_value_in_the_last_block_of_a_deflated_layer_leaves_the_sums_untouched(
    tmp_path: Path, threads: int
) -> None:
    rng = np.random.default_rng(2)
    global_model, first, second = model(rng), model(rng), model(rng)
    with open_layers(plain(tmp_path, global_model)) as reader:
        sums = WeightedSum(ModelSpec.of(reader))
    with open_layers(deflated(tmp_path, first)) as reader:
        sums.fold_checked(reader, 5.0, threads=threads)
    before = [layer.copy() for layer in sums.layers]
    poisoned = [layer.copy() for layer in second]
    poisoned[2][-1] = np.inf  # the last block of a layer read after the others were folded
    with (
        open_layers(deflated(tmp_path, poisoned)) as reader,
        pytest.raises(InvalidUpdate, match=r"layer 2 \(member '2.npy'\) has non-finite values"),
    ):
        sums.fold_checked(reader, 7.0, threads=threads)
    assert_same_model(sums.layers, before)
    assert sums.total_weight == 5.0
    with open_layers(deflated(tmp_path, second)) as reader:  # and the sums go on as if nothing came
        sums.fold_checked(reader, 7.0, threads=threads)
    with open_layers(plain(tmp_path, first)) as a, open_layers(plain(tmp_path, second)) as b:
        reference = WeightedSum(sums.spec)
        reference.fold(a, 5.0)
        reference.fold(b, 7.0)
    assert_same_model(sums.layers, reference.layers)


def test_a_refused_deflated_update_leaves_the_round_as_if_it_never_arrived(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    global_model, first, second = model(rng), model(rng), model(rng)
    poisoned = [layer.copy() for layer in second]
    poisoned[0][-1] = np.nan
    aggregator = create_aggregator("fedavg", None, tmp_path / "work")
    aggregator.start_round(plain(tmp_path, global_model))
    aggregator.add(deflated(tmp_path, first), 4)
    with pytest.raises(
        InvalidUpdate, match=r"layer 0 \(member '0.npy'\) has non-finite values .* index 196730"
    ):
        aggregator.add(deflated(tmp_path, poisoned), 9)
    assert aggregator.count == 1
    aggregator.add(deflated(tmp_path, second), 9)
    out = tmp_path / "out.npz"
    aggregator.finish(out)
    assert_same_model(
        numpyhelper.load(out),
        aggregate(tmp_path, global_model, [plain(tmp_path, first), plain(tmp_path, second)], [4, 9]),
    )
    assert not list((tmp_path / "work").iterdir())  # nothing is written to disk on the way


def test_the_refusal_reported_is_the_first_in_layer_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    global_model, update = model(rng), model(rng)
    update[0][-5] = np.nan  # the largest layer, read first, finds its problem last
    update[1][0, 0] = np.inf
    update[2][0] = np.nan
    with open_layers(plain(tmp_path, global_model)) as reader:
        sums = WeightedSum(ModelSpec.of(reader))
    for threads in (1, 2, 4):
        with open_layers(deflated(tmp_path, update)) as reader, pytest.raises(InvalidUpdate) as refused:
            sums.fold_checked(reader, 1.0, threads=threads)
        assert str(refused.value).startswith("layer 0 (member '0.npy')"), refused.value
        assert f"flat index {SHAPES[0][0] - 5}" in str(refused.value)


def one_layer_zip(tmp_path: Path, stream: bytes, declared: bytes, crc: int | None = None) -> Path:
    member = ("0.npy", stream, len(declared), zipfile.ZIP_DEFLATED)
    path = tmp_path / f"hostile{next(_ids)}.npz"
    path.write_bytes(hostile.zip_of([member], crc=zlib.crc32(declared) if crc is None else crc))
    return path


def raw_deflate(data: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflate.compress(data) + deflate.flush()


# Integers: whatever a damaged stream inflates to is a number, so only the stream can be refused.
LAYER = np.random.default_rng(5).integers(-(2**31), 2**31 - 1, 3 * BLOCK_ELEMS, dtype=np.int32)
DECLARED = hostile.npy_header("'<i4'", LAYER.shape) + LAYER.tobytes()


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        (
            "truncated stream",
            lambda: raw_deflate(DECLARED)[: len(raw_deflate(DECLARED)) * 2 // 3],
            r"member '0.npy': unexpected end of data \(truncated\)",
        ),
        (
            "stream of the wrong data",
            lambda: raw_deflate(DECLARED[:-4] + b"\0\0\0\0"),
            "Bad CRC-32 for file '0.npy'",
        ),
        (
            "damaged stream",
            lambda: (lambda s: s[:5000] + bytes(200) + s[5200:])(raw_deflate(DECLARED)),
            r"unreadable npz archive: (Error -3 while decompressing|Bad CRC-32)",
        ),
    ],
)
def test_a_broken_deflate_stream_is_refused_and_leaves_the_round_as_it_was(
    tmp_path: Path, name: str, build, message: str
) -> None:
    global_model = [np.zeros_like(LAYER)]
    good = np.full_like(LAYER, 2)
    aggregator = create_aggregator("fedavg", None, tmp_path / "work")
    aggregator.start_round(plain(tmp_path, global_model))
    aggregator.add(deflated(tmp_path, [good]), 1)
    with pytest.raises(InvalidUpdate, match="update could not be read: .*" + message):
        aggregator.add(one_layer_zip(tmp_path, build(), DECLARED), 1)
    assert aggregator.count == 1
    out = tmp_path / "out.npz"
    aggregator.finish(out)
    np.testing.assert_array_equal(numpyhelper.load(out)[0], good)


def test_deflated_bytes_said_to_run_past_the_end_of_the_file_are_refused_when_indexed(tmp_path: Path) -> None:
    path = one_layer_zip(tmp_path, raw_deflate(DECLARED), DECLARED)
    data = bytearray(path.read_bytes())
    # Central directory entry: compressed size at offset 20 from its signature.
    central = data.rindex(b"PK\x01\x02")
    compressed = int.from_bytes(data[central + 20 : central + 24], "little")
    data[central + 20 : central + 24] = (compressed + len(data)).to_bytes(4, "little")
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="extend past the end of the file"):
        open_layers(path)
