"""FEDn 0.9.5's own client runs the digits package against the same fakes fedplane's client uses.

This keeps both honest: the example must work under `fedn client start` unchanged, and the
FakeController/FakeCombiner must speak what a real 0.9.5 client expects.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedplane.client.tests.fakes import FakeCombiner, FakeController, package_from_dir, wait_until
from fedplane.proto import fedn_pb2

REPO = Path(__file__).resolve().parents[3]
FEDN = REPO / ".fedn095" / "bin" / "fedn"
DIGITS = REPO / "examples" / "digits"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(not FEDN.exists(), reason=f"{FEDN} is missing: run scripts/fedn_venv.sh to create it"),
]


@pytest.fixture
def fedn_client(tmp_path: Path) -> Iterator[tuple[FakeCombiner, subprocess.Popen[bytes], Path]]:
    combiner = FakeCombiner().start()
    controller = FakeController(
        package=package_from_dir(DIGITS / "client"), combiner_port=combiner.port
    ).start()
    workdir = tmp_path / "client3"  # the example reads its index from the folder name
    workdir.mkdir()
    (workdir / "settings.yaml").write_text(
        f"network_id: fedn-network\ndiscover_host: 127.0.0.1\ndiscover_port: {controller.port}\nname: fedn-client\n"
    )
    # `python` in the package's commands: one with numpy and scikit-learn, as a user would have.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{PROJECT_PYTHON}" "$@"\n')
    wrapper.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FEDN_", "FEDPLANE_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", FEDN_NUM_CLIENTS="4")
    log = (tmp_path / "fedn.log").open("wb")
    process = subprocess.Popen(
        [str(FEDN), "client", "start", "--init", "settings.yaml"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield combiner, process, tmp_path / "fedn.log"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        controller.stop()
        combiner.stop()


def test_fedn_095_client_trains_and_validates_the_digits_package(
    fedn_client: tuple[FakeCombiner, subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    combiner, process, log = fedn_client
    try:
        wait_until(lambda: combiner.connected("fedn-client"), 60, "FEDn client on the task stream")
    except AssertionError:
        raise AssertionError(log.read_text()[-3000:]) from None
    seed = tmp_path / "seed.npz"
    subprocess.run(
        [str(PROJECT_PYTHON), str(DIGITS / "client" / "model.py"), "build", str(seed)], check=True, timeout=60
    )
    model_id = combiner.put_model(seed.read_bytes())

    combiner.send_task("fedn-client", model_id, fedn_pb2.MODEL_UPDATE)
    try:
        wait_until(lambda: combiner.record.updates, 60, "model update from the FEDn client")
    except AssertionError:
        raise AssertionError(log.read_text()[-3000:]) from None
    update = combiner.record.updates[0]
    meta = json.loads(update.meta)
    assert meta["training_metadata"]["num_examples"] == 359  # client3 of 4: a quarter of 1438
    trained = tmp_path / "trained.npz"
    trained.write_bytes(combiner.record.models[update.model_update_id])
    with np.load(trained, allow_pickle=False) as weights:
        assert weights.files == ["0", "1", "2", "3"]

    combiner.send_task("fedn-client", update.model_update_id, fedn_pb2.MODEL_VALIDATION)
    wait_until(lambda: combiner.record.validations, 60, "validation from the FEDn client")
    metrics = json.loads(combiner.record.validations[0].data)
    assert set(metrics) == {"training_accuracy", "training_loss", "test_accuracy", "test_loss"}
    texts = [status.status for status in combiner.record.statuses]
    assert "Model update completed." in texts
    assert process.poll() is None
