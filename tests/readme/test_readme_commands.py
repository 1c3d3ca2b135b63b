"""The README's commands, in the order written, on a fresh clone of HEAD, as a newcomer runs them.

Each fenced bash block runs in one `bash -euo pipefail` with the clone as its working directory,
each python block in the clone's `.venv/bin/python` reading it from stdin (as typed into the
interpreter, so the checkout is importable); every one has a deadline, and the first that fails
fails the test with its place in the README, its exit code and the tail of its output. A block is
left out only when the README says so right before it: `<!-- not run by tests/readme: reason -->`.

Commands that serve until Ctrl-C (`make serve ...`, `make demo ARGS=--serve`) run in the
background. A section whose prose says "With `COMMAND` running" gets COMMAND started first. A
served stack counts as up once its output says "Serving" and /health answers; before it is stopped
every session it knows of must have ended Finished (and there must be one); it is stopped with
SIGINT to its process group, as Ctrl-C in its terminal would, and must leave nothing running.

`make test` is not run here: it is the suite this test is part of, and it starts PostgreSQL, Redis
and S3 on fixed ports. In its place runs its part that needs no services, `make deps check` (system
packages, requirements, Django system checks, missing migrations); CI runs the real `make test` on
a fresh clone (.ci/run).

The clone's environment is a newcomer's: no DATABASE_URL, S3_*, CELERY_BROKER_URL or REDIS_URL
(the README's first command is the embedded demo), nothing of this checkout's virtualenv or of an
outer make. pip keeps its usual cache, so the clone's install reuses downloaded wheels.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONTROLLER_URL = "http://127.0.0.1:8092"
# The ports the README's commands use (the controller, the demo's combiner).
README_PORTS = (8092, 12080)

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell"})
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
OPT_OUT = re.compile(r"^<!--\s*not run by tests/readme:\s*(.+?)\s*-->$")
PREREQUISITE = re.compile(r"\bWith `([^`]+)` running\b")
SERVING_LINE = "Serving; press Ctrl-C"
TRACE_PREFIX = "+ README "
# The README command that cannot run inside the suite, and what runs in its place (see above).
STAND_INS = {("make", "test"): "make deps check"}

# Seconds. The first block creates .venv and installs the requirements (about a minute with a
# warm pip cache) before the demo trains; `make demo ARGS=--serve` trains before it serves.
BLOCK_TIMEOUT = 900.0
SERVE_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0
HTTP_TIMEOUT = 5.0
OUTPUT_TAIL_LINES = 60

# Variables of this (test) process a newcomer's shell does not have.
NEWCOMER_DROPS = frozenset(
    {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    | {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
)
NEWCOMER_DROP_PREFIXES = ("S3_", "CELERY_", "DJANGO_", "FEDPLANE_", "FEDN_", "PYTEST_")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    section: str  # the headings above it, outermost first
    requires: str | None  # the command the section says must be running ("With `...` running")
    opt_out: str | None  # the README's reason for not running it

    @property
    def where(self) -> str:
        return f"README.md line {self.line} ({self.section}), {self.language} block"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of the README in document order, with their section and prerequisite."""
    blocks: list[Block] = []
    headings: list[str] = []
    requires: str | None = None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = HEADING.match(line)
        if heading:
            depth = len(heading.group(1))
            headings = [*headings[: depth - 1], heading.group(2)]
            requires = None
        else:
            for prerequisite in PREREQUISITE.finditer(line):
                requires = prerequisite.group(1)
        fence = FENCE.match(line)
        if not fence:
            index += 1
            continue
        opening = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].strip().startswith(fence.group(1)):
            body.append(lines[index])
            index += 1
        index += 1
        previous = next((lines[i].strip() for i in range(opening - 1, -1, -1) if lines[i].strip()), "")
        opt_out = OPT_OUT.match(previous)
        blocks.append(
            Block(
                language=fence.group(2).lower(),
                code="\n".join(body) + "\n",
                line=opening + 1,
                section=" > ".join(headings),
                requires=requires,
                opt_out=opt_out.group(1) if opt_out else None,
            )
        )
    return blocks


def command_words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unfinished quote: a continued line, never a command on its own
        return []


def serves_until_interrupted(words: list[str]) -> bool:
    if words[:2] == ["make", "serve"]:
        return True
    return words[:2] == ["make", "demo"] and any("--serve" in word.split("=", 1)[-1] for word in words)


