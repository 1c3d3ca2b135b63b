"""An asynchronous buffered session (FedBuff) with FEDn 0.9.5's own clients, unmodified: each task
names the version to train on, each version is committed as a round and a model, and the
validations of the versions arrive once the combiner has made the last one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.compat.fedn_client import FEDN, federation_with_fedn_client, spawn_fedn_client
from tests.e2e.harness import Federation

CLIENTS = ["fedn-async-1", "fedn-async-2"]
VERSIONS = 4

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh"),
]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation_with_fedn_client(
        tmp_path_factory.mktemp("fedn_async"), CLIENTS[0], "combiner"
    ) as running:
        workdir = running.var_dir / "client2"
        workdir.mkdir()
        spawn_fedn_client(
            running, CLIENTS[1], ["-d", "127.0.0.1", "-p", str(running.port), "-n", CLIENTS[1]], workdir
        )
        running.wait_clients_online(2, timeout=120)
        yield running


def test_fedn_clients_train_an_async_session_version_by_version(federation: Federation) -> None:
    session_id = "fedn-async"
    seed_id = federation.api.get_active_model()["model"]
    started = time.monotonic()
    federation.start_session(
        session_id,
        rounds=VERSIONS,
        round_timeout=60,
        min_clients=2,
        mode="async",
        fedbuff={"buffer_size": 2, "max_staleness": 2},
    )
    session = federation.wait_session_end(session_id, timeout=240)
    print(f"\n{VERSIONS} versions with FEDn clients in {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", f"{session}\n{federation.diagnostics()}"
    rounds = federation.session_rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished"] * VERSIONS
    parent = seed_id
    for item in rounds:
        assert federation.api.get_model(item["model_id"])["parent_model"] == parent
        assert set(item["round_data"]["participants_clients"]) <= set(CLIENTS)
        parent = item["model_id"]
    contributors = {name for r in rounds for name in r["round_data"]["participants_clients"]}
    assert contributors == set(CLIENTS)

    def validated() -> bool:
        found = federation.api.get_validations(session_id=session_id, model_id=parent)["result"]
        return {v["sender"]["name"] for v in found} == set(CLIENTS)

    federation.wait_for("both clients' validations of the last version", validated, 60)
