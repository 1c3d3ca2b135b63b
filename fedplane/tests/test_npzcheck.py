"""Model files are checked header first: each hostile file is refused, saying which member and why."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fedplane.aggregators import weighted_average_files
from fedplane.npzcheck import ModelFileError, SizeLimits, check_model_file
from fedplane.npzreader import MAX_LAYERS
from fedplane.numpyhelper import load
from fedplane.tests import hostile_npz as hostile

ROOT = Path(__file__).resolve().parents[2]
LIMITS = SizeLimits()


def write(tmp_path: Path, content: bytes, name: str = "model.npz") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def refused(tmp_path: Path, content: bytes, limits: SizeLimits = LIMITS) -> str:
    with pytest.raises(ModelFileError) as error:
        check_model_file(write(tmp_path, content), limits=limits)
    return str(error.value)


# ---------------------------------------------------------------- honest files pass


def test_fedn_and_fedplane_files_pass(tmp_path: Path) -> None:
    layers = {"0": np.ones((3, 2), dtype=np.float32), "1": np.arange(4)}
    for compressed in (False, True):
        summary = check_model_file(write(tmp_path, hostile.savez(layers, compressed)), limits=LIMITS)
        assert summary.shapes == ((3, 2), (4,))
        assert [d.kind for d in summary.dtypes] == ["f", "i"]
    # FEDn 0.9.5's numpyhelper: np.savez_compressed(path, **{"0": w0, ...})
    path = tmp_path / "fedn.npz"
    np.savez_compressed(path, **layers)
    assert check_model_file(path, limits=LIMITS).layers == 2


def test_members_named_without_npy_suffix_pass(tmp_path: Path) -> None:
    data = hostile.npy_header("'<f8'", (2,)) + np.array([1.0, 2.0]).tobytes()
    path = write(tmp_path, hostile.zip_of([("0", data, len(data), zipfile.ZIP_STORED)]))
    assert check_model_file(path, limits=LIMITS).shapes == ((2,),)
    np.testing.assert_array_equal(load(path)[0], [1.0, 2.0])


def test_zero_d_layers_are_accepted_and_averaged(tmp_path: Path) -> None:
    """0-d layers are legitimate (PyTorch's num_batches_tracked) and FEDn round-trips them."""
    paths = []
    for i, value in enumerate((2.0, 4.0)):
        path = write(tmp_path, hostile.savez({"0": np.float32(value), "1": np.full(3, value)}), f"m{i}.npz")
        assert check_model_file(path, limits=LIMITS).shapes == ((), (3,))
        paths.append((path, 1))
    out = tmp_path / "mean.npz"
    weighted_average_files(paths, out)
    mean = load(out)
    assert mean[0].shape == () and float(mean[0]) == 3.0
    np.testing.assert_allclose(mean[1], 3.0)


def test_a_seed_of_zeros_passes_up_to_the_floor(tmp_path: Path) -> None:
    """Zeros compress ~1000x: a legitimate seed, admitted by the floor, not by the ratio."""
    content = hostile.bomb_by_ratio(64 << 20, valid_crc=True)
    assert len(content) < (1 << 20)
    summary = check_model_file(write(tmp_path, content), limits=LIMITS)
    assert summary.declared_bytes == 64 << 20


# ---------------------------------------------------------------- hostile files are refused


def test_bomb_by_declared_shape_is_refused_by_the_size_limit(tmp_path: Path) -> None:
    message = refused(tmp_path, hostile.bomb_by_shape(10**12))
    assert "over the limit" in message
    assert "'0.npy'" in message and "(1000000000000,)" in message and "float32" in message


def test_bomb_by_declared_shape_is_refused_when_the_zip_directory_disagrees(tmp_path: Path) -> None:
    message = refused(tmp_path, hostile.bomb_by_shape(10**12, consistent=False))
    assert "'0.npy'" in message and "(1000000000000,)" in message and "zip directory" in message


def test_a_shape_overflowing_int64_does_not_wrap_around(tmp_path: Path) -> None:
    header = hostile.npy_header("'<f4'", (2**32, 2**32))  # int64 product wraps to 0
    message = refused(tmp_path, hostile.member_of(header, b""))
    assert "(4294967296, 4294967296)" in message


def test_bomb_by_compression_ratio_is_refused(tmp_path: Path) -> None:
    content = hostile.bomb_by_ratio(3 * hostile.GIB)
    assert len(content) < 4 << 20
    message = refused(tmp_path, content)
    assert "over the limit" in message and "'0.npy'" in message and "(805306368,)" in message


def test_the_expansion_limit_follows_the_file_size(tmp_path: Path) -> None:
    content = hostile.bomb_by_ratio(64 << 20, valid_crc=True)
    tight = SizeLimits(max_expansion=8, floor_bytes=1 << 20, max_bytes=1 << 30)
    assert "over the limit" in refused(tmp_path, content, tight)
    capped = SizeLimits(max_expansion=1000, floor_bytes=1 << 30, max_bytes=32 << 20)
    assert "at most 33554432" in refused(tmp_path, content, capped)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (hostile.wrong_magic, "not a valid .npy array header"),
        (hostile.pickled_member, "object arrays hold pickled data"),
        (hostile.object_dtype_header, "object arrays hold pickled data"),
        (hostile.structured, "structured dtypes are refused"),
        (hostile.subarray, "subarray dtypes are refused"),
        (hostile.strings, "only bool, integer and float arrays"),
        (hostile.empty_archive, "empty"),
        (lambda: b"not a zip at all", "not an npz archive"),
        (lambda: b"\x80\x04\x95" + b"\x00" * 64, "not an npz archive"),
        (lambda: hostile.truncated(0.5), "not a readable npz archive"),
        (lambda: hostile.truncated(0.97), "not a readable npz archive"),
        (lambda: hostile.savez({"arr_0": np.ones(2)}), "model keys must be"),
        (lambda: hostile.savez({"0": np.ones(2), "2": np.ones(2)}), "layer 1 is missing"),
        (lambda: hostile.member_of(hostile.npy_header("'<f4'", (-4,)), b""), "negative dimension"),
        (lambda: hostile.with_value(np.nan), "non-finite"),
        (lambda: hostile.with_value(np.inf), "non-finite"),
        (lambda: hostile.with_value(-np.inf), "non-finite"),
    ],
    ids=[
        "wrong-magic",
        "pickled-member",
        "object-dtype",
        "structured-dtype",
        "subarray-dtype",
        "string-dtype",
        "empty-archive",
        "not-a-zip",
        "a-pickle",
        "truncated-half",
        "truncated-tail",
        "savez-positional-names",
        "missing-layer",
        "negative-dimension",
        "nan",
        "inf",
        "minus-inf",
    ],
)
def test_hostile_file_is_refused_with_the_reason(tmp_path: Path, build, expected: str) -> None:
    assert expected in refused(tmp_path, build())


