"""FEDn 0.9.5's own client, unmodified, in a real fedplane session.

`fedn client start` from the .fedn095 venv (scripts/fedn_venv.sh) is assigned by fedplane's
controller, downloads and unpacks the digits package, connects to fedplane's combiner, trains a
round and validates the new model. The package's entry points run `python model.py ...`; the
project venv comes first on the client's PATH, so that `python` has numpy and scikit-learn
(FEDn's own venv has no scikit-learn) while the client itself is FEDn's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.fedn_client import FEDN, federation_with_fedn_client
from tests.e2e.harness import Federation

CLIENT_NAME = "fedn-client-1"

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh"),
]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation_with_fedn_client(
        tmp_path_factory.mktemp("fedn_client"), CLIENT_NAME, "combiner"
    ) as running:
        yield running


def test_fedn_095_client_trains_and_validates_in_a_fedplane_session(federation: Federation) -> None:
    session_id = "fedn-client"
    started = time.monotonic()
    federation.start_session(session_id, rounds=1, round_timeout=60, min_clients=1, requested_clients=1)
    session = federation.wait_session_end(session_id, timeout=150)
    print(f"\nFEDn client round in {time.monotonic() - started:.1f} s")
    assert session["status"] == "Finished", f"{session}\n{federation.diagnostics()}"

    client = federation.api.get_client(CLIENT_NAME)
    assert client["combiner"] == "combiner"
    (only,) = federation.session_rounds(session_id)
    assert only["status"] == "Finished"
    assert only["round_data"]["participants_clients"] == [CLIENT_NAME]
    (report,) = only["combiners"]
    assert report["participants"] == [CLIENT_NAME] and report["num_examples"] > 0

    validations = federation.api.get_validations(session_id=session_id, model_id=only["model_id"])["result"]
    assert [v["sender"]["name"] for v in validations] == [CLIENT_NAME]
    metrics = json.loads(validations[0]["data"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # FEDn's client unpacked the package into its own work dir and ran the entry points there.
    assert any(Path(federation.var_dir / "client1").rglob("fedn.yaml"))
