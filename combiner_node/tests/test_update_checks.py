"""Client updates are checked header first and against the round's global model before any fold."""

from __future__ import annotations

import io
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from combiner_node.store import DirectoryStore
from combiner_node.tests.conftest import load_model, save_model, wait_for
from combiner_node.tests.test_rounds import report_of, round_config, start
from fedplane.tests import hostile_npz as hostile

GLOBAL = [np.zeros(32, dtype=np.float32)]

HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "bomb-by-declared-shape": (hostile.bomb_by_shape, "has shape (1000000000000,)"),
    "bomb-by-compression-ratio": (hostile.bomb_by_ratio, "has shape (805306368,)"),
    "wrong-magic": (hostile.wrong_magic, "not a valid .npy array header"),
    "pickled-member": (hostile.pickled_member, "object arrays hold pickled data"),
    "object-dtype": (hostile.object_dtype_header, "object arrays hold pickled data"),
    "structured-dtype": (hostile.structured, "structured dtypes are refused"),
    "zero-d-for-a-vector": (lambda: hostile.savez({"0": np.float32(1.0)}), "has shape ()"),
    "empty-archive": (hostile.empty_archive, "update has 0 layers"),
    "not-a-zip": (lambda: b"not a zip, not a model" * 8, "not an npz archive"),
    "truncated": (lambda: hostile.savez({"0": np.ones(32, dtype=np.float32)})[:-40], "not a readable npz"),
    "nan": (lambda: hostile.with_value(np.nan, layers=1), "non-finite"),
    "inf": (lambda: hostile.with_value(np.inf, layers=1), "non-finite"),
    "other-shape": (lambda: hostile.savez({"0": np.ones(16, dtype=np.float32)}), "has shape (16,)"),
    "other-dtype": (lambda: hostile.savez({"0": np.ones(32, dtype=np.int32)}), "has dtype int32"),
    "other-layer-count": (
        lambda: hostile.savez({"0": np.ones(32, dtype=np.float32), "1": np.ones(2)}),
        "update has 2 layers",
    ),
}


def seed_global(store: DirectoryStore, tmp_path: Path) -> str:
    model_id = str(uuid.uuid4())
    path = tmp_path / "global.npz"
    save_model(path, GLOBAL)
    store.write(f"models/{model_id}.npz", io.BytesIO(path.read_bytes()))
    return model_id


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_update_is_refused_reported_and_not_kept(
    node, make_client, controller, store, tmp_path, case: str
) -> None:
    build, expected = HOSTILE[case]
    model_id = seed_global(store, tmp_path)
    client = make_client("client-x")
    start(node.port, **round_config(model_id, round_timeout=30))
    task = client.next_task()
    with pytest.raises(grpc.RpcError) as error:
        client.send_update_bytes(task, build(), 10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details(), error.value.details()
    # The controller hears why, and the round stops waiting for the refused task.
    statuses = wait_for(
        lambda: [s for s in controller.items("/api/v1/statuses/") if "refused" in s["status"]]
    )
    assert statuses[0]["logLevel"] == "WARNING" and expected in statuses[0]["status"]
    report = report_of(controller)
    assert report["status"] == "Failed" and report["participants"] == []
    assert list(node.files.updates_dir.iterdir()) == []


def test_a_refused_update_leaves_the_round_to_the_others(node, make_client, controller, store, tmp_path):
    model_id = seed_global(store, tmp_path)
    good, bad = make_client("good"), make_client("bad")
    start(node.port, **round_config(model_id, round_timeout=30))
    tasks = {client.name: client.next_task() for client in (good, bad)}
    with pytest.raises(grpc.RpcError):
        bad.send_update_bytes(tasks["bad"], hostile.savez({"0": np.full(32, 9.0, dtype=np.int64)}), 10)
    accepted = good.send_update_bytes(
        tasks["good"], hostile.savez({"0": np.full(32, 2.0, dtype=np.float32)}), 10
    )
    assert accepted.response == "Model update accepted."
    report = report_of(controller)
    assert report["status"] == "Success" and report["participants"] == ["good"]
    combined = tmp_path / "combined.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        combined.write_bytes(source.read())
    np.testing.assert_allclose(load_model(combined)[0], 2.0)


def test_a_fedn_compressed_update_matching_the_global_model_is_folded(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_global(store, tmp_path)
    client = make_client("fedn-client")
    start(node.port, **round_config(model_id, round_timeout=30))
    payload = hostile.savez({"0": np.full(32, 1.5, dtype=np.float32)}, compressed=True)
    assert client.send_update_bytes(client.next_task(), payload, 3).response == "Model update accepted."
    assert report_of(controller)["status"] == "Success"


def test_refusing_a_bomb_update_allocates_about_its_file_size(node, make_client, controller, store, tmp_path):
    """Python and numpy allocations of the whole exchange (client and combiner share this process)."""
    model_id = seed_global(store, tmp_path)
    client = make_client("client-x")
    start(node.port, **round_config(model_id, round_timeout=30))
    task = client.next_task()
    payload = hostile.bomb_by_ratio(3 * hostile.GIB)
    tracemalloc.start()
    try:
        with pytest.raises(grpc.RpcError) as error:
            client.send_update_bytes(task, payload, 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert peak < 64 << 20, peak
    assert peak < 8 * len(payload) + (8 << 20), (peak, len(payload))
