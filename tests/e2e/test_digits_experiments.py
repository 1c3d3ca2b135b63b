"""examples/digits/experiments.py in a tiny configuration, so its commands cannot rot unnoticed:
each experiment starts its federation of real processes, runs its sessions and prints its table
with the columns the example's README shows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCRIPT = ROOT / "examples" / "digits" / "experiments.py"
# Tiny configurations: a slow and a fast client, a round or two, one ε.
STRAGGLERS = [
    "stragglers",
    "--clients=2",
    "--slow=1",
    "--slowdown=3",
    "--epoch-seconds=0.2",
    "--rounds=1",
    "--versions=2",
    "--buffer-size=1",
    "--server-lr=1",
    "--target=0.5",
]
PRIVACY = ["privacy", "--clients=2", "--rounds=1", "--epsilons=8"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[str]]]:
    """Both experiments run side by side (each with its own federation); their tables by name."""
    running = {}
    for args in (STRAGGLERS, PRIVACY):
        workdir = tmp_path_factory.mktemp(args[0])
        running[args[0]] = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args, "--workdir", str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    found = {}
    try:
        for name, process in running.items():
            stdout, stderr = process.communicate(timeout=200)
            assert process.returncode == 0, f"{name}: {stdout}\n{stderr[-4000:]}"
            found[name] = parse(stdout)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return found


def parse(stdout: str) -> list[list[str]]:
    """The Markdown table's header and rows, each as a list of cells."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("| ")
    ]
    assert rows, stdout
    return rows


def test_stragglers_table(tables: dict[str, list[list[str]]]) -> None:
    header, *rows = tables["stragglers"]
    assert header == [
        "session",
        "status",
        "s to 0.5 accuracy",
        "final test accuracy",
        "mean of the last 3 models",
        "s to last model",
        "load average (1/5/15 min)",
    ]
    assert [row[0] for row in rows] == ["sync fedavg, 1 rounds", "async FedBuff K=1 η=1, 2 versions"]
    for row in rows:
        assert row[1] == "Finished", row
        assert 0.0 < float(row[3]) <= 1.0 and 0.0 < float(row[4]) <= 1.0, row
        assert float(row[5]) > 0, row


def test_privacy_table(tables: dict[str, list[list[str]]]) -> None:
    header, *rows = tables["privacy"]
    assert header == [
        "aggregation",
        "target ε",
        "ε spent (δ = 1e-05)",
        "noise multiplier z",
        "last clip norm",
        "rounds",
        "test accuracy",
        "admin page shows them",
        "load average (1/5/15 min)",
    ]
    assert [row[:2] for row in rows] == [["fedavg", "none"], ["DP-FedAvg, adaptive clipping", "8"]]
    plain, private = rows
    assert plain[2] == "-" and float(private[2]) <= 8.0
    assert float(private[3]) > 0 and float(private[4]) > 0
    for row in rows:
        assert row[5] == "1", row
        assert 0.0 < float(row[6]) <= 1.0, row
        # The session page shows the accuracy, and for the DP session its ε.
        assert row[7] == "yes", row
