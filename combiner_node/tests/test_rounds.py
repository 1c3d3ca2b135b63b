"""Rounds on a real in-process combiner with stub-built clients and a FakeController."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from combiner_node.store import DirectoryStore
from combiner_node.tests.conftest import (
    TestClient,
    control_stub,
    load_model,
    save_model,
    start_request,
    wait_for,
)
from fedplane.proto import fedn_pb2

SHAPES = [(3, 2), (4,)]


def seed_model(store: DirectoryStore, tmp_path: Path, shapes: list[tuple[int, ...]] = SHAPES) -> str:
    model_id = str(uuid.uuid4())
    path = tmp_path / "seed.npz"
    save_model(path, [np.zeros(shape) for shape in shapes])
    store.write(f"models/{model_id}.npz", io.BytesIO(path.read_bytes()))
    return model_id


def round_config(model_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "session_id": "session-1",
        "round_id": "1",
        "model_id": model_id,
        "task": "training",
        "aggregator": "fedavg",
        "aggregator_kwargs": {},
        "round_timeout": 10,
        "buffer_size": -1,
        "clients_required": 1,
        "clients_requested": 8,
        "delete_models_storage": True,
        "helper_type": "numpyhelper",
        "validate": True,
    }
    config.update(overrides)
    return config


def start(port: int, **config: Any) -> str:
    channel, control = control_stub(port)
    with channel:
        response = control.Start(start_request(**config), timeout=10)
    params = {parameter.key: parameter.value for parameter in response.parameter}
    return params["job_id"]


def report_of(controller, round_id: str = "1") -> dict[str, Any]:
    return wait_for(lambda: controller.bodies(f"/api/v1/rounds/{round_id}/reports"))[0]


def layers(value: float) -> list[np.ndarray]:
    return [np.full(shape, value) for shape in SHAPES]


def test_full_round_combines_the_example_weighted_mean(node, make_client, controller, store, tmp_path):
    model_id = seed_model(store, tmp_path)
    clients = [make_client(f"client-{i}") for i in range(3)]
    start(node.port, **round_config(model_id))

    examples = {"client-0": 10, "client-1": 20, "client-2": 70}
    values = {"client-0": 1.0, "client-1": 2.0, "client-2": 4.0}
    for client in clients:
        task = client.next_task()
        assert task.type == fedn_pb2.MODEL_UPDATE
        assert task.sender.role == fedn_pb2.COMBINER and task.sender.name == "combiner-1"
        assert task.receiver.name == client.name and task.model_id == model_id
        assert task.session_id == "session-1"
        payload, _ = client.download(task.model_id)
        (tmp_path / "global.npz").write_bytes(payload)
        assert [layer.shape for layer in load_model(tmp_path / "global.npz")] == SHAPES
        response = client.send_update(task, layers(values[client.name]), examples[client.name], tmp_path)
        assert response.response == "Model update accepted."

    report = report_of(controller)
    assert report["status"] == "Success", report
    assert sorted(report["participants"]) == sorted(examples)
    assert report["num_examples"] == 100
    assert report["combiner"] == "combiner-1"
    assert report["data"]["nr_aggregated_models"] == 3
    assert report["config"]["round_id"] == "1"
    combined = tmp_path / "combined.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        combined.write_bytes(source.read())
    expected = (1.0 * 10 + 2.0 * 20 + 4.0 * 70) / 100
    for layer, shape in zip(load_model(combined), SHAPES, strict=True):
        assert layer.shape == shape
        np.testing.assert_allclose(layer, expected)
    # Updates are deleted as soon as they are folded in.
    assert list(node.files.updates_dir.iterdir()) == []


def test_round_times_out_with_a_straggler_whose_late_update_is_refused(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    fast, slow = make_client("fast"), make_client("slow")
    started = time.monotonic()
    start(node.port, **round_config(model_id, round_timeout=1.5))
    fast.send_update(fast.next_task(), layers(1.0), 5, tmp_path)
    slow_task = slow.next_task()

    report = report_of(controller)
    assert 1.4 < time.monotonic() - started < 8
    assert report["status"] == "Success"
    assert report["participants"] == ["fast"]
    assert report["data"]["nr_expected_updates"] == 2

    # The round is closed: its update is not even taken onto the combiner's disk.
    with pytest.raises(grpc.RpcError) as late:
        slow.send_update(slow_task, layers(9.0), 5, tmp_path)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert list(node.files.updates_dir.iterdir()) == []
    # An update whose upload made it in before the close is refused with a WARNING status.
    late_update = fedn_pb2.ModelUpdate(
        sender=slow.identity,
        model_id=slow_task.model_id,
        model_update_id=str(uuid.uuid4()),
        correlation_id=slow_task.correlation_id,
        meta='{"training_metadata": {"num_examples": 5}}',
    )
    response = slow.combiner.SendModelUpdate(late_update, metadata=slow.metadata, timeout=5)
    assert "refused" in response.response and "after its round was closed" in response.response
    warnings = wait_for(
        lambda: [s for s in controller.items("/api/v1/statuses/") if "refused" in s["status"]]
    )
    assert warnings[0]["logLevel"] == "WARNING"


def test_buffer_size_closes_the_round_early_and_refuses_the_rest(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    clients = [make_client(f"c{i}") for i in range(3)]
    started = time.monotonic()
    start(node.port, **round_config(model_id, buffer_size=2, round_timeout=30))
    tasks = [client.next_task() for client in clients]
    clients[0].send_update(tasks[0], layers(1.0), 1, tmp_path)
    clients[1].send_update(tasks[1], layers(3.0), 1, tmp_path)

    report = report_of(controller)
    assert time.monotonic() - started < 10
    assert report["status"] == "Success" and report["num_examples"] == 2
    assert report["data"]["nr_required_updates"] == 2
    with pytest.raises(grpc.RpcError) as late:
        clients[2].send_update(tasks[2], layers(5.0), 1, tmp_path)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_foreign_duplicate_and_misaddressed_updates_are_refused(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    alice, bob = make_client("alice"), make_client("bob")
    start(node.port, **round_config(model_id, round_timeout=30))
    alice_task, bob_task = alice.next_task(), bob.next_task()

    foreign = alice.send_update(alice_task, layers(1.0), 1, tmp_path, correlation_id=str(uuid.uuid4()))
    assert "not a task of the current round" in foreign.response
    stolen = bob.send_update(bob_task, layers(1.0), 1, tmp_path, correlation_id=alice_task.correlation_id)
    assert "given to 'alice'" in stolen.response
    assert alice.send_update(alice_task, layers(1.0), 1, tmp_path).response == "Model update accepted."
    duplicate = alice.send_update(alice_task, layers(1.0), 1, tmp_path)
    assert "already received" in duplicate.response
    bob.send_update(bob_task, layers(3.0), 3, tmp_path)

    report = report_of(controller)
    assert sorted(report["participants"]) == ["alice", "bob"]
    combined = tmp_path / "combined.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        combined.write_bytes(source.read())
    np.testing.assert_allclose(load_model(combined)[0], (1.0 + 9.0) / 4)


@pytest.mark.parametrize(
    ("make_update", "expected"),
    [
        (lambda: (layers(1.0), None), "num_examples"),
        (lambda: (layers(1.0), 0), "positive integer"),
        (lambda: (layers(1.0), "12"), "positive integer"),
        (lambda: ([np.zeros((2, 2)), np.zeros(4)], 5), "refused"),
        (lambda: ([np.full((3, 2), np.nan), np.zeros(4)], 5), "refused"),
    ],
)
def test_invalid_updates_get_invalid_argument(
    node, make_client, controller, store, tmp_path, make_update, expected
):
    model_id = seed_model(store, tmp_path)
    client = make_client("client-x")
    start(node.port, **round_config(model_id, round_timeout=30))
    task = client.next_task()
    update_layers, num_examples = make_update()
    with pytest.raises(grpc.RpcError) as error:
        client.send_update(task, update_layers, num_examples, tmp_path)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()
    # The only task was answered, so the round ends at once instead of waiting for the timeout.
    report = report_of(controller)
    assert report["status"] == "Failed"


def test_too_few_clients_fails_the_round_at_once(node, make_client, controller, store, tmp_path):
    model_id = seed_model(store, tmp_path)
    make_client("lonely")
    start(node.port, **round_config(model_id, clients_required=2))
    report = report_of(controller)
    assert report["status"] == "Failed"
    assert "too few clients: 1 online, 2 required" in report["reason"]
    assert report["model_id"] is None


def test_missing_global_model_fails_the_round(node, make_client, controller):
    make_client("client-a")
    start(node.port, **round_config("no-such-model"))
    report = report_of(controller)
    assert report["status"] == "Failed" and "not in the artifact store" in report["reason"]


def test_bad_round_config_is_invalid_argument(node):
    channel, control = control_stub(node.port)
    with channel:
        for config in (
            round_config("m", round_timeout="soon"),
            round_config("m", aggregator_kwargs="__import__('os')"),
            round_config("../etc/passwd"),
            round_config("m", task="inference"),
            round_config("m", buffer_size=0),
        ):
            with pytest.raises(grpc.RpcError) as error:
                control.Start(start_request(**config), timeout=5)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stop_ends_the_round_and_a_queued_start_runs_next(node, make_client, controller, store, tmp_path):
    model_id = seed_model(store, tmp_path)
    client = make_client("client-a")
    first_job = start(node.port, **round_config(model_id, round_id="7", round_timeout=60))
    first_task = client.next_task()
    second_job = start(node.port, **round_config(model_id, round_id="8", round_timeout=60))
    assert first_job != second_job
    channel, control = control_stub(node.port)
    with channel:
        assert control.Stop(fedn_pb2.ControlRequest(command=fedn_pb2.STOP), timeout=5).message == "Success"
    assert report_of(controller, "7")["reason"] == "stopped"
    second_task = client.next_task()
    assert second_task.correlation_id != first_task.correlation_id
    assert "round_id" in second_task.data and '"8"' in second_task.data
    client.send_update(second_task, layers(2.0), 4, tmp_path)
    assert report_of(controller, "8")["status"] == "Success"


def test_validations_asked_together_each_send_their_model(node, make_client, controller, store, tmp_path):
    """More validations queued at once than global models stay staged (an asynchronous session's
    versions at its end): each model is still sent, staged again from the store when evicted."""
    client = make_client("v1")
    model_ids = [seed_model(store, tmp_path) for _ in range(9)]
    for number, model_id in enumerate(model_ids, start=1):
        start(node.port, **round_config(model_id, task="validation", round_id=str(number)))
    tasks = [client.next_task() for _ in model_ids]
    assert [task.model_id for task in tasks] == model_ids
    for task in tasks:
        payload, responses = client.download(task.model_id)
        assert responses[-1].status == fedn_pb2.OK, responses[-1].message
        with store.open_read(f"models/{task.model_id}.npz") as stored:
            assert payload == stored.read()


def test_validation_round_sends_tasks_and_forwards_results(node, make_client, controller, store, tmp_path):
    model_id = seed_model(store, tmp_path)
    clients = [make_client("v1"), make_client("v2")]
    start(node.port, **round_config(model_id, task="validation", round_id="3"))
    for client in clients:
        task = client.next_task()
        assert task.type == fedn_pb2.MODEL_VALIDATION and task.data == ""
        payload, _ = client.download(task.model_id)
        assert payload
        validation = fedn_pb2.ModelValidation(
            sender=client.identity,
            receiver=task.sender,
            model_id=task.model_id,
            data='{"test_accuracy": 0.9}',
            correlation_id=task.correlation_id,
            session_id=task.session_id,
        )
        validation.timestamp.GetCurrentTime()
        client.combiner.SendModelValidation(validation, metadata=client.metadata, timeout=5)
    forwarded = wait_for(
        lambda: (
            len(controller.items("/api/v1/validations/")) == 2 and controller.items("/api/v1/validations/")
        )
    )
    assert {item["sender"]["name"] for item in forwarded} == {"v1", "v2"}
    first = forwarded[0]
    assert first["modelId"] == model_id and first["sessionId"] == "session-1"
    assert first["sender"]["role"] == "WORKER" and first["meta"] == ""
    assert controller.bodies("/api/v1/rounds/") == []


def test_set_aggregator_and_flush(node):
    channel, control = control_stub(node.port)
    with channel:
        ok = control.SetAggregator(
            fedn_pb2.ControlRequest(parameter=[fedn_pb2.Parameter(key="aggregator", value="fedavg")]),
            timeout=5,
        )
        bad = control.SetAggregator(
            fedn_pb2.ControlRequest(parameter=[fedn_pb2.Parameter(key="aggregator", value="nope")]), timeout=5
        )
        flush = control.FlushAggregationQueue(fedn_pb2.ControlRequest(), timeout=5)
    assert (ok.message, bad.message, flush.message) == ("Success", "Failed", "Success")


def test_an_update_folding_while_the_last_is_claimed_is_still_counted(make_node, controller, store, tmp_path):
    """The last outstanding task is claimed while an earlier update is still folding: the round
    must wait for both folds, not close on "nothing outstanding" and refuse the second."""
    import threading

    from combiner_node.rounds import default_aggregator_factory

    first_fold_started = threading.Event()
    release_first_fold = threading.Event()

    class SlowFirstFold:
        def __init__(self, inner):
            self.inner = inner
            self.folds = 0

        def start_round(self, path):
            self.inner.start_round(path)

        def add(self, path, num_examples):
            self.folds += 1
            if self.folds == 1:
                first_fold_started.set()
                release_first_fold.wait(10)
            self.inner.add(path, num_examples)

        @property
        def count(self):
            return self.inner.count

        def finish(self, out_path):
            self.inner.finish(out_path)

    def factory(name, kwargs, workdir):
        return SlowFirstFold(default_aggregator_factory(name, kwargs, workdir))

    node = make_node(aggregator_factory=factory)
    model_id = seed_model(store, tmp_path)
    alice = TestClient(node.port, "alice")
    bob = TestClient(node.port, "bob")
    for client in (alice, bob):
        client.heartbeat()
        client.open_stream()
    start(node.port, **round_config(model_id, round_timeout=30))
    alice_task, bob_task = alice.next_task(), bob.next_task()
    answers: dict[str, str] = {}
    slow = threading.Thread(
        target=lambda: answers.__setitem__(
            "alice", alice.send_update(alice_task, layers(1.0), 1, tmp_path).response
        )
    )
    slow.start()
    assert first_fold_started.wait(10)
    # Bob's update is claimed while alice's is folding; it then waits for the fold lock.
    fast = threading.Thread(
        target=lambda: answers.__setitem__(
            "bob", bob.send_update(bob_task, layers(3.0), 1, tmp_path).response
        )
    )
    fast.start()
    wait_for(lambda: not node.rounds._current.outstanding)
    release_first_fold.set()
    slow.join(10)
    fast.join(10)
    assert answers == {"alice": "Model update accepted.", "bob": "Model update accepted."}
    report = report_of(controller)
    assert report["status"] == "Success" and sorted(report["participants"]) == ["alice", "bob"]
    alice.close()
    bob.close()


def test_a_tokenless_client_may_upload_while_earlier_updates_still_fold(
    make_node, controller, store, tmp_path
):
    """Tokenless clients share one upload quota. Updates already claimed by their tasks and still
    folding (or waiting for the fold lock) are the round's, not uploads waiting for a task: they
    must not use up the quota of the clients whose tasks are still outstanding, or the last
    client's upload is refused and the round waits for it until its timeout."""
    import threading

    from combiner_node.rounds import default_aggregator_factory

    first_fold_started = threading.Event()
    release_first_fold = threading.Event()

    class SlowFirstFold:
        def __init__(self, inner):
            self.inner = inner
            self.folds = 0

        def start_round(self, path):
            self.inner.start_round(path)

        def add(self, path, num_examples):
            self.folds += 1
            if self.folds == 1:
                first_fold_started.set()
                release_first_fold.wait(10)
            self.inner.add(path, num_examples)

        @property
        def count(self):
            return self.inner.count

        def finish(self, out_path):
            self.inner.finish(out_path)

    node = make_node(
        aggregator_factory=lambda name, kwargs, workdir: SlowFirstFold(
            default_aggregator_factory(name, kwargs, workdir)
        )
    )
    model_id = seed_model(store, tmp_path)
    names = ("alice", "bob", "carol")
    clients = {name: TestClient(node.port, name) for name in names}
    for client in clients.values():
        client.heartbeat()
        client.open_stream()
    start(node.port, **round_config(model_id, round_timeout=30))
    tasks = {name: client.next_task() for name, client in clients.items()}
    answers: dict[str, str] = {}

    def send(name: str, value: float) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: answers.__setitem__(
                name, clients[name].send_update(tasks[name], layers(value), 1, tmp_path).response
            )
        )
        thread.start()
        return thread

    senders = [send("alice", 1.0)]
    try:
        assert first_fold_started.wait(10)
        senders.append(send("bob", 2.0))  # claimed, waits for the fold lock with its file on disk
        wait_for(lambda: set(node.rounds._current.outstanding.values()) == {"carol"})
        # Carol's task is the only one outstanding; two claimed updates are still on disk. Her
        # upload is taken (her update would wait for the fold lock, so it goes after the release).
        senders.append(send("carol", 3.0))
        wait_for(lambda: not node.rounds._current.outstanding)
    finally:
        release_first_fold.set()
    for thread in senders:
        thread.join(10)
    assert answers == dict.fromkeys(names, "Model update accepted.")
    report = report_of(controller)
    assert report["status"] == "Success" and sorted(report["participants"]) == list(names)
    assert list(node.files.updates_dir.iterdir()) == []
    for client in clients.values():
        client.close()


