"""The fuzz run's server (one per pytest session) and its closing summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.server import FuzzServer, running_server
from tests.fuzz.tally import EXAMPLES, TALLIES


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    var_dir: Path = tmp_path_factory.mktemp("fuzz")
    with running_server(var_dir) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz")
    for name in sorted({name for name, _ in TALLIES}):
        tallies = {operation: tally for (run, operation), tally in TALLIES.items() if run == name}
        failed = sorted(operation for operation, tally in tallies.items() if tally.failed)
        seconds = sum(tally.seconds for tally in tallies.values())
        write(
            f"{name}: {len(tallies)} operations, {sum(t.examples for t in tallies.values())} examples "
            f"(budget {EXAMPLES} per operation), {len(failed)} failed operations, {seconds:.0f} s"
        )
        for operation in failed:
            write(f"  FAILED {operation}")
