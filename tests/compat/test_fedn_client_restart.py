"""FEDn 0.9.5's own client, killed and restarted within 2 s, is online again and trains.

FEDn's CI redeploys its client this way. The restarted process registers again on /add_client
before its combiner's online window (10 s) has lapsed, so the combiner never sees it leave; the
controller must still show it online (docs/combiner-controller.md, "Client presence") and a new
session must start and give it a task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from tests.compat.fedn_client import FEDN, federation_with_fedn_client
from tests.e2e.harness import Federation

CLIENT_NAME = "fedn-restart-1"
COMBINER = "combiner"
CONNECTING = f"Client {CLIENT_NAME} connecting to TaskStream."

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh"),
]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation_with_fedn_client(
        tmp_path_factory.mktemp("fedn_client_restart"), CLIENT_NAME, COMBINER
    ) as running:
        yield running


def legacy(federation: Federation, route: str, **params: str) -> dict[str, Any]:
    response = requests.get(f"{federation.url}/{route}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def presence(federation: Federation) -> dict[str, Any]:
    """The client as each controller view shows it."""
    active_v1 = federation.api.get_active_clients(COMBINER)["result"]
    active = legacy(federation, "get_active_clients", combiner=COMBINER)["result"]
    listed = {doc["id"]: doc for doc in legacy(federation, "list_clients")["result"]}
    return {
        "api_client": [doc["name"] for doc in active_v1],
        "get_active_clients": [doc["name"] for doc in active],
        "list_clients": listed.get(CLIENT_NAME, {}).get("status"),
        "last_seen": listed.get(CLIENT_NAME, {}).get("last_seen"),
    }


def run_one_round(federation: Federation, session_id: str) -> dict[str, Any]:
    federation.start_session(session_id, rounds=1, round_timeout=60, min_clients=1, requested_clients=1)
    session = federation.wait_session_end(session_id, timeout=150)
    assert session["status"] == "Finished", f"{session}\n{federation.diagnostics()}"
    (only,) = federation.session_rounds(session_id)
    return only


def test_fedn_095_client_restarted_within_2_s_is_online_and_trains(federation: Federation) -> None:
    first = run_one_round(federation, "before-restart")
    assert first["round_data"]["participants_clients"] == [CLIENT_NAME]
    combiner_log = federation.processes[COMBINER]
    assert combiner_log.tail(10**7).count(CONNECTING) == 1

    federation.kill(CLIENT_NAME)  # SIGKILL to its process group: no goodbye to anyone
    killed = time.time()
    federation.restart(CLIENT_NAME)
    restart_gap = time.time() - killed
    assert restart_gap < 2.0, f"the restart took {restart_gap:.1f} s; the scenario needs under 2 s"

    def back_online() -> dict[str, Any] | None:
        seen = presence(federation)
        reconnected = combiner_log.tail(10**7).count(CONNECTING) >= 2
        last_seen = parsedate_to_datetime(seen["last_seen"]).timestamp() if seen["last_seen"] else 0.0
        ok = (
            reconnected
            and seen["api_client"] == [CLIENT_NAME]
            and seen["get_active_clients"] == [CLIENT_NAME]
            and seen["list_clients"] == "online"
            # The combiner's word since the restart, not a row left over from before the kill.
            and last_seen >= int(killed)
        )
        return seen if ok else None

    started = time.monotonic()
    seen = federation.wait_for(
        f"{CLIENT_NAME} online again after its restart", back_online, 15, interval=0.5, watch=(CLIENT_NAME,)
    )
    print(
        f"\nrestart gap {restart_gap:.2f} s; online in every view {time.monotonic() - started:.1f} s later: {seen}"
    )

    # last_seen keeps moving while it stays online (the combiner's periodic snapshots).
    federation.wait_for(
        "last_seen to move",
        lambda: (
            parsedate_to_datetime(presence(federation)["last_seen"])
            > parsedate_to_datetime(seen["last_seen"])
        ),
        15,
    )

    second = run_one_round(federation, "after-restart")
    assert second["round_data"]["participants_clients"] == [CLIENT_NAME]
    (report,) = second["combiners"]
    assert report["participants"] == [CLIENT_NAME] and report["num_examples"] > 0
    assert presence(federation)["list_clients"] == "online"