def test_a_nameless_upload_over_the_shared_quota_is_refused_not_another_evicted(tmp_path):
    """Two nameless uploads side by side both pass the quota check before either is kept: the
    one that finishes over the quota is refused; the other caller's upload stays."""
    from combiner_node.modelfiles import ModelFiles, UploadNotWanted

    files = ModelFiles(tmp_path / "work")
    refused: list[Exception] = []

    def first_chunks():
        yield b"first"
        # The second upload runs whole while the first is still arriving.
        files.receive_upload("second", iter([b"second"]), owner="", quota=1)
        yield b"-rest"

    try:
        files.receive_upload("first", first_chunks(), owner="", quota=1)
    except UploadNotWanted as exc:
        refused.append(exc)
    assert len(refused) == 1
    assert files.update_path("second").read_bytes() == b"second"
    assert files.upload_owner("second") == ""
    assert not files.update_path("first").exists()
    assert files.pending_uploads("") == 1


def test_the_combined_model_serves_the_next_tasks_from_the_combiners_disk(
    node, make_client, controller, store, tmp_path
):
    """Alone in its round, the combiner's model becomes the global model: the validation and the
    next round send it without reading it back from the store."""
    model_id = seed_model(store, tmp_path)
    client = make_client("solo")
    start(node.port, **round_config(model_id))
    client.send_update(client.next_task(), layers(2.0), 5, tmp_path)
    combined_id = report_of(controller)["model_id"]
    kept = tmp_path / "kept.npz"
    with store.open_read(f"models/{combined_id}.npz") as source:
        kept.write_bytes(source.read())
    store.delete(f"models/{combined_id}.npz")

    start(node.port, **round_config(combined_id, task="validation"))
    task = client.next_task()
    assert task.type == fedn_pb2.MODEL_VALIDATION and task.model_id == combined_id
    payload, _ = client.download(combined_id)
    assert payload == kept.read_bytes()

    start(node.port, **round_config(combined_id, round_id="2"))
    task = client.next_task()
    assert task.type == fedn_pb2.MODEL_UPDATE and task.model_id == combined_id
    assert client.download(combined_id)[0] == kept.read_bytes()
    assert client.send_update(task, layers(4.0), 5, tmp_path).response == "Model update accepted."
    assert report_of(controller, "2")["status"] == "Success"
