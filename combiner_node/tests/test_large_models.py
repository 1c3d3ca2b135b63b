"""Model size limits and streaming on the combiner: an update is bounded by the round's global
model and by the free disk, not by a constant, and a large model moves in bounded memory."""

from __future__ import annotations

import hashlib
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from combiner_node import modelfiles
from combiner_node.cli import build_parser, settings_from_args
from combiner_node.modelfiles import GIB, MIB, ModelFiles, UploadLimits
from combiner_node.node import CombinerNode
from combiner_node.store import DirectoryStore
from combiner_node.tests.conftest import TestClient, control_stub, start_request
from fedplane.client.transfer import download_model, upload_model
from fedplane.proto import fedn_pb2

MARGIN = 64 * 1024


def write_float32_npz(path: Path, nbytes: int, *, seed: int = 0) -> None:
    """A one-layer float32 model of about `nbytes`, written block by block (never whole in memory)."""
    count = nbytes // 4
    block = np.random.default_rng(seed).standard_normal(1 << 20, dtype=np.float32)
    header = {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("0.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        remaining = count
        while remaining:
            part = block[: min(remaining, block.size)]
            member.write(part.data)
            remaining -= part.size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def put_global_model(store: DirectoryStore, path: Path) -> str:
    model_id = str(uuid.uuid4())
    with path.open("rb") as source:
        store.write(f"models/{model_id}.npz", source)
    return model_id


def start_training(node: CombinerNode, client: TestClient, model_id: str) -> fedn_pb2.TaskRequest:
    """Start a training round on `model_id` and wait until `client` holds its task."""
    channel, control = control_stub(node.port)
    with channel:
        control.Start(
            start_request(model_id=model_id, round_id="1", task="training", round_timeout=120), timeout=10
        )
    return client.next_task()


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# The bound itself ------------------------------------------------------------------------------


def test_an_update_over_the_old_two_gib_limit_is_allowed_against_a_large_global_model():
    limits = UploadLimits()  # the defaults: factor 2, a 16 MiB margin, no fixed cap
    limit, reason = limits.bound(int(1.5 * GIB))
    assert limit == 3 * GIB + 16 * MIB
    assert limit > int(2.5e9) > 2 * GIB
    assert "2 x the round's" in reason
    # A small model keeps its updates small; a fixed cap wins when it is the lower bound.
    assert limits.bound(MIB)[0] == 2 * MIB + 16 * MIB
    capped = UploadLimits(max_bytes=GIB)
    assert capped.bound(int(1.5 * GIB)) == (GIB, "the combiner's maximum upload size")
    assert capped.bound(None) == (GIB, "the combiner's maximum upload size")
    assert UploadLimits().bound(None)[0] is None  # only the disk bounds it then


@pytest.mark.parametrize(
    "kwargs", [{"factor": 0}, {"margin_bytes": -1}, {"max_bytes": 0}, {"disk_reserve_bytes": -1}]
)
def test_nonsense_limits_are_refused_at_start(kwargs):
    with pytest.raises(ValueError):
        UploadLimits(**kwargs)


def test_a_staged_model_is_sized_by_what_its_arrays_declare_when_that_is_larger(tmp_path):
    files = ModelFiles(tmp_path / "work")
    zeros = tmp_path / "zeros.npz"
    np.savez_compressed(zeros, **{"0": np.zeros(MIB // 4, dtype=np.float32)})
    assert zeros.stat().st_size < 10_000  # compressed a hundredfold
    with zeros.open("rb") as source:
        files.stage("zeros", source)
    assert files.staged_size("zeros") == MIB
    not_a_model = tmp_path / "junk.npz"
    not_a_model.write_bytes(b"x" * 5000)
    with not_a_model.open("rb") as source:
        files.stage("junk", source)
    assert files.staged_size("junk") == 5000


def test_the_limits_come_from_flags_or_the_environment(tmp_path):
    environ = {"FEDPLANE_COMBINER_NAME": "c1", "FEDPLANE_COMBINER_UPDATE_SIZE_FACTOR": "3"}
    args = build_parser(environ).parse_args(
        ["--store", str(tmp_path), "--max-upload-bytes", "5G", "--disk-reserve", "512M"]
    )
    settings = settings_from_args(args, environ)
    assert settings.update_size_factor == 3.0
    assert settings.update_size_margin == 16 * MIB
    assert settings.max_upload_bytes == 5 * GIB
    assert settings.disk_reserve_bytes == 512 * MIB
    defaults = build_parser({"FEDPLANE_COMBINER_NAME": "c1"}).parse_args([])
    assert (defaults.update_size_factor, defaults.max_upload_bytes, defaults.disk_reserve) == (2.0, None, GIB)
    with pytest.raises(SystemExit):
        build_parser(environ).parse_args(["--max-upload-bytes", "lots"])


# Through the combiner's ModelService ------------------------------------------------------------


@pytest.fixture
def small_limits_node(make_node: Callable[..., CombinerNode]) -> CombinerNode:
    return make_node(update_size_factor=2.0, update_size_margin=MARGIN)


@pytest.mark.parametrize("chunk", [MIB, 100_000])
def test_an_update_over_twice_the_global_model_is_refused_and_one_under_it_kept(
    small_limits_node, make_client, store, tmp_path, chunk
):
    node = small_limits_node
    global_path = tmp_path / "global.npz"
    write_float32_npz(global_path, 1_000_000)
    client = make_client("trainer", port=node.port)
    start_training(node, client, put_global_model(store, global_path))
    model_bytes = global_path.stat().st_size

    with pytest.raises(grpc.RpcError) as too_big:
        client.upload_bytes("update-big", b"u" * 2_500_000, chunk=chunk)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = too_big.value.details()
    assert f"upload limit of {2 * model_bytes + MARGIN} bytes" in details
    assert f"2 x the round's {model_bytes}-byte global model" in details
    assert files_in(node.files.updates_dir) == []  # nothing kept, not even a partial file

    payload = bytes(range(256)) * 5860  # about 1.5 MB
    response = client.upload_bytes("update-ok", payload, chunk=chunk)
    assert response.status == fedn_pb2.OK
    assert node.files.update_path("update-ok").read_bytes() == payload


def test_a_compressed_seed_of_zeros_admits_an_update_written_plainly(
    small_limits_node, make_client, store, tmp_path
):
    node = small_limits_node
    seed = tmp_path / "seed.npz"
    np.savez_compressed(seed, **{"0": np.zeros(250_000, dtype=np.float32)})  # a 1 MB model in ~1 KB
    client = make_client("trainer", port=node.port)
    start_training(node, client, put_global_model(store, seed))
    trained = tmp_path / "trained.npz"
    np.savez(trained, **{"0": np.ones(250_000, dtype=np.float32)})
    response = client.upload_bytes("update-plain", trained.read_bytes())
    assert response.status == fedn_pb2.OK
    # Against the file size alone (2 x ~1 KB + margin) the same update would have been refused.
    assert trained.stat().st_size > 2 * seed.stat().st_size + MARGIN


def test_an_upload_the_disk_cannot_take_is_refused_and_removed(
    make_node, make_client, store, tmp_path, monkeypatch
):
    reserve = 8 * MIB
    node = make_node(disk_reserve_bytes=reserve)
    updates_dir = node.files.updates_dir
    real_disk_usage = shutil.disk_usage
    spare = {"bytes": MIB}

    def disk_usage(path):
        usage = real_disk_usage(path)
        if Path(path) != updates_dir:
            return usage
        # A disk that fills up as the updates folder grows, with `spare` bytes beyond the reserve.
        used = sum(entry.stat().st_size for entry in updates_dir.iterdir())
        return usage._replace(free=reserve + spare["bytes"] - used)

    monkeypatch.setattr(modelfiles.shutil, "disk_usage", disk_usage)
    global_path = tmp_path / "global.npz"
    write_float32_npz(global_path, 1_000_000)
    client = make_client("trainer", port=node.port)
    start_training(node, client, put_global_model(store, global_path))

    payload = b"d" * (3 * MIB // 2)
    with pytest.raises(grpc.RpcError) as full:
        client.upload_bytes("update-1", payload)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no room for model update 'update-1'" in full.value.details()
    assert f"{reserve} bytes are kept in reserve" in full.value.details()
    assert files_in(updates_dir) == []

    spare["bytes"] = -1  # below the reserve already: even a tiny update is refused up front
    with pytest.raises(grpc.RpcError) as none_left:
        client.upload_bytes("update-2", b"tiny")
    assert none_left.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert files_in(updates_dir) == []

    spare["bytes"] = 4 * MIB  # the same update fits once the disk has room
    assert client.upload_bytes("update-3", payload).status == fedn_pb2.OK
    assert files_in(updates_dir) == ["update-3"]


# A large model, both ways --------------------------------------------------------------------


def resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux 4.0+), so the peak measured next is the transfer's own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@pytest.fixture
def big_files_removed(tmp_path: Path) -> Iterator[None]:
    """pytest keeps the last runs' temporary folders: leave no model-sized files in them."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size > 10 * MIB:
            path.unlink()


def test_a_200_mb_model_streams_down_and_up_unchanged_in_bounded_memory(
    big_files_removed, node, make_client, store, tmp_path
):
    size = 200 * 1000 * 1000
    global_path = tmp_path / "global.npz"
    write_float32_npz(global_path, size)
    expected = sha256_of(global_path)
    client = make_client("trainer")
    model_id = put_global_model(store, global_path)
    start_training(node, client, model_id)
    if not reset_peak_rss():
        pytest.skip("peak resident memory cannot be reset here (/proc/self/clear_refs)")
    before = resident_kib("VmRSS")

    downloaded = tmp_path / "downloaded.npz"
    received = download_model(
        client.channel, model_id, downloaded, sender_name="trainer", metadata=client.metadata, timeout=60
    )
    sent = upload_model(client.channel, downloaded, "update-large", metadata=client.metadata, timeout=60)
    growth_mb = (resident_kib("VmHWM") - before) * 1024 / 1e6

    assert received == sent == global_path.stat().st_size
    assert sha256_of(downloaded) == expected
    stored = node.files.update_path("update-large")  # Upload answered: the file is complete
    assert sha256_of(stored) == expected
    print(f"peak RSS growth over a {size / 1e6:.0f} MB download and upload: {growth_mb:.1f} MB")
    # Client and combiner share this process; chunks in flight at both ends make tens of MB,
    # where a whole model held anywhere would add 200 MB.
    assert growth_mb < 100, f"peak resident memory grew {growth_mb:.1f} MB moving a {size / 1e6:.0f} MB model"


def test_a_malformed_chunk_message_is_refused_and_nothing_kept(make_node, make_client, store, tmp_path):
    node = make_node()
    global_path = tmp_path / "global.npz"
    write_float32_npz(global_path, 100_000)
    client = make_client("trainer", port=node.port)
    start_training(node, client, put_global_model(store, global_path))
    upload = client.channel.stream_unary("/fedn.ModelService/Upload")
    good = fedn_pb2.ModelRequest(id="update-1", data=b"x" * 1000, status=fedn_pb2.IN_PROGRESS)
    for messages in (
        [b"\x1a\x05abc"],  # the first message: data says 5 bytes, 3 follow
        [good.SerializeToString(), b"\x22\x02\xff\xfe"],  # a later one: an id that is not UTF-8
    ):
        with pytest.raises(grpc.RpcError) as refused:
            upload(iter(messages), metadata=client.metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelRequest" in refused.value.details()
        assert files_in(node.files.updates_dir) == []