@dataclass(frozen=True)
class ShellStep:
    """Consecutive lines of a block run by one bash, or (serve=True) one command left serving."""

    script: str
    serve: bool = False


def shell_steps(code: str) -> list[ShellStep]:
    steps: list[ShellStep] = []
    pending: list[str] = []
    continued = False
    for line in code.splitlines():
        words = [] if continued else command_words(line)
        continued = line.rstrip().endswith("\\")
        if serves_until_interrupted(words):
            if pending:
                steps.append(ShellStep("\n".join(pending) + "\n"))
                pending = []
            steps.append(ShellStep(line.strip(), serve=True))
            continue
        stand_in = STAND_INS.get(tuple(words))
        pending.append(f"{stand_in}  # in place of: {line.strip()}" if stand_in else line)
    if pending:
        steps.append(ShellStep("\n".join(pending) + "\n"))
    return steps


def newcomer_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in NEWCOMER_DROPS and not name.startswith(NEWCOMER_DROP_PREFIXES)
    }
    # This checkout's virtualenv must not stand in for the `python3` the Makefile creates .venv with.
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).is_relative_to(ROOT)
    )
    return env


def output_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-OUTPUT_TAIL_LINES:]
    return "\n".join(lines)


def stop_group(process: subprocess.Popen[bytes], first_signal: signal.Signals, grace: float) -> bool:
    """Signal the process group; SIGKILL it after `grace` seconds. True if it ended in time."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first_signal)
    try:
        process.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
        return False


def processes_running_from(folder: Path) -> dict[int, str]:
    """pid -> command line of every process whose command line names the folder (the clone)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if str(folder) in cmdline:
            found[int(entry.name)] = cmdline.strip()
    return found


