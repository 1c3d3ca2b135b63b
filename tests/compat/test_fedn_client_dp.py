"""Central differential privacy with FEDn 0.9.5's own clients, unmodified: a DP session books ε
round by round, stops itself before a round would exceed its target, and the CLI shows ε."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import redirect_stdout

import pytest

from fedplane.cli import main
from fedplane.privacy.accounting import epsilon_after
from tests.compat.fedn_client import FEDN, federation_with_fedn_client, spawn_fedn_client
from tests.e2e.harness import Federation

CLIENTS = ["fedn-dp-1", "fedn-dp-2"]
Z = 1.5
DELTA = 1e-5

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh"),
]


def epsilon(rounds: int) -> float:
    return epsilon_after(rounds, sampling_rate=1.0, noise_multiplier=Z, delta=DELTA)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation_with_fedn_client(tmp_path_factory.mktemp("fedn_dp"), CLIENTS[0], "combiner") as running:
        workdir = running.var_dir / "client2"
        workdir.mkdir()
        args = ["-d", "127.0.0.1", "-p", str(running.port), "-n", CLIENTS[1]]
        spawn_fedn_client(running, CLIENTS[1], args, workdir)
        running.wait_clients_online(2, timeout=120)
        yield running


def test_a_dp_session_with_fedn_clients_books_epsilon_and_stops_at_its_target(federation: Federation) -> None:
    session_id = "fedn-dp"
    target = (epsilon(2) + epsilon(3)) / 2  # two rounds fit, a third would not
    started = time.monotonic()
    federation.start_session(
        session_id,
        rounds=5,
        round_timeout=60,
        min_clients=2,
        requested_clients=2,
        validate=False,
        dp={"noise_multiplier": Z, "clip_norm": 5.0, "delta": DELTA, "target_epsilon": target},
    )
    session = federation.wait_session_end(session_id, timeout=240)
    print(f"\nDP session with FEDn clients in {time.monotonic() - started:.1f} s")
    assert session["status"] == "Stopped", f"{session}\n{federation.diagnostics()}"
    assert session["status_reason"].startswith("Privacy budget reached"), session["status_reason"]
    assert session["privacy"]["epsilon"] == pytest.approx(epsilon(2))
    assert session["privacy"]["rounds"] == 2
    assert session["session_config"]["dp"]["expected_clients"] == 2

    rounds = federation.session_rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished", "Finished"]
    spent = [r["round_data"]["privacy"]["epsilon"] for r in rounds]
    assert spent == pytest.approx([epsilon(1), epsilon(2)])
    assert spent[0] < spent[1] <= target
    parent = federation.api.get_session(session_id)["session_config"]["model_id"]
    for item in rounds:
        assert sorted(item["round_data"]["participants_clients"]) == CLIENTS
        (report,) = item["combiners"]
        assert report["data"]["dp"]["noise_std"] == pytest.approx(Z * 5.0)
        assert report["data"]["dp"]["denominator"] == 2
        assert item["round_data"]["privacy"]["clip_norm"] == 5.0
        model = federation.api.get_model(item["model_id"])
        assert model["parent_model"] == parent
        parent = item["model_id"]

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--host", federation.url, "session", "watch", session_id, "--poll-interval", "0.05"])
    lines = out.getvalue().splitlines()
    assert code != 0  # the session did not finish its rounds
    assert [line.split()[-1] for line in lines[:2]] == [f"epsilon={e:.4g}" for e in spent]
    assert lines[-2].startswith(f"session {session_id}: Stopped (Privacy budget reached")
    assert lines[-1] == f"privacy spent: epsilon={spent[1]:.4g} at delta={DELTA:g}"