def test_refusals_name_the_member_and_its_declared_shape(tmp_path: Path) -> None:
    message = refused(tmp_path, hostile.structured())
    assert "'0.npy'" in message and "declared shape (3,)" in message
    message = refused(tmp_path, hostile.with_value(np.nan))
    assert "layer 1 (member '1.npy')" in message and "flat index 7" in message


def test_values_are_only_checked_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, hostile.with_value(np.nan))
    assert check_model_file(path, limits=LIMITS, finite=False).layers == 2


def test_duplicate_layer_names_are_refused(tmp_path: Path) -> None:
    data = hostile.npy_header("'<f8'", (1,)) + bytes(8)
    members = [(name, data, len(data), zipfile.ZIP_STORED) for name in ("0", "0.npy")]
    assert "both layer 0" in refused(tmp_path, hostile.zip_of(members))


def test_compression_methods_other_than_deflate_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bz2.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("0.npy", hostile.npy_header("'<f8'", (1,)) + bytes(8))
    with pytest.raises(ModelFileError, match="compression method 12"):
        check_model_file(path, limits=LIMITS)


def test_a_zip_directory_of_too_many_members_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    data = hostile.npy_header("'<f8'", (1,)) + bytes(8)
    members = [(str(i), data, len(data), zipfile.ZIP_STORED) for i in range(MAX_LAYERS + 1)]
    message = refused(tmp_path, hostile.zip_of(members))
    assert f"at most {MAX_LAYERS} layers" in message


# ---------------------------------------------------------------- memory while checking


def test_checking_a_bomb_allocates_no_more_than_checking_a_small_model(tmp_path: Path) -> None:
    """Python and numpy allocations (tracemalloc sees both) while each file is checked."""
    bomb = write(tmp_path, hostile.bomb_by_ratio(3 * hostile.GIB), "bomb.npz")
    small = write(tmp_path, hostile.savez({"0": np.ones((64, 64), dtype=np.float32)}), "small.npz")
    peaks = {}
    for name, path in (("small", small), ("bomb", bomb)):
        tracemalloc.start()
        try:
            try:
                check_model_file(path, limits=LIMITS)
            except ModelFileError:
                assert name == "bomb"
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks["bomb"] < 4 << 20, peaks
    assert peaks["bomb"] < peaks["small"] + (1 << 20), peaks


_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from fedplane.npzcheck import ModelFileError, SizeLimits, check_model_file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        check_model_file(sys.argv[1], limits=SizeLimits())
        outcome = "accepted"
    except ModelFileError as exc:
        outcome = str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "outcome": outcome}))
    """
)


def peak_growth(path: Path) -> dict:
    """Peak resident memory growth (KiB, Linux ru_maxrss) of a fresh process checking ``path``."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "build", [hostile.bomb_by_ratio, hostile.bomb_by_shape], ids=["by-compression-ratio", "by-declared-shape"]
)
def test_peak_memory_of_a_process_checking_a_bomb_stays_bounded(tmp_path: Path, build) -> None:
    bomb = peak_growth(write(tmp_path, build(), "bomb.npz"))
    baseline = peak_growth(
        write(tmp_path, hostile.savez({"0": np.ones(1024, dtype=np.float32)}), "small.npz")
    )
    assert baseline["outcome"] == "accepted"
    assert "over the limit" in bomb["outcome"]
    # The bomb declares gigabytes; checking it grows the process as little as a 4 KiB model does.
    assert bomb["growth_kib"] < 64 * 1024, bomb
    assert bomb["growth_kib"] < baseline["growth_kib"] + 16 * 1024, (bomb, baseline)


def test_a_deflate_stream_longer_than_declared_is_read_only_to_the_declared_size(tmp_path: Path) -> None:
    """The member inflates to 256 MiB; header and zip directory say 4 KiB: reading stops there."""
    header = hostile.npy_header("'<f4'", (1024,))
    declared = header + np.full(1024, 0.5, dtype=np.float32).tobytes()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = deflate.compress(declared) + deflate.flush(zlib.Z_FULL_FLUSH)
    chunk = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream += chunk * 256 + deflate.flush()
    member = ("0.npy", stream, len(declared), zipfile.ZIP_DEFLATED)
    path = write(tmp_path, hostile.zip_of([member], crc=zlib.crc32(declared)))
    tracemalloc.start()
    try:
        summary = check_model_file(path, limits=LIMITS)
        layers = load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.declared_bytes == 4096
    np.testing.assert_array_equal(layers[0], 0.5)
    assert peak < 2 << 20, peak