def port_listened_on(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(HTTP_TIMEOUT)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def get_json(path: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(CONTROLLER_URL + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return json.load(response)


@dataclass
class Served:
    command: str
    section: str
    process: subprocess.Popen[bytes]
    log: Path


class ReadmeRun:
    """Runs the README's blocks in a clone, one after another, keeping a log per step."""

    def __init__(self, clone: Path, logs: Path) -> None:
        self.clone = clone
        self.logs = logs
        self.env = newcomer_env()
        self.served: Served | None = None
        self.steps = 0

    def log_for(self, what: str) -> Path:
        self.steps += 1
        return self.logs / f"{self.steps:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', what)[:40].strip('-')}.log"

    def run_to_end(
        self, block: Block, argv: list[str], log: Path, shown: str, stdin_text: str | None = None
    ) -> None:
        began = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.clone,
                env=self.env,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                process.communicate(
                    None if stdin_text is None else stdin_text.encode(), timeout=BLOCK_TIMEOUT
                )
                outcome = f"exit code {process.returncode}"
            except subprocess.TimeoutExpired:
                # SIGTERM first: the demo stops the processes it started in sessions of their own.
                stop_group(process, signal.SIGTERM, grace=30)
                outcome = f"no end within {BLOCK_TIMEOUT:.0f} s"
        took = time.monotonic() - began
        print(f"  {block.where}: {outcome} after {took:.0f} s")
        if process.returncode != 0 or outcome.startswith("no end"):
            pytest.fail(
                f"{block.where} failed ({outcome} after {took:.0f} s):\n{shown}\n"
                f"--- last lines of its output (all of it: {log}) ---\n{output_tail(log)}",
                pytrace=False,
            )

    def run_shell(self, block: Block, script: str) -> None:
        log = self.log_for(script.splitlines()[0] if script.strip() else "bash")
        # -x prints each command before it runs, with the seconds since the block began, so the
        # output shows which line failed and how long each took (bash reads no PS4 from the
        # environment when run as root, hence set in the script).
        traced = f"PS4='{TRACE_PREFIX}[$SECONDS s] '; set -x\n{script}"
        self.run_to_end(block, ["bash", "-euo", "pipefail", "-c", traced], log, shown=script)
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(TRACE_PREFIX):
                print(f"    {line}")

    def run_python(self, block: Block) -> None:
        python = self.clone / ".venv" / "bin" / "python"
        log = self.log_for("python")
        self.run_to_end(block, [str(python), "-"], log, shown=block.code, stdin_text=block.code)

    def serve(self, command: str, block: Block) -> None:
        """Start a command that serves until Ctrl-C; return once it says it serves and /health answers."""
        self.stop_serving()
        busy = [port for port in README_PORTS if port_listened_on(port)]
        assert not busy, f"another process listens on {busy}, which the README's commands use"
        log = self.log_for(command)
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=self.clone,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.served = Served(command, block.section, process, log)
        began = time.monotonic()
        deadline = began + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"`{command}` ({block.where}) exited with code {process.returncode} instead of "
                    f"serving:\n{output_tail(log)}",
                    pytrace=False,
                )
            if SERVING_LINE in log.read_text(errors="replace") and self.health_answers():
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"`{command}` ({block.where}) was not serving after {SERVE_TIMEOUT:.0f} s:\n"
                    f"{output_tail(log)}",
                    pytrace=False,
                )
            time.sleep(1)
        print(f"  `{command}` serving after {time.monotonic() - began:.0f} s (output: {log})")

    def health_answers(self) -> bool:
        try:
            with urllib.request.urlopen(CONTROLLER_URL + "/health", timeout=HTTP_TIMEOUT) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop_serving(self) -> None:
        served, self.served = self.served, None
        if served is None:
            return
        if served.process.poll() is None:
            sessions = get_json("/api/v1/sessions/", headers={"X-Limit": "1000"})
            assert isinstance(sessions, dict)
            statuses = {item["session_id"]: item["status"] for item in sessions["result"]}
            assert statuses, f"`{served.command}` serves no session: it did not find the data the README made"
            unfinished = {name: status for name, status in statuses.items() if status != "Finished"}
            assert not unfinished, f"sessions that did not finish under `{served.command}`: {unfinished}"
        else:
            pytest.fail(
                f"`{served.command}` stopped serving by itself (exit code {served.process.returncode}):\n"
                f"{output_tail(served.log)}",
                pytrace=False,
            )
        began = time.monotonic()
        stopped = stop_group(served.process, signal.SIGINT, grace=STOP_TIMEOUT)
        assert stopped, f"`{served.command}` did not stop within {STOP_TIMEOUT:.0f} s of Ctrl-C (SIGINT)"
        deadline = time.monotonic() + STOP_TIMEOUT
        while (leftovers := processes_running_from(self.clone)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not leftovers, f"still running after `{served.command}` stopped: {leftovers}"
        print(f"  `{served.command}` stopped {time.monotonic() - began:.0f} s after Ctrl-C")

    def run(self, block: Block) -> None:
        served = self.served
        if served is not None and served.command != block.requires and served.section != block.section:
            self.stop_serving()
        if block.requires and (self.served is None or self.served.command != block.requires):
            self.serve(block.requires, block)
        if block.language == "python":
            self.run_python(block)
            return
        for step in shell_steps(block.code):
            if step.serve:
                self.serve(step.script, block)
            else:
                self.run_shell(block, step.script)


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A fresh clone of this checkout's HEAD: no .venv, var/ or built example, as after `git clone`."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "README.md", "Makefile", "scripts"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    if changed:
        print(f"note: uncommitted changes are not in the clone, which runs HEAD ({head[:10]}):\n{changed}")
    folder = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(folder)], check=True, timeout=120
    )
    # HEAD may be a commit on no branch (CI checks out detached); a fetch of HEAD brings it along.
    subprocess.run(["git", "fetch", "--quiet", "origin", "HEAD"], cwd=folder, check=True, timeout=120)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=folder, check=True, timeout=60)
    try:
        yield folder
    finally:
        # Whatever a failed step left behind runs from the clone; end it before removing it.
        for pid in processes_running_from(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def test_readme_blocks_are_found_with_their_sections() -> None:
    blocks = readme_blocks(README.read_text())
    runnable = [block for block in blocks if block.language in SHELL_LANGUAGES | {"python"}]
    sections = {block.section.split(" > ")[-1] for block in runnable}
    assert {"Two commands", "Scripting a federation"} <= sections, sections
    first = runnable[0]
    assert first.section.endswith("Two commands")
    assert shell_steps(first.code)[0].script.startswith("make demo")
    assert any(block.language == "python" and block.requires for block in runnable)


def test_parsing_follows_headings_opt_outs_and_prerequisites() -> None:
    text = "\n".join(
        [
            "# Tool",
            "## Start",
            "```bash",
            "make demo   # runs",
            "make test",
            "```",
            "## Use it",
            "With `make demo ARGS=--serve` running in one terminal:",
            "<!-- not run by tests/readme: needs a GPU -->",
            "",
            "```bash",
            "train --gpu",
            "```",
            "```python",
            "print('hi')",
            "```",
            "```",
            "a layout, not a command",
            "```",
        ]
    )
    start, gpu, python, layout = readme_blocks(text)
    assert (start.section, start.requires, start.opt_out, start.line) == ("Tool > Start", None, None, 3)
    assert (gpu.section, gpu.requires, gpu.opt_out) == (
        "Tool > Use it",
        "make demo ARGS=--serve",
        "needs a GPU",
    )
    assert (python.language, python.code, python.opt_out) == ("python", "print('hi')\n", None)
    assert layout.language == ""
    assert shell_steps(start.code) == [
        ShellStep("make demo   # runs\nmake deps check  # in place of: make test\n")
    ]
    assert shell_steps("make -C x\nmake serve ARGS='--var-dir var/demo'  # until Ctrl-C\nls\n") == [
        ShellStep("make -C x\n"),
        ShellStep("make serve ARGS='--var-dir var/demo'  # until Ctrl-C", serve=True),
        ShellStep("ls\n"),
    ]
    assert serves_until_interrupted(["make", "demo", "ARGS=--serve"])
    assert not serves_until_interrupted(["make", "demo"])


@pytest.mark.readme
@pytest.mark.timeout(1800)
def test_readme_commands_run_in_order_on_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    blocks = readme_blocks((clone / "README.md").read_text())
    logs = tmp_path / "logs"
    logs.mkdir()
    run = ReadmeRun(clone, logs)
    ran: list[Block] = []
    began = time.monotonic()
    try:
        for block in blocks:
            if block.language not in SHELL_LANGUAGES | {"python"}:
                continue  # an untagged or other block shows text (a layout, a table), not commands
            if block.opt_out:
                print(f"{block.where}: not run, the README says: {block.opt_out}")
                continue
            print(f"{block.where}:\n{block.code.rstrip()}")
            run.run(block)
            ran.append(block)
        run.stop_serving()
    finally:
        if run.served is not None:  # a failure above: stop it without the checks
            stop_group(run.served.process, signal.SIGINT, grace=STOP_TIMEOUT)
    print(f"README: {len(ran)} blocks ran in {time.monotonic() - began:.0f} s")
    # The two commands, the CLI section and the Python section at least.
    assert {block.section.split(" > ")[-1] for block in ran} >= {"Two commands", "Scripting a federation"}
    assert any(block.language == "python" for block in ran), [block.where for block in ran]


def test_a_failing_line_fails_the_run_with_its_place_exit_code_and_output(tmp_path: Path) -> None:
    block = Block("bash", "echo before\nfalse  # fails\necho after\n", 7, "Tool > Start", None, None)
    run = ReadmeRun(tmp_path, tmp_path)
    with pytest.raises(pytest.fail.Exception) as failure:
        run.run(block)
    message = str(failure.value)
    assert "README.md line 7 (Tool > Start), bash block failed (exit code 1 after" in message
    output = message.split("--- last lines of its output")[1]
    assert "before" in output and f"{TRACE_PREFIX}[0 s] false" in output
    assert "echo after" not in output  # -e: the block stops at its first failing line


def test_a_failing_python_block_fails_the_run(tmp_path: Path) -> None:
    # The clone's interpreter; this one stands in for it.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    block = Block("python", "print('started')\nraise SystemExit(3)\n", 9, "Tool > Use it", None, None)
    with pytest.raises(pytest.fail.Exception) as failure:
        ReadmeRun(tmp_path, tmp_path).run(block)
    assert "python block failed (exit code 3 after" in str(failure.value)
    assert "started" in str(failure.value).split("--- last lines of its output")[1]


def test_a_serving_command_that_exits_fails_the_run(tmp_path: Path) -> None:
    block = Block("bash", "make serve\n", 3, "Tool > Serve", None, None)
    (tmp_path / "Makefile").write_text("serve:\n\t@echo no database here; exit 2\n")
    run = ReadmeRun(tmp_path, tmp_path)
    with pytest.raises(pytest.fail.Exception) as failure:
        run.run(block)
    assert "`make serve` (README.md line 3 (Tool > Serve), bash block) exited with code 2" in str(
        failure.value
    )
    assert "no database here" in str(failure.value)
