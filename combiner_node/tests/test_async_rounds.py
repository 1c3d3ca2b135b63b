"""An asynchronous buffered session (FedBuff) on a real in-process combiner: versions as updates
arrive, idle clients kept busy with the latest version, too-stale updates refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from combiner_node.roundconfig import RoundConfigError, parse_round_config
from combiner_node.tests.conftest import load_model, wait_for
from combiner_node.tests.test_rounds import layers, round_config, seed_model, start
from fedplane.proto import fedn_pb2

ROUND_IDS = ["11", "12", "13"]


def async_config(model_id: str, **fedbuff) -> dict:
    return round_config(
        model_id,
        mode="async",
        async_round_ids=",".join(ROUND_IDS),
        fedbuff={"buffer_size": 1, "max_staleness": 0, "server_learning_rate": 0.5, **fedbuff},
        round_timeout=20,
    )


def version_value(store, tmp_path, report) -> float:
    path = tmp_path / f"{report['model_id']}.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        path.write_bytes(source.read())
    values = {float(v) for layer in load_model(path) for v in np.ravel(layer)}
    assert len(values) == 1, values
    return values.pop()


def test_async_round_config_needs_the_rounds_of_its_versions() -> None:
    config = {key: str(value) for key, value in round_config("a" * 32, mode="async").items()}
    with pytest.raises(RoundConfigError, match="async_round_ids"):
        parse_round_config(config)
    config["async_round_ids"] = "4,5"
    assert parse_round_config(config).async_round_ids == ("4", "5")
    with pytest.raises(RoundConfigError, match="unknown mode"):
        parse_round_config({**config, "mode": "later"})


def test_versions_follow_updates_and_stale_updates_are_refused(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    a, b = make_client("a"), make_client("b")
    start(node.port, **async_config(model_id))
    task_a, task_b = a.next_task(), b.next_task()
    assert task_a.model_id == task_b.model_id == model_id
    assert task_a.type == fedn_pb2.MODEL_UPDATE

    # K = 1: a's update makes version 1 = 0 + 0.5 * (1 - 0).
    assert a.send_update(task_a, layers(1.0), 10, tmp_path).response == "Model update accepted."
    first = wait_for(lambda: controller.bodies("/api/v1/rounds/11/reports"))[0]
    assert first["status"] == "Success" and first["participants"] == ["a"]
    assert first["data"]["version"] == 1 and first["data"]["staleness"] == [0]
    assert first["config"]["round_id"] == "11"
    assert version_value(store, tmp_path, first) == 0.5
    # a is idle again and gets version 1 at once.
    task_a = a.next_task()
    assert task_a.model_id == first["model_id"]

    # b trained on version 0, one behind: max_staleness 0 refuses it, with the reason.
    answer = b.send_update(task_b, layers(9.0), 10, tmp_path).response
    assert "refused: it is too stale" in answer and "at most 0 are accepted" in answer
    statuses = wait_for(lambda: [s for s in controller.bodies("/api/v1/statuses/") if "too stale" in str(s)])
    assert statuses
    task_b = b.next_task()
    assert task_b.model_id == first["model_id"]

    assert b.send_update(task_b, layers(2.5), 10, tmp_path).response == "Model update accepted."
    second = wait_for(lambda: controller.bodies("/api/v1/rounds/12/reports"))[0]
    assert version_value(store, tmp_path, second) == 1.5
    # a's task on version 1 is now one behind too.
    assert "too stale" in a.send_update(task_a, layers(7.0), 10, tmp_path).response
    task_a = a.next_task()
    assert task_a.model_id == second["model_id"]
    assert a.send_update(task_a, layers(3.5), 10, tmp_path).response == "Model update accepted."
    third = wait_for(lambda: controller.bodies("/api/v1/rounds/13/reports"))[0]
    assert third["data"]["version"] == 3
    assert version_value(store, tmp_path, third) == 2.5
    # The session made its versions: the combiner is free for the next job.
    assert node.rounds.wait_idle(10)


def test_staleness_weights_the_buffered_deltas(node, make_client, controller, store, tmp_path):
    model_id = seed_model(store, tmp_path)
    a, b = make_client("a"), make_client("b")
    start(
        node.port,
        **async_config(
            model_id, buffer_size=2, max_staleness=2, server_learning_rate=1.0, staleness="constant"
        ),
    )
    task_a, task_b = a.next_task(), b.next_task()
    a.send_update(task_a, layers(1.0), 10, tmp_path)
    b.send_update(task_b, layers(4.0), 30, tmp_path)
    first = wait_for(lambda: controller.bodies("/api/v1/rounds/11/reports"))[0]
    # Example-weighted mean of the deltas: (10·1 + 30·4) / 40.
    assert version_value(store, tmp_path, first) == pytest.approx(3.25)
    assert first["num_examples"] == 40 and sorted(first["participants"]) == ["a", "b"]


def test_stop_ends_an_async_session_with_a_failed_report(node, make_client, controller, store, tmp_path):
    from combiner_node.tests.conftest import control_stub

    model_id = seed_model(store, tmp_path)
    a = make_client("a")
    start(node.port, **async_config(model_id))
    a.next_task()
    channel, control = control_stub(node.port)
    with channel:
        control.Stop(fedn_pb2.ControlRequest(command=fedn_pb2.STOP), timeout=10)
    report = wait_for(lambda: controller.bodies("/api/v1/rounds/11/reports"))[0]
    assert report["status"] == "Failed" and report["reason"] == "stopped"
    assert node.rounds.wait_idle(10)


def test_an_async_session_with_dp_clips_and_reports_each_release(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    a = make_client("a")
    config = async_config(model_id, server_learning_rate=1.0)
    config["dp"] = {"clip_norm": 1.0, "noise_multiplier": 0.0, "expected_clients": 2}
    start(node.port, **config)
    a.send_update(a.next_task(), layers(100.0), 10, tmp_path)
    first = wait_for(lambda: controller.bodies("/api/v1/rounds/11/reports"))[0]
    assert first["data"]["dp"]["clip_norm"] == 1.0 and first["data"]["dp"]["denominator"] == 2.0
    # The delta (all 100s over 10 elements) is clipped to norm 1 and divided by m = 2.
    assert version_value(store, tmp_path, first) == pytest.approx(1 / (2 * 10**0.5))
