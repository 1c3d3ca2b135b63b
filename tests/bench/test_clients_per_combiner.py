"""bench/clients_per_combiner.py at a tiny size: a real combiner, 20 simulated clients, a few seconds.

What is checked is behaviour: the result lines are well formed and carry values, the round's task
reaches every client, and nothing the script started outlives it. Its timings are not judged here.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "clients_per_combiner.py"
TINY = ["--clients", "20", "--ramp", "1", "--steady", "2", "--round-wait", "30"]
RUN_DEADLINE = 180


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_for_clients", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def started_pids(output: str) -> list[int]:
    """The combiner's and the client processes' pids, as the script logs them."""
    pids = [int(pid) for pid in re.findall(r"combiner pid (\d+)", output)]
    for listed in re.findall(r"client processes ([\d, ]+)", output):
        pids.extend(int(pid) for pid in listed.split(","))
    return pids


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_tiny_run_prints_every_line_with_its_value(runner: ModuleType, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    lines = {line.name: line for line in runner.parse_results("clients per combiner", done.stdout)}
    assert "unreadable result line" not in lines, done.stdout
    judged = [line for line in lines.values() if line.target]
    assert {line.name for line in judged} == {
        "20 clients: combiner peak resident memory",
        "20 clients: heartbeat p99",
        "20 clients: share of clients the round's task reached",
        "20 clients: slowest control call",
    }
    for line in judged:
        assert line.value is not None and line.value >= 0, line
    memory = lines["20 clients: combiner peak resident memory"]
    assert memory.unit == "MB" and memory.baseline is not None and memory.baseline > 0
    assert lines["20 clients: share of clients the round's task reached"].value == 1.0
    assert lines["20 clients: task streams that failed"].value == 0
    assert lines["20 clients: clients the combiner listed online after the steady phase"].value == 20

    pids = started_pids(done.stdout)
    assert len(pids) == 3  # the combiner and two client processes
    assert not [pid for pid in pids if is_running(pid)]
    assert list(tmp_path.iterdir()) == []  # the work folder is removed


def test_sigterm_stops_the_combiner_and_the_clients(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, "--steady", "60", "--dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + RUN_DEADLINE
        while not any("all started" in line for line in output):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(output)
            output.append(line)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
        while (line := lines.get(timeout=10)) is not None:
            output.append(line)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    pids = started_pids("".join(output))
    assert len(pids) == 3
    assert not [pid for pid in pids if is_running(pid)]
