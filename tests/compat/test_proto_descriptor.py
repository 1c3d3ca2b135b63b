"""protos/fedn.proto must describe FEDn 0.9.5's wire contract field by field.

FEDn's generated fedn_pb2 is imported in its own venv (.fedn095, scripts/fedn_venv.sh); ours in
this one; both are dumped by the same script and compared whole.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FEDN_PYTHON = REPO / ".fedn095" / "bin" / "python"
DUMP = Path(__file__).with_name("dump_descriptor.py")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(
        not FEDN_PYTHON.exists(), reason=f"{FEDN_PYTHON} is missing: run scripts/fedn_venv.sh to create it"
    ),
]


def dump(python: Path | str, module: str) -> dict:
    output = subprocess.run(
        [str(python), str(DUMP), module],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    return json.loads(output)


def test_descriptor_matches_fedn_095() -> None:
    theirs = dump(FEDN_PYTHON, "fedn.network.grpc.fedn_pb2")
    ours = dump(sys.executable, "fedplane.proto.fedn_pb2")
    assert ours["package"] == theirs["package"] == "fedn"
    assert ours["enums"] == theirs["enums"]
    assert sorted(ours["messages"]) == sorted(theirs["messages"])
    for name, fields in theirs["messages"].items():
        assert ours["messages"][name] == fields, f"message {name} differs"
    assert ours["services"] == theirs["services"]


def test_dump_sees_the_whole_contract() -> None:
    # Guards the comparison above against an empty dump passing trivially.
    ours = dump(sys.executable, "fedplane.proto.fedn_pb2")
    assert ours["enums"]["Role"] == {"WORKER": 0, "COMBINER": 1, "REDUCER": 2, "OTHER": 3}
    assert ours["enums"]["Status.LogLevel"]["AUDIT"] == 4
    assert ours["messages"]["ModelUpdate"]["model_update_id"]["number"] == 4
    assert ours["services"]["ModelService"]["Upload"]["client_streaming"] is True
    assert len(ours["messages"]) >= 20
