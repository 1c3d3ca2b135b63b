"""numpyhelper: FEDn-compatible npz files, lazy reading, refusal of bad files, layer-list ops."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedplane import npzreader, numpyhelper

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

layer_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)
models = st.lists(layer_arrays, min_size=0, max_size=5)


def assert_same_model(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@FAST
@given(model=models, compressed=st.booleans())
def test_plain_and_compressed_files_load_back_identically(tmp_path: Path, model, compressed: bool) -> None:
    path = tmp_path / "m.npz"
    if compressed:  # what FEDn 0.9.5 clients write
        np.savez_compressed(path, **{str(i): a for i, a in enumerate(model)})
    else:
        numpyhelper.save(model, path)
    assert_same_model(numpyhelper.load(path), model)
    assert numpyhelper.layer_shapes(path) == [a.shape for a in model]
    with numpyhelper.open_layers(path) as reader:
        assert len(reader) == len(model)
        for i, layer in enumerate(model):
            np.testing.assert_array_equal(reader[i], layer)
            flat = np.concatenate([block.copy() for _, block in reader.iter_blocks(i, 4)] or [np.empty(0)])
            np.testing.assert_array_equal(flat, np.ravel(layer, order="C").astype(flat.dtype))


def test_save_writes_plain_npz_at_exactly_the_given_path(tmp_path: Path) -> None:
    path = tmp_path / "model"  # no suffix: np.savez would append ".npz", we must not
    numpyhelper.save([np.arange(3)], path)
    assert path.exists() and not (tmp_path / "model.npz").exists()
    with zipfile.ZipFile(path) as archive:
        assert [i.compress_type for i in archive.infolist()] == [zipfile.ZIP_STORED]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind


def test_save_and_load_file_objects() -> None:
    buffer = io.BytesIO()
    numpyhelper.save([np.ones((2, 2)), np.arange(4, dtype=np.int32)], buffer)
    buffer.seek(0)
    got = numpyhelper.load(buffer)
    np.testing.assert_array_equal(got[1], np.arange(4, dtype=np.int32))


def test_fortran_order_layers_stream_in_c_order(tmp_path: Path) -> None:
    layer = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    numpyhelper.save([layer], tmp_path / "f.npz")
    with numpyhelper.open_layers(tmp_path / "f.npz") as reader:
        flat = np.concatenate([b.copy() for _, b in reader.iter_blocks(0, 5)])
    np.testing.assert_array_equal(flat, np.arange(12.0))


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, **{"0": np.array([{"a": 1}], dtype=object)}, allow_pickle=True)
    with pytest.raises(ValueError, match="object array"):
        numpyhelper.load(path)
    with pytest.raises(ValueError, match="object arrays"):
        numpyhelper.save([np.array([{}], dtype=object)], tmp_path / "x.npz")


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps([np.arange(3)]),  # a pickle, as np.load(allow_pickle=True) would accept
        b"garbage" * 20,
        b"",
        b"PK\x03\x04 truncated zip",
    ],
)
def test_non_npz_bytes_are_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(payload)
    with pytest.raises(ValueError):
        numpyhelper.load(path)


def test_a_single_npy_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.arange(3))
    with pytest.raises(ValueError, match="not an npz"):
        numpyhelper.load(path)


@pytest.mark.parametrize(
    "members",
    [{"a": np.arange(2)}, {"0": np.arange(2), "2": np.arange(2)}, {"1": np.arange(2)}, {"00": np.arange(1)}],
)
def test_keys_must_be_exactly_zero_to_n_minus_one(tmp_path: Path, members: dict) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, **members)
    with pytest.raises(ValueError, match="keys"):
        numpyhelper.load(path)


def test_truncated_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as archive:
        full = io.BytesIO()
        np.save(full, np.arange(100, dtype=np.float64))
        archive.writestr("0.npy", full.getvalue()[:-16])
    with pytest.raises(ValueError, match="truncated"):
        numpyhelper.load(path)


def test_sha256_of(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert numpyhelper.sha256_of(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


# ------------------------------------------------------------------ operations


def test_increment_average_as_in_fedn() -> None:
    got = numpyhelper.increment_average([np.array([1, 2, 3])], [np.array([4, 5, 6])], 10, 20)
    np.testing.assert_array_equal(got, [np.array([2.5, 3.5, 4.5])])
    flat = numpyhelper.increment_average(np.array([1, 2, 3]), np.array([4, 5, 6]), 10, 20)
    np.testing.assert_array_equal(flat, [2.5, 3.5, 4.5])
    with pytest.raises(TypeError):
        numpyhelper.increment_average([[1, 2, 3]], [[4, 5, 6]], 10, 20)
    with pytest.raises(TypeError):
        numpyhelper.increment_average([1, 2, 3], [4, 5, 6], 10, 20)


same_shape_pairs = hnp.array_shapes(min_dims=1, max_dims=2, max_side=4).flatmap(
    lambda shape: st.tuples(
        *[
            hnp.arrays(
                np.float64, shape, elements=st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
            )
            for _ in range(2)
        ]
    )
)


@FAST
@given(pair=same_shape_pairs, a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_ops_match_numpy(pair, a: float, b: float) -> None:
    x, y = pair
    m1, m2 = [x, x[:1]], [y, y[:1]]
    np.testing.assert_allclose(numpyhelper.add(m1, m2, a, b)[0], a * x + b * y)
    np.testing.assert_allclose(numpyhelper.subtract(m1, m2, a, b)[0], a * x - b * y)
    np.testing.assert_allclose(numpyhelper.multiply(m1, m2)[1], x[:1] * y[:1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.testing.assert_allclose(numpyhelper.divide(m1, m2)[0], x / y)
    np.testing.assert_allclose(numpyhelper.sqrt([np.abs(x)])[0], np.sqrt(np.abs(x)))
    np.testing.assert_allclose(numpyhelper.power(m1, 2)[0], x**2)
    np.testing.assert_array_equal(numpyhelper.sign(m1)[0], np.sign(x))
    assert numpyhelper.norm(m1) == pytest.approx(np.abs(x).sum() + np.abs(x[:1]).sum())
    filled = numpyhelper.ones(m1, a)
    assert filled[0].shape == x.shape and np.all(filled[0] == a)
    np.testing.assert_allclose(numpyhelper.increment_average(m1, m2, 3, 4)[0], x + 3 * (y - x) / 4)


def test_ops_refuse_mismatched_layer_counts_and_non_arrays() -> None:
    with pytest.raises(ValueError, match="layer counts"):
        numpyhelper.add([np.ones(2)], [np.ones(2), np.ones(2)])
    with pytest.raises(TypeError):
        numpyhelper.sqrt([[1.0, 4.0]])
    with pytest.raises(TypeError):
        numpyhelper.norm(3.0)


def test_saved_layers_are_aligned_and_readable_by_plain_numpy(tmp_path: Path) -> None:
    model = [np.arange(n, dtype=np.float32) for n in (1, 7, 1000)] + [np.ones((3, 3), np.int16)]
    path = tmp_path / "aligned.npz"
    numpyhelper.save(model, path)
    with numpyhelper.open_layers(path) as reader:
        assert [entry.data_offset % 64 for entry in reader._archive.entries] == [0] * len(model)
    with np.load(path, allow_pickle=False) as plain:  # what a FEDn 0.9.5 client does
        assert_same_model([plain[str(i)] for i in range(len(model))], model)


def test_blocks_are_read_without_mmap_when_mapping_is_unavailable(tmp_path: Path, monkeypatch) -> None:
    layer = np.arange(1000, dtype=np.float64)
    numpyhelper.save([layer], tmp_path / "m.npz")

    def refuse(*args, **kwargs):
        raise OSError("mmap not supported here")

    monkeypatch.setattr(npzreader.mmap, "mmap", refuse)
    with numpyhelper.open_layers(tmp_path / "m.npz") as reader:
        blocks = [block.copy() for _, block in reader.iter_blocks(0, 300)]
    np.testing.assert_array_equal(np.concatenate(blocks), layer)


def test_a_member_pointing_past_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    numpyhelper.save([np.arange(4096, dtype=np.float64)], path)
    data = bytearray(path.read_bytes())
    # Cut bytes out of the array data but keep the central directory: the index must notice.
    path.write_bytes(data[:1000] + data[9000:])
    with pytest.raises(ValueError):
        numpyhelper.load(path)


@pytest.mark.parametrize(("shape", "dtype"), [((5,), np.int32), ((16,), np.float32), ((2, 3), np.int32)])
def test_small_blocks_of_a_compressed_layer_drain_what_zlib_holds_back(tmp_path: Path, shape, dtype) -> None:
    # All compressed input is read before the last blocks are inflated: zlib still holds their bytes.
    layer = (np.arange(int(np.prod(shape))) % 3).astype(dtype).reshape(shape)
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **{"0": layer})
    with numpyhelper.open_layers(path) as reader:
        flat = np.concatenate([block.copy() for _, block in reader.iter_blocks(0, 4)])
    np.testing.assert_array_equal(flat, layer.ravel())
